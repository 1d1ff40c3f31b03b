"""The sign-in abuse counters: in Redis, and in the primary's `login_failures` table while
Redis cannot be reached.

A subject (an email, a source address) is stored only as an HMAC of it under a server-side
secret: both are personal data, and a bare hash of an email is reversed by hashing a list of
emails. Counting fails closed: if neither Redis nor the primary can count an attempt, the
attempt is refused (503 from DatabaseUnavailable) before any password is tried.

The two stores do not share counts: failures counted in the table while Redis was down are
not seen once it is back, and the other way round; each is bounded by its own window.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from aws_lambda_powertools.metrics import MetricUnit
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from giftmarket.adapters import tables
from giftmarket.adapters.cache import RedisBreaker
from giftmarket.adapters.db import (
    RACE_ERROR_CODES,
    is_connectivity_error,
    mysql_error_code,
    short_reason,
)
from giftmarket.adapters.errors import DatabaseUnavailable
from giftmarket.commands.ports import CommandContention, SignInGuard, utc_now
from giftmarket.domain.sign_in import FailureWindow, SignInLimits, TooManyAttempts, lockout
from giftmarket.domain.users import normalize_email
from giftmarket.observability import metrics

log = logging.getLogger(__name__)

Subjects = list[tuple[str, int]]  # (subject key, its limit), in key order


class SubjectKeys:
    """The stored name of each subject of an attempt: HMAC-SHA256 under the secret, hex."""

    def __init__(self, secret: Callable[[], bytes], limits: SignInLimits) -> None:
        self._secret = secret
        self._limits = limits

    def key(self, kind: str, value: str) -> str:
        message = f"{kind}\x00{value}".encode()
        return hmac.new(self._secret(), message, hashlib.sha256).hexdigest()

    def of(self, email: str, address: str | None) -> Subjects:
        subjects = [(self.key("email", normalize_email(email)), self._limits.per_email)]
        if address:
            subjects.append((self.key("address", address), self._limits.per_address))
        return sorted(subjects)


# KEYS: the subjects' counters; ARGV[1]: the window in ms; ARGV[1 + i]: the limit of KEYS[i].
# Admits and counts the attempt (0), or returns the ms until every locked-out subject may try
# again, counting nothing. A counter expires where its first failure put it (PEXPIRE NX).
_ADMIT = """
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, window)
      ttl = window
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, window, 'NX')
end
return 0
"""

# KEYS: the subjects' counters, each taken back by one; a counter at zero is deleted, so
# the next failure opens a new window.
_WITHDRAW = """
for _, key in ipairs(KEYS) do
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
return 1
"""


class RedisSignInGuard(SignInGuard):
    PREFIX = "signin:failures:"

    def __init__(self, client: redis.Redis, keys: SubjectKeys, limits: SignInLimits) -> None:
        self._keys = keys
        self._window_ms = limits.window_seconds * 1000
        self._admit = client.register_script(_ADMIT)
        self._withdraw = client.register_script(_WITHDRAW)

    def admit(self, email: str, address: str | None) -> SignInGuard:
        subjects = self._keys.of(email, address)
        wait_ms = int(
            self._admit(
                keys=[self.PREFIX + key for key, _ in subjects],
                args=[self._window_ms, *(limit for _, limit in subjects)],
            )
        )
        if wait_ms > 0:
            raise TooManyAttempts(math.ceil(wait_ms / 1000))
        return self

    def withdraw(self, email: str, address: str | None) -> None:
        subjects = self._keys.of(email, address)
        try:
            self._withdraw(keys=[self.PREFIX + key for key, _ in subjects])
        except redis.RedisError as exc:
            log.warning("sign-in attempt stays counted: Redis failed (%s)", type(exc).__name__)


# Makes each subject's row exist (a closed window if it is new) and takes its row lock for
# the transaction: concurrent attempts on one subject then count one after the other, even
# the first ones, for which a SELECT ... FOR UPDATE would have found no row to lock.
_LOCK = text(
    """
    INSERT INTO login_failures (subject_key, window_started_at, failures, expires_at)
    VALUES (:key, :now, 0, :now)
    ON DUPLICATE KEY UPDATE failures = failures
    """
)
_COUNT = text(
    """
    INSERT INTO login_failures (subject_key, window_started_at, failures, expires_at)
    VALUES (:key, :now, 1, :expires)
    ON DUPLICATE KEY UPDATE
      window_started_at = IF(expires_at <= :now, :now, window_started_at),
      failures = IF(expires_at <= :now, 1, failures + 1),
      expires_at = IF(expires_at <= :now, :expires, expires_at)
    """
)  # MySQL assigns left to right: expires_at last, so every IF reads the old window.


def _db_time(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


class SqlSignInGuard(SignInGuard):
    """The counters in the primary's `login_failures` table, each attempt in its own short
    transaction (never the login's unit of work, which rolls back when the login fails)."""

    def __init__(
        self,
        engine: Engine,
        keys: SubjectKeys,
        limits: SignInLimits,
        *,
        clock: Callable[[], datetime] = utc_now,
        retries: int = 3,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._limits = limits
        self._clock = clock
        self._retries = retries

    def admit(self, email: str, address: str | None) -> SignInGuard:
        subjects = self._keys.of(email, address)
        for attempt in range(self._retries + 1):
            try:
                self._admit(subjects)
                return self
            except TooManyAttempts:
                raise
            except Exception as exc:
                if is_connectivity_error(exc):
                    raise DatabaseUnavailable("primary", short_reason(exc)) from exc
                if mysql_error_code(exc) not in RACE_ERROR_CODES:
                    raise
                if attempt == self._retries:
                    raise CommandContention() from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _admit(self, subjects: Subjects) -> None:
        t = tables.login_failures
        now = self._clock()
        keys = [key for key, _ in subjects]
        at = {"now": _db_time(now), "expires": _db_time(now + self._limits.window)}
        with self._engine.begin() as conn:
            for key in keys:  # in key order, as every attempt locks them: no deadlock
                conn.execute(_LOCK, {"key": key, **at})
            rows = conn.execute(select(t).where(t.c.subject_key.in_(keys))).all()
            windows = {
                row.subject_key: FailureWindow(
                    row.window_started_at.replace(tzinfo=UTC),
                    row.failures,
                    row.expires_at.replace(tzinfo=UTC),
                )
                for row in rows
            }
            wait = lockout(((windows.get(key), limit) for key, limit in subjects), now)
            if wait is not None:
                raise TooManyAttempts(wait)
            for key in keys:
                conn.execute(_COUNT, {"key": key, **at})

    def withdraw(self, email: str, address: str | None) -> None:
        t = tables.login_failures
        keys = [key for key, _ in self._keys.of(email, address)]
        now = _db_time(self._clock())
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    update(t)
                    .where(t.c.subject_key.in_(keys), t.c.failures > 0, t.c.expires_at > now)
                    .values(failures=t.c.failures - 1)
                )
                conn.execute(delete(t).where(t.c.subject_key.in_(keys), t.c.failures <= 0))
        except SQLAlchemyError as exc:
            log.warning("sign-in attempt stays counted: the primary failed (%s)", short_reason(exc))


class FallbackSignInGuard(SignInGuard):
    """Redis while it answers; the primary's table while it does not, and for the pause
    after Redis was found unreachable (`breaker`, the container's)."""

    def __init__(
        self, cache: RedisSignInGuard, database: SqlSignInGuard, breaker: RedisBreaker
    ) -> None:
        self._cache = cache
        self._database = database
        self._breaker = breaker

    def admit(self, email: str, address: str | None) -> SignInGuard:
        if self._breaker.allows():
            try:
                admitted = self._cache.admit(email, address)
            except redis.RedisError as exc:
                self._breaker.failed(exc)
                log.warning(
                    "sign-in counters from the primary: Redis failed (%s)", type(exc).__name__
                )
            else:
                self._breaker.answered()
                return admitted
        metrics.add_metric(name="SignInGuardFallback", unit=MetricUnit.Count, value=1)
        return self._database.admit(email, address)

    def withdraw(self, email: str, address: str | None) -> None:
        # Admissions are withdrawn from the guard that `admit` returned; this is for callers
        # that did not keep it.
        self._cache.withdraw(email, address)
