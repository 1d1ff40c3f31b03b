"""The JWT signing keys: the current and the previous one by `kid`, read from Secrets
Manager (AWSCURRENT and AWSPREVIOUS) and held per container by a `KeyRing`, which reads them
again as they age and, rate-limited, when a token names a kid it does not know. The tokens
themselves are issued and checked in `http/auth.py`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from giftmarket.lazy import lazy

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import exceptions as parameter_errors
    from botocore import exceptions as botocore_errors
else:
    parameters = lazy("aws_lambda_powertools.utilities.parameters")
    parameter_errors = lazy("aws_lambda_powertools.utilities.parameters.exceptions")
    botocore_errors = lazy("botocore.exceptions")

log = logging.getLogger(__name__)


def key_id(secret: str) -> str:
    """A key's `kid`: 64 bits of a domain-separated SHA-256 of the key. It names the key
    without revealing anything usable about a key of HS256 strength."""
    return hashlib.sha256(b"giftmarket-jwt-kid\0" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: str = field(repr=False)

    @classmethod
    def of(cls, secret: str) -> SigningKey:
        return cls(key_id(secret), secret)


@dataclass(frozen=True)
class KeySet:
    """The key tokens are signed with, and the one before it (None: never rotated)."""

    current: SigningKey
    previous: SigningKey | None = None

    @classmethod
    def of(cls, current: str, previous: str | None = None) -> KeySet:
        return cls(SigningKey.of(current), SigningKey.of(previous) if previous else None)

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in self.all() if k.kid == kid), None)

    def all(self) -> tuple[SigningKey, ...]:
        return (self.current,) if self.previous is None else (self.current, self.previous)


def keys_from_secret(arn: str) -> KeySet:
    """The AWSCURRENT and AWSPREVIOUS versions of the JWT secret. Both are read past
    Powertools' cache and stored in none (max_age=0): its cache is keyed by the name alone,
    so a cached AWSPREVIOUS would be served as AWSCURRENT; the KeyRing keeps them instead."""
    current = str(parameters.get_secret(arn, max_age=0, force_fetch=True))
    try:
        previous: str | None = str(
            parameters.get_secret(arn, max_age=0, force_fetch=True, VersionStage="AWSPREVIOUS")
        )
    except parameter_errors.GetParameterError as exc:
        cause = exc.__context__
        never_rotated = isinstance(cause, botocore_errors.ClientError) and (
            cause.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
        )
        if not never_rotated:
            raise
        previous = None
    return KeySet.of(current, previous)


class KeyRing:
    """This container's KeySet, read by `load` when first needed, again once it is
    `max_age_seconds` old (a rotation is picked up for signing), and early when a token names
    an unknown kid, at most once per `refetch_interval_seconds` (a flood of made-up kids
    costs one read per interval). A failed read keeps the keys already held."""

    def __init__(
        self,
        load: Callable[[], KeySet],
        *,
        max_age_seconds: float = 300.0,
        refetch_interval_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._max_age = max_age_seconds
        self._refetch_interval = refetch_interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._read_at = 0.0  # when the keys held were read
        self._tried_at = 0.0  # when a read was last attempted
        # When an unknown kid last made it read: the rate limit counts only those reads, so
        # a container that has just read its keys still learns a new one at once.
        self._refetched_at = float("-inf")
        self.reads = 0

    @classmethod
    def fixed(cls, keys: KeySet) -> KeyRing:
        return cls(lambda: keys, max_age_seconds=float("inf"))

    def keys(self) -> KeySet:
        keys, now = self._keys, self._clock()
        if keys is not None and (
            now - self._read_at < self._max_age or now - self._tried_at < self._refetch_interval
        ):
            return keys
        return self._read(keys)

    def find(self, kid: str) -> SigningKey | None:
        """The key `kid` names, read again if unknown (rate-limited); None if still unknown."""
        held = self.keys()
        key = held.find(kid)
        if key is not None:
            return key
        with self._lock:
            if self._clock() - self._refetched_at < self._refetch_interval:
                return self._keys.find(kid) if self._keys is not None else None
            self._refetched_at = self._clock()
        return self._read(held).find(kid)

    def _read(self, seen: KeySet | None) -> KeySet:
        with self._lock:
            if self._keys is not seen:  # another thread read them meanwhile
                assert self._keys is not None
                return self._keys
            self._tried_at = self._clock()
            try:
                keys = self._load()
            except Exception:
                if seen is None:
                    raise
                log.exception("cannot read the JWT keys again; keeping the ones held")
                return seen
            self.reads += 1
            self._keys, self._read_at = keys, self._tried_at
            return keys
