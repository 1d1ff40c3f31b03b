"""POST /api/auth/oidc/{provider} through the command Lambda handler, on fakes: real API
Gateway events, the real verifier against an OpenID provider in memory (tests/support/
oidc_issuer.py), the in-memory store underneath. PRODUCT.md, "Social sign-in"."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from tests.support.fakes import (
    FakeClock,
    FakePasswords,
    FakeSignInGuard,
    FakeStore,
    FakeUnitOfWork,
    SecondsClock,
    make_context,
)
from tests.support.oidc_issuer import CLIENT_ID, FakeIssuer, hand_made, hs256, new_private_key

from giftmarket.adapters.oidc import OidcVerifier
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.domain.events import UserSignedUp
from giftmarket.domain.sign_in import SignInLimits
from giftmarket.domain.users import User
from giftmarket.http.auth import TokenService
from giftmarket.settings import OidcProvider, Settings
from giftmarket_local.invoke import LocalInvoker, Reply

FLOOR_SECONDS = 10
PASSWORD = "password123"


@dataclass
class World:
    invoker: LocalInvoker
    container: Container
    store: FakeStore
    trusted: FakeIssuer  # provider "acme": trusted for email
    untrusted: FakeIssuer  # provider "other": not trusted for email

    def send(self, method: str, path: str, body: Any = None, **headers: str) -> Reply:
        raw = (
            body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        )
        return self.invoker.http(
            method, path, body=raw, headers={"content-type": "application/json", **headers}
        )

    def sign_in(
        self,
        id_token: str,
        provider: str = "acme",
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> Reply:
        body = {"id_token": id_token, **fields}
        return self.send("POST", f"/api/auth/oidc/{provider}", body, **(headers or {}))

    def user(self, user_id: str) -> User:
        row: User = self.store.rows["users"][user_id]
        return row

    def subject_of(self, api_token: str) -> str:
        ttl = timedelta(seconds=self.container.settings.jwt_ttl_seconds)
        return TokenService(self.container.jwt_keys, ttl).subject(api_token)

    def signups_of(self, user_id: str) -> list[UserSignedUp]:
        return [
            e for e in self.store.events if isinstance(e, UserSignedUp) and e.user_id == user_id
        ]


@pytest.fixture
def world() -> Iterator[World]:
    trusted = FakeIssuer("https://issuer.test")
    untrusted = FakeIssuer("https://other.test")
    providers = {
        "acme": OidcProvider(issuer=trusted.issuer, client_ids=(CLIENT_ID,), trust_email=True),
        "other": OidcProvider(issuer=untrusted.issuer, client_ids=(CLIENT_ID,)),
    }

    def fetch(url: str, timeout: float) -> Any:
        issuer = untrusted if url.startswith(untrusted.issuer) else trusted
        return issuer.fetch(url, timeout)

    store, clock = FakeStore(), FakeClock()
    container = bootstrap(
        Settings(environment="test", events_queue_url=None, oidc_providers=providers),
        unit_of_work=lambda: FakeUnitOfWork(store),
        command_context=make_context(clock=clock, passwords=FakePasswords()),
        sign_in_guard=FakeSignInGuard(SignInLimits(5, 50, 900), clock),
        id_tokens=OidcVerifier(
            providers,
            timeout_seconds=1.0,
            keys_max_age_seconds=3600,
            refetch_floor_seconds=FLOOR_SECONDS,
            allow_loopback_http=False,
            fetch=fetch,
            clock=SecondsClock(0.0),
        ),
    )
    set_container(container)
    try:
        yield World(LocalInvoker(), container, store, trusted, untrusted)
    finally:
        set_container(None)


def assert_problem(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/problem+json", reply
    assert (reply.body["status"], reply.body["code"]) == (status, code), reply
    assert reply.body["detail"]


# --- the first sign-in makes the account, later ones sign in to it ---------------------------


def test_the_first_sign_in_creates_the_account_and_later_ones_sign_in_to_it(world: World) -> None:
    first = world.sign_in(world.trusted.token(sub="kim"))
    assert first.status == 201, first
    assert first.body["created"] is True
    user_id = first.body["user_id"]
    assert world.subject_of(first.body["token"]) == user_id
    assert "x-consistency-token" in first.headers

    again = world.sign_in(world.trusted.token(sub="kim", iat=-5))
    assert (again.status, again.body["user_id"], again.body["created"]) == (200, user_id, False)
    assert world.subject_of(again.body["token"]) == user_id
    assert len(world.store.rows["users"]) == 1
    # One signup event, hence one welcome coupon (the projector issues it from the event).
    assert len(world.signups_of(user_id)) == 1


def test_the_token_it_answers_works_as_a_bearer(world: World) -> None:
    signed_in = world.sign_in(world.trusted.token(sub="kim"))
    bearer = {"authorization": f"Bearer {signed_in.body['token']}"}
    charged = world.send("POST", "/api/points/charge", {"amount": 700}, **bearer)
    assert (charged.status, charged.body) == (200, {"available_points": 700}), charged
    assert world.user(signed_in.body["user_id"]).available_points == 700


def test_the_same_sub_at_two_providers_is_two_accounts(world: World) -> None:
    at_acme = world.sign_in(world.trusted.token(sub="same"))
    at_other = world.sign_in(world.untrusted.token(sub="same"), provider="other")
    assert (at_acme.status, at_other.status) == (201, 201)
    assert at_acme.body["user_id"] != at_other.body["user_id"]


# --- refused --------------------------------------------------------------------------------


BAD_TOKENS: dict[str, Callable[[FakeIssuer], str]] = {
    "forged": lambda i: i.token(key=new_private_key("RS256")),
    "expired": lambda i: i.token(iat=-900, exp=-120),
    "another audience": lambda i: i.token(aud="someone-else"),
    "another issuer": lambda i: i.token(iss="https://other.test"),
    "alg none": lambda i: hand_made(
        {"alg": "none", "kid": i.key_for("RS256").kid}, i.claims(), b""
    ),
    "HS256": lambda i: hs256({"kid": i.key_for("RS256").kid}, i.claims(), b"secret" * 6),
    "garbage": lambda i: "not-a-jwt",
    "16 KB of garbage": lambda i: "x" * 16384,
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_a_bad_id_token_is_401_invalid_token(world: World, case: str) -> None:
    reply = world.sign_in(BAD_TOKENS[case](world.trusted))
    assert_problem(reply, 401, "invalid_token")
    assert world.store.rows["users"] == {}


def test_a_nonce_that_is_not_the_tokens_is_401(world: World) -> None:
    token = world.trusted.token(nonce="n-1")
    assert_problem(world.sign_in(token, nonce="n-2"), 401, "invalid_token")
    assert world.sign_in(token, nonce="n-1").status == 201


def test_an_unknown_provider_is_404(world: World) -> None:
    assert_problem(world.sign_in(world.trusted.token(), provider="nope"), 404, "not_found")
    assert world.trusted.fetch_count == 0


def test_a_provider_that_cannot_be_reached_is_503_with_retry_after(world: World) -> None:
    world.trusted.reachable = False
    reply = world.sign_in(world.trusted.token())
    assert_problem(reply, 503, "provider_unavailable")
    assert reply.headers["retry-after"] == str(FLOOR_SECONDS)
    assert world.store.rows["users"] == {}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"nickname": "kim"},
        {"id_token": None},
        {"id_token": 12345},
        {"id_token": ""},
        {"id_token": "x" * 20 * 1024},
        {"id_token": "x", "password": "hunter22"},
        {"id_token": "x", "nickname": "n" * 31},
        {"id_token": "x", "nickname": "   "},
        {"id_token": "x", "nonce": ""},
        {"id_token": "x", "nonce": "n" * 256},
        [],
    ],
)
def test_a_bad_body_is_422(world: World, body: Any) -> None:
    reply = world.send("POST", "/api/auth/oidc/acme", body)
    assert_problem(reply, 422, "validation_error")
    assert world.trusted.fetch_count == 0  # refused before any key is fetched


# --- email: linking, never taking over ---------------------------------------------------------


def _password_account(world: World, email: str = "kim@example.com") -> str:
    signup = world.send(
        "POST", "/api/auth/signup", {"email": email, "password": PASSWORD, "nickname": "kim"}
    )
    assert signup.status == 201, signup
    user_id: str = signup.body["user_id"]
    return user_id


def test_a_trusted_verified_email_links_to_the_password_account(world: World) -> None:
    owner = _password_account(world)
    token = world.trusted.token(sub="g-1", email="Kim@Example.com", email_verified=True)
    linked = world.sign_in(token)
    assert (linked.status, linked.body["user_id"], linked.body["created"]) == (200, owner, False)
    assert world.subject_of(linked.body["token"]) == owner
    assert len(world.signups_of(owner)) == 1  # no second welcome coupon
    # Linked for good: the next sign-in needs no email at all.
    later = world.sign_in(world.trusted.token(sub="g-1", iat=-5))
    assert (later.status, later.body["user_id"]) == (200, owner)
    # And the password still works.
    login = world.send(
        "POST", "/api/auth/login", {"email": "kim@example.com", "password": PASSWORD}
    )
    assert (login.status, login.body["user_id"]) == (200, owner)


@pytest.mark.parametrize(
    ("provider", "verified"),
    [("other", True), ("acme", False), ("acme", "false"), ("acme", None)],
)
def test_an_email_not_both_verified_and_trusted_never_takes_an_account_over(
    world: World, provider: str, verified: bool | str | None
) -> None:
    owner = _password_account(world)
    issuer = world.trusted if provider == "acme" else world.untrusted
    token = issuer.token(sub="mallory", email="kim@example.com", email_verified=verified)
    reply = world.sign_in(token, provider=provider)
    assert_problem(reply, 409, "email_taken")
    assert list(world.store.rows["users"]) == [owner]
    assert world.store.identities == {}


def test_a_fresh_unverified_email_makes_an_account_without_email(world: World) -> None:
    token = world.untrusted.token(sub="lee", email="lee@example.com", email_verified=False)
    reply = world.sign_in(token, provider="other")
    assert reply.status == 201, reply
    user = world.user(reply.body["user_id"])
    assert (user.email, user.password_hash) == (None, None)
    [signup] = world.signups_of(user.id)
    assert signup.email is None
    # The address is not claimed: its owner can still sign up with it.
    assert _password_account(world, "lee@example.com") != user.id


def test_a_fresh_verified_email_is_kept_and_blocks_a_password_signup_with_it(
    world: World,
) -> None:
    token = world.untrusted.token(sub="lee", email="Lee@Example.com", email_verified=True)
    reply = world.sign_in(token, provider="other")
    assert reply.status == 201, reply
    assert world.user(reply.body["user_id"]).email == "lee@example.com"
    signup = world.send(
        "POST",
        "/api/auth/signup",
        {"email": "lee@example.com", "password": PASSWORD, "nickname": "lee"},
    )
    assert_problem(signup, 409, "email_taken")


def test_a_social_only_account_cannot_log_in_with_a_password(world: World) -> None:
    token = world.trusted.token(sub="kim", email="kim@example.com", email_verified=True)
    assert world.sign_in(token).status == 201
    for password in (PASSWORD, "", "x" * 8):
        login = world.send(
            "POST", "/api/auth/login", {"email": "kim@example.com", "password": password}
        )
        if login.status == 422:  # a password the schema refuses never reaches the check
            continue
        assert_problem(login, 401, "invalid_credentials")


# --- nickname ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "name", "expected"),
    [
        ("Kimmy", "Kim Minji", "Kimmy"),
        (None, "Kim Minji", "Kim Minji"),
        (None, "  Kim \t Minji\n", "Kim Minji"),
        (None, "n" * 40, "n" * 30),
        (None, None, "acme user"),
        (None, "\u200b\n", "acme user"),
    ],
)
def test_the_nickname_is_the_bodys_else_the_tokens_name_else_a_default(
    world: World, asked: str | None, name: str | None, expected: str
) -> None:
    token = world.trusted.token(sub="kim", name=name)
    reply = world.sign_in(token) if asked is None else world.sign_in(token, nickname=asked)
    assert reply.status == 201, reply
    assert world.user(reply.body["user_id"]).nickname == expected


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_a_replay_answers_as_the_first_call_with_a_fresh_token(world: World) -> None:
    id_token = world.trusted.token(sub="kim", nonce="n-1")
    key = {"Idempotency-Key": "social-1"}
    first = world.sign_in(id_token, nonce="n-1", headers=key)
    replay = world.sign_in(id_token, nonce="n-1", headers=key)
    assert (first.status, replay.status) == (201, 201), replay
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert replay.body["user_id"] == first.body["user_id"]
    assert replay.body["created"] is True
    assert world.subject_of(replay.body["token"]) == first.body["user_id"]
    assert len(world.store.rows["users"]) == 1
    assert len(world.signups_of(first.body["user_id"])) == 1

    # Nothing of either token is kept: not the API's, nor the ID token, its signature or hash.
    kept = repr(world.store.idempotency)
    signature = id_token.rsplit(".", 1)[1]
    for secret in (
        id_token,
        signature,
        hashlib.sha256(id_token.encode()).hexdigest(),
        hashlib.sha256(signature.encode()).hexdigest(),
        first.body["token"],
        replay.body["token"],
    ):
        assert secret not in kept
    [record] = world.store.idempotency.values()
    assert "token" not in json.loads(record.response.body)
    assert json.loads(record.response.body)["user_id"] == first.body["user_id"]


def test_a_key_reused_with_another_token_of_the_same_user_is_422(world: World) -> None:
    key = {"Idempotency-Key": "social-2"}
    first = world.sign_in(world.trusted.token(sub="kim"), headers=key)
    assert first.status == 201, first
    another = world.sign_in(world.trusted.token(sub="kim", iat=-7), headers=key)
    assert_problem(another, 422, "idempotency_key_reused")
    # The nickname asked for is part of the request: another one is another request.
    renamed = world.sign_in(world.trusted.token(sub="kim"), nickname="kim2", headers=key)
    assert_problem(renamed, 422, "idempotency_key_reused")
