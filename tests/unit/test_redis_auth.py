"""ElastiCache's AUTH token reaches the Redis client from Secrets Manager (REDIS_AUTH_SECRET_ARN),
never from REDIS_URL or the environment."""

from __future__ import annotations

from typing import Any

from giftmarket.adapters.cache import build_redis
from giftmarket.settings import Settings


def test_the_auth_token_comes_from_the_secret(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="redis-auth", SecretString="t0ken" * 8)["ARN"]
    settings = Settings(
        redis_url="rediss://master.giftmarket.cache.amazonaws.com:6379/0",
        redis_auth_secret_arn=arn,
    )
    client = build_redis(settings)
    kwargs = client.connection_pool.connection_kwargs
    # Each new connection asks the provider, which reads the secret again after a rotation.
    assert kwargs["credential_provider"].get_credentials() == ("t0ken" * 8,)
    assert kwargs.get("password") is None
    assert kwargs["host"] == "master.giftmarket.cache.amazonaws.com"
    # rediss:// is TLS: ElastiCache refuses AUTH over plain text when in-transit encryption is on.
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"


def test_without_a_secret_the_url_alone_configures_the_client() -> None:
    client = build_redis(Settings(redis_url="redis://:from-url@127.0.0.1:16379/0"))
    assert client.connection_pool.connection_kwargs["password"] == "from-url"
