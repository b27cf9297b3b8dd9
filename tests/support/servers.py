"""Real protocol servers on loopback for tests: a small asyncua server and a pymodbus server.

These stand in for plant devices with exactly the behaviour a test needs (status codes,
timestamps, restarts); whole-plant tests use the simulators package instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import ModbusTcpServer

from simulators.opcua_server import stop_server

NS_URI = "urn:hazardwatch:test:dcs"
SERVER_URI = "urn:hazardwatch:test:server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def server_certificate(pki: Path, name: str) -> tuple[Path, Path]:
    """A self-signed server certificate (DER) and its key (PEM) for UaPlant, made in ``pki``."""
    cert, key = pki / f"{name}-cert.der", pki / f"{name}-key.pem"
    pki.mkdir(parents=True, exist_ok=True)
    await setup_self_signed_certificate(
        key, cert, SERVER_URI, socket.gethostname(), [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": name}
    )
    return cert, key


class _Users:
    """asyncua user manager: a username/password table; anything else is refused."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


def _timestamps_as_asked(
    read: Callable[[ua.ReadParameters], list[ua.DataValue]],
) -> Callable[[ua.ReadParameters], list[ua.DataValue]]:
    # OPC 10000-4 §5.10.2: a Read returns only the timestamps TimestampsToReturn asks for.
    # asyncua's server returns whatever it stored; many plant servers do as the spec says.
    def strict(params: ua.ReadParameters) -> list[ua.DataValue]:
        want = params.TimestampsToReturn
        source = want in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Both)
        server = want in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both)
        return [
            dataclasses.replace(
                dv,
                SourceTimestamp=dv.SourceTimestamp if source else None,
                SourcePicoseconds=dv.SourcePicoseconds if source else None,
                ServerTimestamp=dv.ServerTimestamp if server else None,
                ServerPicoseconds=dv.ServerPicoseconds if server else None,
            )
            for dv in read(params)
        ]

    return strict


@dataclass
class UaPlant:
    """An asyncua server with ``count`` Double variables T<i>.PV under Plant in NS_URI.

    By default open (SecurityPolicy None) and anonymous. Options make it a secured plant
    server: its own ``certificate``/``private_key`` (Basic256Sha256 Sign and SignAndEncrypt
    endpoints only, unless ``open_too``); ``trusted_clients``, a folder of DER certificates,
    the only clients allowed a session (re-read at every session, as an operator drops
    certificates in); ``users`` (username -> password; anonymous refused).
    ``server_timestamps=False`` keeps the ServerTimestamp a test writes (asyncua stamps every
    write by default); ``timestamps_as_asked`` answers reads with only the timestamps the
    client asked for.
    """

    port: int
    count: int
    server: Server | None = None
    nodes: list[Node] = field(default_factory=list)
    certificate: Path | None = None
    private_key: Path | None = None
    trusted_clients: Path | None = None
    users: dict[str, str] | None = None
    open_too: bool = False  # with a certificate, also offer the SecurityPolicy None endpoint
    server_timestamps: bool = True
    timestamps_as_asked: bool = False

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/hw"

    async def start(self, extra_namespaces: int = 0) -> None:
        """Start (or restart) the server; extra namespaces first renumber ours."""
        server = Server(user_manager=_Users(self.users) if self.users is not None else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        await self._secure(server)
        server.set_force_server_timestamp(self.server_timestamps)
        if self.timestamps_as_asked:
            service = server.iserver.attribute_service
            service.read = _timestamps_as_asked(service.read)
        for k in range(extra_namespaces):
            await server.register_namespace(f"urn:dummy:{k}")
        ns = await server.register_namespace(NS_URI)
        folder = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), "Plant")
        self.nodes = [
            await folder.add_variable(ua.NodeId(f"T{i}.PV", ns), f"T{i}", float(i)) for i in range(self.count)
        ]
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await stop_server(self.server)
            self.server = None

    async def _secure(self, server: Server) -> None:
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if self.certificate is None or self.private_key is None:
            return
        await server.set_application_uri(SERVER_URI)
        await server.load_certificate(str(self.certificate))
        await server.load_private_key(str(self.private_key))
        server.set_security_policy(
            [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, ua.SecurityPolicyType.Basic256Sha256_Sign]
            + ([ua.SecurityPolicyType.NoSecurity] if self.open_too else [])
        )
        if self.trusted_clients is not None:
            folder = self.trusted_clients
            # asyncua's checks of validity, application URI and key usage; the trust list is
            # ours because asyncua's TrustStore calls deprecated pyOpenSSL APIs.
            checks = CertificateValidator(
                CertificateValidatorOptions.EXT_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
            )

            async def validate(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
                await checks.validate(cert, app)
                trusted = {f.read_bytes() for f in folder.glob("*.der")}
                if cert.public_bytes(serialization.Encoding.DER) not in trusted:
                    raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

            server.set_certificate_validator(validate)


@dataclass
class ModbusPlant:
    port: int
    context: ModbusServerContext
    server: ModbusTcpServer | None = None
    task: asyncio.Task[None] | None = None

    def set(self, unit: int, fc: int, address: int, values: list[int]) -> None:
        self.context[unit].setValues(fc, address, values)

    async def start(self) -> None:
        self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
        self.task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


def modbus_unit() -> ModbusSlaveContext:
    # pymodbus 3.9 maps request address a to block address a+1, and needs all four blocks
    # given explicitly (otherwise it silently uses empty defaults).
    return ModbusSlaveContext(
        di=ModbusSequentialDataBlock(1, [0] * 200),
        co=ModbusSequentialDataBlock(1, [0] * 200),
        hr=ModbusSequentialDataBlock(1, [0] * 300),
        ir=ModbusSequentialDataBlock(1, [0] * 300),
    )
