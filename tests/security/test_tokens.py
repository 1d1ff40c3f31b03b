"""Bearer tokens: only an unexpired HS256 JWT signed with the deployment's secret, issued by
giftmarket, with sub/iat/exp, authenticates a call. Every forgery below is a 401 problem with
`WWW-Authenticate: Bearer` on a command route and on a query route, and the command had no
effect. Tokens are crafted with PyJWT (and by hand where PyJWT refuses to forge).
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from tests.support.handler_client import User
from tests.support.security import Client, missing_id

from giftmarket.http.auth import ALGORITHM, ISSUER
from giftmarket_local.invoke import Reply

pytestmark = pytest.mark.e2e

WRONG_SECRET = "not-the-deployment-secret-but-long-enough-for-hs256"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(sub: str, *, age: timedelta = timedelta(0), ttl: timedelta = timedelta(hours=1)) -> Any:
    issued = datetime.now(UTC) - age
    return {"sub": sub, "iss": ISSUER, "iat": issued, "exp": issued + ttl}


def unsigned(payload: dict[str, Any]) -> str:
    """`alg: none`, no signature."""
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload, default=lambda t: int(t.timestamp())).encode())
    return f"{header}.{body}."


@pytest.fixture(scope="module")
def victim(client: Client) -> User:
    return client.sign_up()


@pytest.fixture(scope="module")
def secret(client: Client) -> str:
    return client.container.jwt_secret


def charge(client: Client, authorization: str | None) -> Reply:
    return client.call("POST", "/api/points/charge", {"amount": 7}, authorization=authorization)


def me(client: Client, authorization: str | None) -> Reply:
    return client.call("GET", "/api/me", authorization=authorization)


def unauthorized(reply: Reply) -> None:
    assert reply.status == 401, reply
    assert reply.headers["content-type"] == "application/problem+json", reply
    assert reply.body["status"] == 401, reply
    assert reply.headers.get("www-authenticate", "").lower().startswith("bearer"), reply


def points(client: Client, user: User) -> str:
    return client.sql(f"SELECT available_points FROM giftmarket.users WHERE id = '{user.user_id}'")


def test_the_genuine_token_works_on_both_routes(client: Client, victim: User) -> None:
    """The positive control for every forgery below."""
    assert charge(client, f"Bearer {victim.token}").status == 200
    client.settle()
    assert me(client, f"Bearer {victim.token}").body["user_id"] == victim.user_id
    assert jwt.get_unverified_header(victim.token)["alg"] == ALGORITHM == "HS256"


def hs512(payload: dict[str, Any], secret: str) -> str:
    """A token signed with the application's key in an algorithm it does not accept. PyJWT's
    warning that the key is short for HS512 is beside the point of the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm="HS512")


FORGERIES: dict[str, Callable[[str, str], str | None]] = {
    "no Authorization header": lambda sub, secret: None,
    "empty bearer": lambda sub, secret: "Bearer ",
    "basic scheme": lambda sub, secret: "Basic " + b64(b"user:password123"),
    "not a jwt": lambda sub, secret: "Bearer not.a.jwt",
    "alg none": lambda sub, secret: "Bearer " + unsigned(claims(sub)),
    "alg none, capitalised": lambda sub, secret: (
        "Bearer "
        + unsigned(claims(sub)).replace(
            b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
            b64(json.dumps({"alg": "None", "typ": "JWT"}).encode()),
        )
    ),
    "signature stripped": lambda sub, secret: (
        "Bearer " + jwt.encode(claims(sub), secret, algorithm="HS256").rsplit(".", 1)[0] + "."
    ),
    "wrong key": lambda sub, secret: (
        "Bearer " + jwt.encode(claims(sub), WRONG_SECRET, algorithm="HS256")
    ),
    "right key, HS512": lambda sub, secret: "Bearer " + hs512(claims(sub), secret),
    "expired": lambda sub, secret: (
        "Bearer " + jwt.encode(claims(sub, age=timedelta(hours=2)), secret, algorithm="HS256")
    ),
    "no exp": lambda sub, secret: (
        "Bearer "
        + jwt.encode(
            {"sub": sub, "iss": ISSUER, "iat": datetime.now(UTC)}, secret, algorithm="HS256"
        )
    ),
    "other issuer": lambda sub, secret: (
        "Bearer " + jwt.encode({**claims(sub), "iss": "evil"}, secret, algorithm="HS256")
    ),
    "empty subject": lambda sub, secret: (
        "Bearer " + jwt.encode(claims(""), secret, algorithm="HS256")
    ),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_or_missing_token_is_401_and_does_nothing(
    client: Client, victim: User, secret: str, forgery: str
) -> None:
    authorization = FORGERIES[forgery](victim.user_id, secret)
    before = points(client, victim)
    unauthorized(charge(client, authorization))
    unauthorized(me(client, authorization))
    assert points(client, victim) == before


def test_a_tampered_payload_is_401(client: Client, victim: User) -> None:
    """An attacker's own genuine token with the subject swapped for the victim's."""
    attacker = client.sign_up()
    header, payload, signature = attacker.token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded["sub"] == attacker.user_id
    forged_payload = b64(json.dumps({**decoded, "sub": victim.user_id}).encode())
    forged = f"Bearer {header}.{forged_payload}.{signature}"
    before = points(client, victim)
    unauthorized(charge(client, forged))
    unauthorized(me(client, forged))
    # A flipped signature character is refused as well.
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    unauthorized(charge(client, f"Bearer {header}.{payload}.{flipped}"))
    assert points(client, victim) == before
    assert charge(client, f"Bearer {attacker.token}").status == 200  # untouched, it works


def test_a_validly_signed_token_for_a_user_that_does_not_exist(client: Client, secret: str) -> None:
    """Commands act for a user, so a vanished account's token is a 401 (acting_user in
    commands/context.py). Queries check only the token; the caller's own profile is then
    simply not found (404), never someone's data and never a 500."""
    ghost = missing_id()
    token = "Bearer " + jwt.encode(claims(ghost), secret, algorithm="HS256")
    unauthorized(charge(client, token))
    unauthorized(
        client.call("POST", "/api/images", {"content_type": "image/png"}, authorization=token)
    )
    reply = me(client, token)
    assert reply.status == 404, reply
    assert reply.body["code"] == "not_found", reply
    count = client.sql(f"SELECT COUNT(*) FROM giftmarket.images WHERE owner_id = '{ghost}'")
    assert count == "0"
