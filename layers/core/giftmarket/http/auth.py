"""Bearer tokens: HS256 JWTs issued at signup/login, checked on every authenticated call.

Only HS256 is accepted, so `alg: none` and algorithm-confusion tokens are refused; `exp`,
`iat` and `sub` are required. Whether a user is an admin is read from the database on the
primary when an admin command runs, never trusted from the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Header

from giftmarket.http.deps import ContainerDep

ISSUER = "giftmarket"
ALGORITHM = "HS256"


class NotAuthenticated(Exception):
    """No token, or one that is malformed, badly signed or expired (→ 401)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class TokenService:
    secret: str
    ttl: timedelta

    def issue(self, user_id: str, now: datetime | None = None) -> str:
        import jwt  # PyJWT (and cryptography with it) only when a token is issued or read

        issued = now or datetime.now(UTC)
        claims = {"sub": user_id, "iss": ISSUER, "iat": issued, "exp": issued + self.ttl}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def subject(self, token: str) -> str:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iat", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthenticated("The token has expired; sign in again.") from exc
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated("The token is not valid.") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise NotAuthenticated("The token is not valid.")
        return subject


async def token_service(container: ContainerDep) -> TokenService:
    return TokenService(container.jwt_secret, timedelta(seconds=container.settings.jwt_ttl_seconds))


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
