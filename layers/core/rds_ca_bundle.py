"""Put the Amazon RDS CA bundle into the core layer at build time (layers/core/Makefile).

RDS signs its servers' certificates with its own CAs, which no system trust store holds; AWS
publishes them as one PEM bundle, over HTTPS only, and recommends clients verify against it.
`sam build` runs this with the layer's build: it downloads the bundle (the download's own
TLS verified against the system's trust store), checks that it is nothing but certificates,
and, when RDS_CA_BUNDLE_SHA256 is set, that it is exactly the bundle pinned there. The digest
is printed at every build so it can be pinned. RDS_CA_BUNDLE_FILE builds from a bundle already
downloaded (a build machine without internet), with the same checks.

Standard library only: it runs under the build's python3.12, before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import sys
import urllib.request
from pathlib import Path

GLOBAL_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)


class BundleError(ValueError):
    """The downloaded bundle is not what the layer may ship."""


def check_bundle(data: bytes, expected_sha256: str | None = None) -> tuple[int, str]:
    """(number of certificates, sha256) of a PEM bundle, or BundleError if it holds anything
    but certificates, none at all, one that does not parse, or not the pinned digest."""
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 and digest != expected_sha256.strip().lower():
        raise BundleError(f"bundle sha256 {digest}, pinned {expected_sha256}")
    blocks = PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise BundleError("no certificate in the bundle")
    if PEM_CERTIFICATE.sub(b"", data).strip():
        raise BundleError("the bundle holds something other than certificates")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise BundleError(f"a certificate of the bundle does not parse: {exc}") from exc
    if len(context.get_ca_certs()) != len(blocks):
        raise BundleError("the bundle holds certificates that are not CAs")
    return len(blocks), digest


def fetch(url: str = GLOBAL_BUNDLE_URL) -> bytes:
    if not url.startswith("https://"):
        raise BundleError("the bundle is only fetched over HTTPS")
    with urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=60) as resp:  # noqa: S310
        return bytes(resp.read())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DESTINATION.pem", file=sys.stderr)
        return 2
    destination = Path(argv[1])
    local = os.environ.get("RDS_CA_BUNDLE_FILE")
    data = Path(local).read_bytes() if local else fetch()
    count, digest = check_bundle(data, os.environ.get("RDS_CA_BUNDLE_SHA256") or None)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)
    pinned = "pinned" if os.environ.get("RDS_CA_BUNDLE_SHA256") else "not pinned"
    print(f"RDS CA bundle: {count} certificates, sha256 {digest} ({pinned}) -> {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
