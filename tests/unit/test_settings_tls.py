"""In AWS every store is reached over TLS, verified: Settings refuses a configuration that
would talk to MySQL without a CA to check it against, or to Redis in clear."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from giftmarket.settings import Settings

AWS: dict[str, Any] = {
    "environment": "aws",
    "jwt_secret_arn": "arn:jwt",
    "fingerprint_key_secret_arn": "arn:fingerprint",
    "barcode_keys_secret_arn": "arn:barcodes",
    "db_secret_arn": "arn:db",
    "db_ssl_ca": "/opt/python/giftmarket/certs/rds-global-bundle.pem",
    "redis_url": "rediss://master.giftmarket.cache.amazonaws.com:6379/0",
}


def test_aws_mode_accepts_tls_to_both_stores() -> None:
    settings = Settings.model_validate(AWS)
    assert settings.db_ssl_ca == AWS["db_ssl_ca"]
    assert settings.redis_ssl_ca is None  # the system trust store holds ElastiCache's CAs


@pytest.mark.parametrize("ca", [None, ""])
def test_aws_mode_refuses_mysql_without_a_ca(ca: str | None) -> None:
    with pytest.raises(ValidationError, match="DB_SSL_CA"):
        Settings.model_validate({**AWS, "db_ssl_ca": ca})


@pytest.mark.parametrize(
    "url", ["redis://master.giftmarket.cache.amazonaws.com:6379/0", "unix:///tmp/redis.sock"]
)
def test_aws_mode_refuses_redis_in_clear(url: str) -> None:
    with pytest.raises(ValidationError, match="rediss://"):
        Settings.model_validate({**AWS, "redis_url": url})


def test_local_mode_may_run_without_tls() -> None:
    settings = Settings.model_validate(
        {"environment": "local", "redis_url": "redis://127.0.0.1:16379/0"}
    )
    assert settings.db_ssl_ca is None
