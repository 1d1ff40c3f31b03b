"""Bearer tokens: HS256 JWTs issued at signup/login, checked on every authenticated call.

Only HS256 is accepted, so `alg: none` and algorithm-confusion tokens are refused; `exp`,
`iat` and `sub` are required. Whether a user is an admin is read from the database on the
primary when an admin command runs, never trusted from the token.

The signing key rotates without signing anyone out: a token names its key in the header
(`kid`), is signed with the current key and verified with the key its kid names, the current
or the previous one (Secrets Manager's AWSCURRENT and AWSPREVIOUS versions), so a token
signed before a rotation stays valid until it expires. A kid this container does not know
(another container read the new key first) makes it read the keys again, at most once per
`refetch_interval_seconds`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header

from giftmarket.http.deps import ContainerDep

log = logging.getLogger(__name__)

ISSUER = "giftmarket"
ALGORITHM = "HS256"


class NotAuthenticated(Exception):
    """No token, or one that is malformed, badly signed or expired (→ 401)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
    from botocore.exceptions import ClientError

    current = str(parameters.get_secret(arn, max_age=0, force_fetch=True))
    try:
        previous: str | None = str(
            parameters.get_secret(arn, max_age=0, force_fetch=True, VersionStage="AWSPREVIOUS")
        )
    except GetParameterError as exc:
        cause = exc.__context__
        never_rotated = isinstance(cause, ClientError) and (
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


class TokenService:
    def __init__(self, keys: KeyRing | str, ttl: timedelta) -> None:
        # A bare secret (tests, tools): a ring of that one key.
        self.keys = keys if isinstance(keys, KeyRing) else KeyRing.fixed(KeySet.of(keys))
        self.ttl = ttl

    def issue(self, user_id: str, now: datetime | None = None) -> str:
        import jwt  # PyJWT (and cryptography with it) only when a token is issued or read

        key = self.keys.keys().current
        issued = now or datetime.now(UTC)
        claims = {"sub": user_id, "iss": ISSUER, "iat": issued, "exp": issued + self.ttl}
        return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})

    def subject(self, token: str) -> str:
        import jwt

        try:
            claims = self._verified_claims(token)
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthenticated("The token has expired; sign in again.") from exc
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated("The token is not valid.") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise NotAuthenticated("The token is not valid.")
        return subject

    def _verified_claims(self, token: str) -> dict[str, Any]:
        import jwt

        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None:
            # Issued before tokens carried a kid: whichever key signed it.
            candidates = self.keys.keys().all()
        elif isinstance(kid, str) and (key := self.keys.find(kid)) is not None:
            candidates = (key,)
        else:
            raise jwt.InvalidTokenError("unknown kid")
        for number, key in enumerate(candidates, start=1):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.secret,
                    algorithms=[ALGORITHM],
                    issuer=ISSUER,
                    options={"require": ["sub", "exp", "iat", "iss"]},
                )
            except jwt.InvalidSignatureError:
                if number == len(candidates):
                    raise
                continue
            return claims
        raise AssertionError("unreachable")


async def token_service(container: ContainerDep) -> TokenService:
    return TokenService(container.jwt_keys, timedelta(seconds=container.settings.jwt_ttl_seconds))


Tokens = Annotated[TokenService, Depends(token_service)]


@dataclass(frozen=True)
class Caller:
    user_id: str


async def authenticate(
    tokens: Tokens, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    if not authorization:
        raise NotAuthenticated("Send Authorization: Bearer <token> (from signup or login).")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("Use the Bearer scheme: Authorization: Bearer <token>.")
    return Caller(tokens.subject(token.strip()))


CurrentUser = Annotated[Caller, Depends(authenticate)]
