"""OpcUaSource against secured asyncua servers: client certificate and trust, pinning, users, timestamps.

Every certificate is made in tmp_path; the servers are real asyncua servers on loopback
(tests/support/servers.py) with their own certificate, trust list and user table.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.crypto.cert_gen import generate_self_signed_app_certificate
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from collector.opcua.pki import client_identity, thumbprint
from collector.opcua.source import OpcUaSource
from core.clock import FakeClock, from_datetime
from core.errors import SourceConfigError, SourceError
from core.plant import OpcUaDevice
from core.quality import Quality
from tests.collector.test_opcua_source import Collected, device, points, run, stop
from tests.support.servers import UaPlant, free_port, server_certificate
from tests.support.waiting import eventually

USER, PASSWORD = "operator", "Tr0ub4dor-&3"


def secured(plant: UaPlant, mode: str, pinned: Path, **kw: object) -> OpcUaDevice:
    return device(
        plant, security_policy="BASIC256SHA256", security_mode=mode, server_certificate=str(pinned), **kw
    )


@pytest.mark.parametrize("mode", ["SIGN_AND_ENCRYPT", "SIGN"])
async def test_client_certificate_is_made_once_and_must_be_trusted_by_the_server(
    tmp_path: Path, mode: str
) -> None:
    cert, key = await server_certificate(tmp_path / "server", "plant")
    trusted = tmp_path / "server" / "trusted"
    trusted.mkdir()
    plant = UaPlant(free_port(), 3, certificate=cert, private_key=key, trusted_clients=trusted)
    await plant.start()
    pki = tmp_path / "pki"
    ours = pki / "dcs-cert.der"
    try:
        out = Collected()
        source = OpcUaSource(secured(plant, mode, cert), points(3), pki_dir=str(pki))
        runner, task = await run(source, out)
        try:
            # First run: the certificate is created, and the server does not know it yet.
            await eventually(lambda: runner.stats.state == "failed")
            assert out.batches[0].quality.tolist() == [Quality.BAD_COMM_FAILURE] * 3
            assert runner.stats.last_error.startswith("SourceError: dcs: ")
            assert f"does not accept our client certificate {ours}" in runner.stats.last_error
            assert "BadCertificateUntrusted" in runner.stats.last_error
            made, key_made = ours.read_bytes(), (pki / "dcs-key.pem").read_bytes()
            assert thumbprint(made) in runner.stats.last_error
            assert (pki / "dcs-key.pem").stat().st_mode & 0o077 == 0

            shutil.copy(ours, trusted)  # what the operator does on the server
            await eventually(lambda: runner.stats.state == "ok")
            await plant.nodes[2].write_value(12.5)
            await eventually(lambda: (out.latest(2) or (0, 0, 0.0, 0))[2] == 12.5)
            assert out.latest(2)[3] == Quality.GOOD  # type: ignore[index]
            assert source._client is not None
            policy = source._client.security_policy
            assert (policy.URI, policy.Mode) == (
                "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256",
                ua.MessageSecurityMode[mode.title().replace("_", "")],
            )
        finally:
            await stop(task)

        # Second run (a new process): the same certificate and key, so the server still trusts us.
        again = OpcUaSource(secured(plant, mode, cert), points(3), pki_dir=str(pki))
        try:
            await again.open()
            batch = await again.read()
            assert len(batch) > 0 and set(batch.tag.tolist()) <= {0, 1, 2}
        finally:
            await again.close()
        assert ours.read_bytes() == made and (pki / "dcs-key.pem").read_bytes() == key_made
    finally:
        await plant.stop()


def test_client_certificate_on_disk_is_reused_and_never_clobbered(tmp_path: Path) -> None:
    uri = "urn:hazardwatch:collector:dcs"
    first = client_identity(tmp_path, "dcs", uri)
    made = first.certificate.read_bytes()
    assert first.created and first.thumbprint == thumbprint(made)
    again = client_identity(tmp_path, "dcs", uri)
    assert not again.created and again.certificate.read_bytes() == made

    # An expired self-signed certificate is replaced (same key, so only the certificate changes).
    key = serialization.load_pem_private_key(first.private_key.read_bytes(), password=None)
    assert isinstance(key, RSAPrivateKey)
    expired = generate_self_signed_app_certificate(
        key, "old", {}, [x509.UniformResourceIdentifier(uri)], [ExtendedKeyUsageOID.CLIENT_AUTH], days=0
    )
    first.certificate.write_bytes(expired.public_bytes(serialization.Encoding.DER))
    renewed = client_identity(tmp_path, "dcs", uri)
    assert renewed.created and renewed.certificate.read_bytes() not in (made, b"")

    # Anything else unusable is the operator's to fix: an error naming the device, file untouched.
    first.certificate.write_bytes(b"operator's file")
    with pytest.raises(SourceConfigError, match=r"^dcs: .*dcs-cert.der is not a DER certificate"):
        client_identity(tmp_path, "dcs", uri)
    assert first.certificate.read_bytes() == b"operator's file"


async def test_a_server_presenting_another_certificate_is_refused_by_name(tmp_path: Path) -> None:
    pinned, _ = await server_certificate(tmp_path / "server", "plant")
    other, other_key = await server_certificate(tmp_path / "server", "impostor")
    plant = UaPlant(free_port(), 3, certificate=other, private_key=other_key)
    await plant.start()
    out = Collected()
    source = OpcUaSource(secured(plant, "SIGN_AND_ENCRYPT", pinned), points(3), pki_dir=str(tmp_path / "pki"))
    try:
        with pytest.raises(SourceError) as refused:
            await source.open()
        assert str(refused.value) == (
            f"dcs: {plant.endpoint} presents certificate {thumbprint(other.read_bytes())}, not the "
            f"configured server_certificate {pinned} ({thumbprint(pinned.read_bytes())}); refusing to connect"
        )
        await source.close()

        runner, task = await run(source, out)
        try:
            await eventually(lambda: runner.stats.reconnects >= 3)
            assert not task.done() and runner.stats.state == "failed"
            assert len(out.batches) == 1  # BAD|COMM_FAILURE once, on the transition
            assert out.batches[0].quality.tolist() == [Quality.BAD_COMM_FAILURE] * 3
            assert "refusing to connect" in runner.stats.last_error
        finally:
            await stop(task)
    finally:
        await plant.stop()


async def test_pinning_is_cryptographic_not_only_a_comparison(tmp_path: Path) -> None:
    # The server advertises the pinned certificate but holds another key: it cannot read our
    # OpenSecureChannel (encrypted to the pinned key), so no session opens.
    pinned, _ = await server_certificate(tmp_path / "server", "plant")
    _, other_key = await server_certificate(tmp_path / "server", "impostor")
    plant = UaPlant(free_port(), 1, certificate=pinned, private_key=other_key)
    await plant.start()
    dev = secured(plant, "SIGN_AND_ENCRYPT", pinned, timeout_s=0.5)
    source = OpcUaSource(dev, points(1), pki_dir=str(tmp_path / "pki"))
    try:
        with pytest.raises(SourceError, match=rf"^dcs: cannot connect to {plant.endpoint}: \w+"):
            await source.open()
    finally:
        await source.close()
        await plant.stop()


async def test_secured_endpoint_misconfiguration_names_the_device(tmp_path: Path, ua_plant: UaPlant) -> None:
    pinned, _ = await server_certificate(tmp_path / "server", "plant")
    garbage = tmp_path / "server.der"
    garbage.write_bytes(b"not a certificate")
    cases = [
        (tmp_path / "missing.der", "cannot read server_certificate"),
        (garbage, "is not a PEM or DER certificate"),
        # ua_plant is an open server: nothing to sign or encrypt with.
        (pinned, "offers no Basic256Sha256/SignAndEncrypt endpoint (it offers None/None_)"),
    ]
    for path, message in cases:
        source = OpcUaSource(
            secured(ua_plant, "SIGN_AND_ENCRYPT", path), points(1), pki_dir=str(tmp_path / "pki")
        )
        with pytest.raises(SourceError, match=r"^dcs: ") as refused:
            await source.open()
        assert message in str(refused.value)
        await source.close()

    # PEM is read as PEM whatever the file is called (asyncua goes by the extension).
    pem = tmp_path / "server.crt"
    pem.write_bytes(b"\n" + ssl.DER_cert_to_PEM_cert(pinned.read_bytes()).encode())
    source = OpcUaSource(secured(ua_plant, "SIGN_AND_ENCRYPT", pem), points(1), pki_dir=str(tmp_path / "pki"))
    with pytest.raises(SourceError, match="offers no Basic256Sha256"):  # got past reading the PEM
        await source.open()
    await source.close()


async def test_username_and_password_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="asyncua")  # the simulators quieten it to ERROR on import
    cert, key = await server_certificate(tmp_path / "server", "plant")
    plant = UaPlant(free_port(), 2, certificate=cert, private_key=key, open_too=True, users={USER: PASSWORD})
    await plant.start()
    try:

        def source(mode: str, **auth: object) -> OpcUaSource:
            security = {"security_policy": "BASIC256SHA256", "security_mode": mode} if mode != "NONE" else {}
            dev = device(plant, server_certificate=str(cert), **security, **auth)
            return OpcUaSource(dev, points(2), pki_dir=str(tmp_path / "pki"))

        # The password goes in clear (NONE), encrypted to the server's key (SIGN), or in clear
        # inside an encrypted channel (SIGN_AND_ENCRYPT); asyncua logs the request every time.
        for mode in ["NONE", "SIGN", "SIGN_AND_ENCRYPT"]:
            good = source(mode, username=USER, password=PASSWORD)
            await good.open()
            try:
                assert len(await good.read()) > 0
            finally:
                await good.close()

            wrong = source(mode, username=USER, password="wrong-" + PASSWORD)
            with pytest.raises(
                SourceError, match=rf"^dcs: {plant.endpoint} refused user {USER!r}: "
            ) as refused:
                await wrong.open()
            assert "BadUserAccessDenied" in str(refused.value) and PASSWORD not in str(refused.value)

            anonymous = source(mode)  # this server only takes users
            with pytest.raises(SourceError, match=rf"^dcs: cannot connect to {plant.endpoint}: .*Rejected"):
                await anonymous.open()

        dev = device(plant, username=USER, password=PASSWORD)
        assert PASSWORD not in repr(dev) and PASSWORD not in str(dev)
        assert "asyncua.client" in caplog.text  # asyncua did log at DEBUG, requests included
        assert PASSWORD not in caplog.text
        assert caplog.text.count("ActivateSessionRequest(<credentials redacted>)") >= 9
    finally:
        await plant.stop()


T0 = datetime(2026, 3, 1, 8, 0, 0, 125000, tzinfo=UTC)  # source timestamps
T1 = datetime(2026, 3, 1, 8, 0, 2, 500000, tzinfo=UTC)  # server timestamps
GATHER = FakeClock().now_us()

# tag: (SourceTimestamp, ServerTimestamp) as the server holds them
STAMPS = {0: (T0, T1), 1: (None, T1), 2: (T0, None), 3: (None, None)}
# timestamp_source -> expected batch ts per tag
EXPECTED = {
    "SOURCE": [from_datetime(T0), from_datetime(T1), from_datetime(T0), GATHER],
    "SERVER": [from_datetime(T1), from_datetime(T1), from_datetime(T0), GATHER],
    "GATHER": [GATHER] * 4,
}


async def collect(source: OpcUaSource, tags: int) -> dict[int, int]:
    seen: dict[int, int] = {}
    async with asyncio.timeout(10):
        while len(seen) < tags:
            batch = await source.read()
            seen.update(zip(batch.tag.tolist(), batch.ts.tolist(), strict=True))
    return seen


async def test_timestamp_source_with_fallbacks_when_the_server_omits_one() -> None:
    # The server keeps the timestamps written (asyncua stamps writes itself by default) and
    # answers reads with only the timestamps asked for, as the OPC UA spec says.
    plant = UaPlant(free_port(), 4, server_timestamps=False, timestamps_as_asked=True)
    await plant.start()
    try:
        for tag, (src, srv) in STAMPS.items():
            value = ua.Variant(float(tag) + 0.5, ua.VariantType.Double)
            await plant.nodes[tag].write_value(ua.DataValue(value, SourceTimestamp=src, ServerTimestamp=srv))
        opened = []
        try:
            for mode in ["SUBSCRIPTION", "POLLING"]:
                for stamp, expected in EXPECTED.items():
                    dev = device(plant, id=f"dcs-{stamp.lower()}", mode=mode, timestamp_source=stamp)
                    source = OpcUaSource(dev, points(4), FakeClock())
                    opened.append(source)
                    await source.open()
                    seen = await collect(source, 4)
                    assert [seen[t] for t in range(4)] == expected, (mode, stamp)

            # asyncua's default: the server stamps every write with its own clock.
            plant.server.set_force_server_timestamp(True)  # type: ignore[union-attr]
            before = datetime.now(UTC)
            await plant.nodes[0].write_value(ua.DataValue(ua.Variant(9.5, ua.VariantType.Double)))
            after = datetime.now(UTC)
            by_server = next(s for s in opened if s.name == "dcs-server" and not s.streaming)
            ts = (await collect(by_server, 4))[0]
            assert from_datetime(before) <= ts <= from_datetime(after)
        finally:
            for source in opened:
                await source.close()
    finally:
        await plant.stop()
