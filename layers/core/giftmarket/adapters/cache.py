"""The Redis client behind the read models (ElastiCache in AWS)."""

from __future__ import annotations

from typing import Any

import redis

from giftmarket.settings import Settings

# A rebuild's pipelines of bulk writes take Redis far longer than one query's read.
BULK_TIMEOUT_SECONDS = 30.0


def build_redis(settings: Settings, *, timeout: float | None = None) -> redis.Redis:
    # Short timeouts by default: when Redis is down, a query should fall back to SQL within
    # milliseconds rather than wait for the Lambda timeout.
    options: dict[str, Any] = {}
    token = auth_token(settings)
    if token is not None:
        options["password"] = token
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout or settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
        decode_responses=False,
        **options,
    )


def auth_token(settings: Settings) -> str | None:
    """The ElastiCache AUTH token from Secrets Manager (cached by Powertools), if configured."""
    if not settings.redis_auth_secret_arn:
        return None
    from aws_lambda_powertools.utilities import parameters

    return str(parameters.get_secret(settings.redis_auth_secret_arn, max_age=300))


def ping(client: redis.Redis) -> str:
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"unavailable ({type(exc).__name__}: {str(exc)[:120]})"
    return "ok"
