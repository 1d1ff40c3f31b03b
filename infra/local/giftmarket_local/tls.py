"""The local stack's certificates: one private CA per stack folder, and one server certificate
it signs for 127.0.0.1 and localhost, shared by both MariaDB servers and Redis.

Made at the first `up` of a stack folder (or by `make setup`, through `up`) and kept: the CA
is what a developer's `mariadb --ssl-ca=...` and the application (DB_SSL_CA, REDIS_SSL_CA)
trust. Nothing here is a secret worth more than the loopback servers it protects.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The names a client may use to reach the local servers; anything else fails host-name checks.
SERVER_IP_NAMES = ("127.0.0.1",)
SERVER_DNS_NAMES = ("localhost",)
CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def make_ca(files: TlsFiles, common_name: str) -> None:
    """A new self-signed CA (key and certificate) in `files`."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    files.folder.mkdir(parents=True, exist_ok=True)
    _write_key(files.ca_key, key)
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_server_cert(
    files: TlsFiles,
    *,
    ip_names: tuple[str, ...] = SERVER_IP_NAMES,
    dns_names: tuple[str, ...] = SERVER_DNS_NAMES,
) -> None:
    """A server certificate for `ip_names`/`dns_names`, signed by the CA in `files`."""
    ca_cert = _load_cert(files.ca_cert)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise TypeError(f"{files.ca_key} is not an RSA key")
    key = _new_key()
    now = _now()
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_names]
    names += [x509.DNSName(dns) for dns in dns_names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "giftmarket local server")])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(
            min(now + datetime.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.server_key, key)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _needs_new_server_cert(files: TlsFiles) -> bool:
    if not (files.server_cert.exists() and files.server_key.exists()):
        return True
    cert = _load_cert(files.server_cert)
    ca = _load_cert(files.ca_cert)
    return cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE


def ensure_local_tls(folder: Path) -> TlsFiles:
    """The stack folder's CA and server certificate, made if missing (or the server
    certificate renewed when it is about to expire). Idempotent."""
    files = TlsFiles(folder)
    if not (files.ca_cert.exists() and files.ca_key.exists()):
        make_ca(files, f"giftmarket local CA ({folder.parent.name} stack)")
        files.server_cert.unlink(missing_ok=True)
    if _needs_new_server_cert(files):
        make_server_cert(files)
    return files
