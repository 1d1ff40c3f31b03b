"""The Redis client behind the read models (ElastiCache in AWS)."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.credentials import CredentialProvider

from giftmarket.adapters.secrets import SecretValue
from giftmarket.lazy import lazy
from giftmarket.settings import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities import parameters
else:
    parameters = lazy("aws_lambda_powertools.utilities.parameters")

log = logging.getLogger(__name__)

# What says Redis could not be reached or did not answer in time, as against an error in
# what it was asked (a script's, a key's type), which says nothing of the next call.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class RedisBreaker:
    """Whether the container tries Redis. Once a call found it unreachable or too slow,
    the calls of the next `pause_seconds` go straight to their fallback (SQL); then one
    tries Redis again. Redis lost as a black hole (a cache node being replaced, a
    failover's old address) would otherwise cost every query and every sign-in the socket
    timeout before its fallback, and a warning each. `pause_seconds` 0: always try."""

    def __init__(self, pause_seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.pause_seconds = pause_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed

    def allows(self) -> bool:
        """False while the pause after a failure runs."""
        with self._lock:
            return self._open_until is None or self._clock() >= self._open_until

    def failed(self, exc: redis.RedisError) -> bool:
        """Starts a pause if `exc` says Redis is unreachable; whether it did."""
        if not isinstance(exc, UNREACHABLE):
            return False
        with self._lock:
            self._open_until = self._clock() + self.pause_seconds
        return True

    def answered(self) -> None:
        if self._open_until is None:  # closed, as nearly always: no lock on a query's path
            return
        with self._lock:
            if self._open_until is None:
                return
            self._open_until = None
        log.info("Redis answers again")


# A rebuild's pipelines of bulk writes take Redis far longer than one query's read.
BULK_TIMEOUT_SECONDS = 30.0


def build_redis(settings: Settings, *, timeout: float | None = None) -> redis.Redis:
    # Short timeouts by default: when Redis is down, a query should fall back to SQL within
    # milliseconds rather than wait for the Lambda timeout.
    options: dict[str, Any] = {}
    token = auth_token(settings)
    if token is not None:
        options["credential_provider"] = token
    if settings.redis_url.startswith("rediss://"):
        # TLS: the certificate must chain to REDIS_SSL_CA (or, unset, the system trust store,
        # which holds ElastiCache's Amazon-issued CAs) and name the host; never a plain retry.
        options.update(
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
            ssl_ca_certs=settings.redis_ssl_ca,
            ssl_min_version=ssl.TLSVersion.TLSv1_2,
        )
    client = TokenRefreshingRedis.from_url(
        settings.redis_url,
        socket_timeout=timeout or settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
        decode_responses=False,
        **options,
    )
    if isinstance(client, TokenRefreshingRedis):
        client.auth_token = token
    return client


class AuthToken(CredentialProvider):
    """The AUTH token each new connection sends: ElastiCache's, from Secrets Manager."""

    def __init__(self, secret: SecretValue[str]) -> None:
        self.secret = secret

    def get_credentials(self) -> tuple[str]:
        return (self.secret.current,)


def auth_token(settings: Settings) -> AuthToken | None:
    """The ElastiCache AUTH token from Secrets Manager (cached by Powertools), if configured."""
    arn = settings.redis_auth_secret_arn
    if not arn:
        return None

    def fetch(fresh: bool) -> str:
        return str(parameters.get_secret(arn, max_age=300, force_fetch=fresh))

    return AuthToken(SecretValue(fetch, name="Redis"))


class TokenRefreshingRedis(redis.Redis):
    """A client that survives an AUTH token rotation (ElastiCache's ROTATE, then SET).

    Connections already open stay logged in; a new one that Redis refuses (WRONGPASS once
    the old token is dropped; NOAUTH) makes the token be read again past Powertools' cache,
    the pool's idle connections dropped (they reconnect with it) and the command run once
    more. Pipelines (the rebuild's bulk writes) are not run again, but log in with the token
    read again by then."""

    auth_token: AuthToken | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        execute: Callable[..., Any] = super().execute_command  # untyped in redis-py
        token = self.auth_token
        if token is None:
            return execute(*args, **options)
        refused = token.secret.current
        try:
            return execute(*args, **options)
        except redis.AuthenticationError:
            if token.secret.refresh(refused) is None:
                raise
        self.connection_pool.disconnect(inuse_connections=False)
        return execute(*args, **options)


def ping(client: redis.Redis) -> str:
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"unavailable ({type(exc).__name__}: {str(exc)[:120]})"
    return "ok"
