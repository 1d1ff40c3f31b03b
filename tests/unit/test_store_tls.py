"""The clients' TLS options: certificate and host name always verified (the integration tests
in tests/integration/test_tls.py prove it against real servers)."""

from __future__ import annotations

import ssl
from pathlib import Path

from giftmarket.adapters.cache import build_redis
from giftmarket.adapters.db import mysql_tls_context
from giftmarket.settings import Settings
from giftmarket_local.tls import TlsFiles, make_ca


def test_mysql_tls_verifies_the_certificate_and_the_host_name(tmp_path: Path) -> None:
    ca = TlsFiles(tmp_path)
    make_ca(ca, "unit test CA")
    context = mysql_tls_context(Settings(db_ssl_ca=str(ca.ca_cert)))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert "unit test CA" in str(context.get_ca_certs())


def test_without_a_ca_mysql_gets_no_tls_context_locally() -> None:
    assert mysql_tls_context(Settings(db_ssl_ca=None)) is None


def test_rediss_verifies_the_certificate_and_the_host_name() -> None:
    client = build_redis(
        Settings(redis_url="rediss://127.0.0.1:16379/0", redis_ssl_ca="/stack/tls/ca.pem")
    )
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True
    assert kwargs["ssl_ca_certs"] == "/stack/tls/ca.pem"
