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

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header

from giftmarket.adapters.jwt_keys import KeyRing, KeySet
from giftmarket.http.deps import ContainerDep
from giftmarket.lazy import lazy

if TYPE_CHECKING:
    import jwt
else:
    jwt = lazy("jwt")

ISSUER = "giftmarket"
ALGORITHM = "HS256"


class NotAuthenticated(Exception):
    """No token, or one that is malformed, badly signed or expired (→ 401)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TokenService:
    def __init__(self, keys: KeyRing | str, ttl: timedelta) -> None:
        # A bare secret (tests, tools): a ring of that one key.
        self.keys = keys if isinstance(keys, KeyRing) else KeyRing.fixed(KeySet.of(keys))
        self.ttl = ttl

    def issue(self, user_id: str, now: datetime | None = None) -> str:
        key = self.keys.keys().current
        issued = now or datetime.now(UTC)
        claims = {"sub": user_id, "iss": ISSUER, "iat": issued, "exp": issued + self.ttl}
        return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})

    def subject(self, token: str) -> str:
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
