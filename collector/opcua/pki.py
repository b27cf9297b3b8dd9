"""Certificates for secured OPC UA endpoints: our client identity and the pinned server certificate.

The client key and certificate are created once per collector under ``pki_dir`` and then
reused as they are (servers trust one exact certificate, so a new one means trusting it
again on every server); only a missing or an expired self-signed certificate is replaced,
never one an operator put there. The key file is readable by its owner only. Certificates
are read as PEM or DER whatever the file is called.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.errors import SourceConfigError

__all__ = ["ClientIdentity", "client_identity", "first_certificate", "read_certificate", "thumbprint"]

log = logging.getLogger(__name__)

# Long enough that commissioning is not undone by a silent yearly re-key (asyncua's default
# is 365 days); an expired certificate is still replaced, and that is logged.
VALID_DAYS = 10 * 365


@dataclass(frozen=True)
class ClientIdentity:
    certificate: Path  # DER
    private_key: Path  # PEM, mode 0600
    thumbprint: str
    created: bool  # True when this call wrote a new certificate (the servers must trust it)


def thumbprint(cert: x509.Certificate | bytes) -> str:
    """SHA-1 thumbprint in hex, as OPC UA tools (UaExpert, server trust lists) show it."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA1())
    digest.update(der)
    return digest.finalize().hex().upper()


def first_certificate(der: bytes) -> bytes:
    """The leaf of a DER certificate chain (servers may send their CA certificates after it)."""
    if len(der) < 4 or der[0] != 0x30 or der[1] != 0x82:
        return der
    return der[: int.from_bytes(der[2:4], "big") + 4]


def read_certificate(path: str | Path, who: str, what: str) -> x509.Certificate:
    try:
        data = Path(path).read_bytes()
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(first_certificate(data))
    except OSError as exc:
        raise SourceConfigError(f"{who}: cannot read {what} {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SourceConfigError(f"{who}: {what} {path} is not a PEM or DER certificate ({exc})") from exc


def client_identity(pki_dir: Path, name: str, app_uri: str) -> ClientIdentity:
    """Our certificate for ``name``: reused when present and valid, otherwise created."""
    key_file, cert_file = pki_dir / f"{name}-key.pem", pki_dir / f"{name}-cert.der"
    try:
        pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = _key(key_file)
        cert = _reusable(cert_file, key, app_uri)
        created = cert is None
        if cert is None:
            cert = generate_self_signed_app_certificate(
                key,
                f"HazardWatch collector {name}",
                {"organizationName": "HazardWatch"},
                [x509.UniformResourceIdentifier(app_uri), x509.DNSName(socket.gethostname())],
                extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
                days=VALID_DAYS,
            )
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    except (OSError, ValueError) as exc:  # ValueError: an unusable key or certificate file
        raise SourceConfigError(f"{name}: cannot keep the client certificate in {pki_dir}: {exc}") from exc
    ident = ClientIdentity(cert_file, key_file, thumbprint(cert), created)
    if created:
        log.warning(
            "%s: created client certificate %s (thumbprint %s); the server must trust it "
            "before a secured session opens",
            name,
            cert_file,
            ident.thumbprint,
        )
    return ident


def _key(key_file: Path) -> RSAPrivateKey:
    if key_file.is_file():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError(f"{key_file} is not an RSA private key (Basic256Sha256 needs RSA)")
        return key
    key = generate_private_key()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(dump_private_key_as_pem(key))
    return key


def _reusable(cert_file: Path, key: RSAPrivateKey, app_uri: str) -> x509.Certificate | None:
    """The certificate on disk, or None to make one; an operator-supplied one is never replaced."""
    if not cert_file.is_file():
        return None
    try:
        cert = x509.load_der_x509_certificate(cert_file.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{cert_file} is not a DER certificate") from exc
    if cert.public_key() != key.public_key():
        raise ValueError(f"{cert_file} does not belong to the private key beside it")
    if cert.not_valid_after_utc <= datetime.now(UTC):
        if cert.issuer != cert.subject:
            raise ValueError(f"{cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d}: renew it")
        log.error(
            "client certificate %s expired on %s; creating a new one", cert_file, cert.not_valid_after_utc
        )
        return None
    # The host name is deliberately not checked: a renamed host or a recreated container must
    # not silently re-key the collector (asyncua then only warns that the name is missing).
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ours = app_uri in uris.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        ours = False
    if not ours:
        log.warning("client certificate %s does not name %s; servers may refuse it", cert_file, app_uri)
    return cert
