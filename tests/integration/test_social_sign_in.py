"""Social sign-in on the real stack: ID tokens from the stack's own OpenID provider (real RSA
keys, real HTTP), the command Lambda handler in process, MariaDB underneath.

What only the real parts show: concurrent first sign-ins of one identity make one account;
a sign-in racing a password signup of the same email never makes two accounts with it; the
provider rotating its key (a restart gives it a new one) is followed without a restart of
ours; the provider down is a quick 503, while keys already held keep signing users in; and
an Idempotency-Key keeps nothing of the token in the database.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.support.handler_client import PASSWORD, MarketClient
from tests.support.handler_client import handler_client as client_of
from tests.support.oidc_local import local_id_token

from giftmarket.bootstrap import set_container
from giftmarket.settings import Settings
from giftmarket_local.invoke import Reply
from giftmarket_local.stack import Stack

ROUTE = "/api/auth/oidc/local"


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[MarketClient]:
    # No floor on refetching keys: the rotation test needs no wait (the floor has its own
    # unit tests); no events queue: the client projects the outbox itself.
    settings = make_settings(events_queue_url=None, oidc_keys_refetch_floor_seconds=0)
    with client_of(MarketClient, settings, stack) as client:
        yield client


@pytest.fixture
def issuer(stack: Stack) -> Iterator[str]:
    yield stack.config.oidc_issuer
    stack.up()  # a test that stopped the provider leaves it running again


def sign_in(client: MarketClient, id_token: str, **headers: str) -> Reply:
    return client.call("POST", ROUTE, {"id_token": id_token}, headers=headers)


def new_sub() -> str:
    return f"it-{uuid.uuid4().hex}"


def scalar(stack: Stack, sql: str) -> str:
    return stack.primary.sql(sql).strip()


def test_the_first_sign_in_makes_one_account_with_the_welcome_coupon(
    client: MarketClient, issuer: str, stack: Stack
) -> None:
    sub = new_sub()
    first = sign_in(client, local_id_token(issuer, sub))
    assert (first.status, first.body["created"]) == (201, True), first
    user_id = first.body["user_id"]
    # The provider's default email is the sub, not an address: the account has none.
    no_email = f"SELECT email IS NULL FROM giftmarket.users WHERE id = '{user_id}'"
    assert scalar(stack, no_email) == "1"
    client.project()  # UserSignedUp → the welcome coupon, as for a password signup
    coupons = client.query("/api/me/coupons", first.body["token"])["items"]
    assert [c["discount_amount"] for c in coupons] == [1000]
    me = client.query("/api/me", first.body["token"])
    assert (me["email"], me["nickname"]) == (None, "local user")

    again = sign_in(client, local_id_token(issuer, sub))
    assert (again.status, again.body["user_id"], again.body["created"]) == (200, user_id, False)
    client.project()
    assert len(client.query("/api/me/coupons", again.body["token"])["items"]) == 1


def test_concurrent_first_sign_ins_of_one_identity_make_one_account(
    client: MarketClient, issuer: str, stack: Stack
) -> None:
    sub = new_sub()
    tokens = [local_id_token(issuer, sub) for _ in range(8)]
    with ThreadPoolExecutor(len(tokens)) as pool:
        replies = list(pool.map(lambda t: sign_in(client, t), tokens))
    assert sorted(r.status for r in replies) == [200] * 7 + [201], replies
    assert len({r.body["user_id"] for r in replies}) == 1
    rows = f"SELECT COUNT(*) FROM giftmarket.user_identities WHERE subject = '{sub}'"
    assert scalar(stack, rows) == "1"


def test_a_sign_in_racing_a_password_signup_of_its_email_never_makes_two_accounts(
    client: MarketClient, issuer: str, stack: Stack
) -> None:
    # `local` is trusted for email: a verified email links to the password account, or the
    # social account takes the email first and the signup is 409; never both accounts.
    for _ in range(6):
        sub, email = new_sub(), f"{uuid.uuid4().hex}@race.test"
        token = local_id_token(issuer, sub, email=email, email_verified=True)
        signup = {"email": email, "password": PASSWORD, "nickname": "pw"}
        with ThreadPoolExecutor(2) as pool:
            social = pool.submit(sign_in, client, token)
            password = pool.submit(client.call, "POST", "/api/auth/signup", signup)
            social_reply, password_reply = social.result(), password.result()
        owners = scalar(stack, f"SELECT COUNT(*) FROM giftmarket.users WHERE email = '{email}'")
        assert owners == "1"
        owner = scalar(stack, f"SELECT id FROM giftmarket.users WHERE email = '{email}'")
        assert social_reply.body["user_id"] == owner
        if password_reply.status == 201:
            assert social_reply.status == 200 and password_reply.body["user_id"] == owner
        else:
            assert (password_reply.status, password_reply.body["code"]) == (409, "email_taken")
            assert social_reply.status == 201


def test_a_rotated_provider_key_is_followed_without_a_restart(
    client: MarketClient, issuer: str, stack: Stack
) -> None:
    sub = new_sub()
    before = local_id_token(issuer, sub)
    assert sign_in(client, before).status == 201
    stack.stop(["oidc"])
    stack.up()  # a new key, with a new kid, and the old one gone
    after = local_id_token(issuer, sub)
    assert sign_in(client, after).status == 200
    refused = sign_in(client, before)  # signed by a key the provider no longer publishes
    assert (refused.status, refused.body["code"]) == (401, "invalid_token")


def test_the_provider_down_is_a_quick_503_and_keys_held_still_verify(
    client: MarketClient, make_settings: Callable[..., Settings], issuer: str, stack: Stack
) -> None:
    token = local_id_token(issuer, new_sub())
    settings = make_settings(events_queue_url=None, oidc_timeout_seconds=1)
    try:
        with client_of(MarketClient, settings, stack) as warm:
            assert sign_in(warm, token).status == 201  # the keys are now held by `warm`
            stack.stop(["oidc"])
            # A container that never fetched the keys cannot check the token: 503, quickly.
            with client_of(MarketClient, settings, stack) as cold:
                started = time.monotonic()
                reply = sign_in(cold, token)
                elapsed = time.monotonic() - started
            assert (reply.status, reply.body["code"]) == (503, "provider_unavailable"), reply
            assert int(reply.headers["retry-after"]) >= 1
            assert elapsed < 3, elapsed
            # One that holds them keeps signing users in.
            set_container(warm.container)  # the handlers' container again, after `cold`'s
            assert sign_in(warm, token).status == 200
    finally:
        set_container(client.container)  # the module's, for the tests after this one


def test_an_idempotency_key_keeps_nothing_of_the_token(
    client: MarketClient, issuer: str, stack: Stack
) -> None:
    token = local_id_token(issuer, new_sub(), nonce="n-idem")
    key = f"idem-{uuid.uuid4().hex}"
    body: dict[str, Any] = {"id_token": token, "nonce": "n-idem"}
    first = client.call("POST", ROUTE, body, headers={"Idempotency-Key": key})
    replay = client.call("POST", ROUTE, body, headers={"Idempotency-Key": key})
    assert (first.status, replay.status) == (201, 201), (first, replay)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.body["user_id"] == first.body["user_id"] and replay.body["created"] is True
    assert replay.body["token"]  # issued afresh, never stored

    other = local_id_token(issuer, new_sub(), nonce="n-idem")
    another = {**body, "id_token": other}
    reused = client.call("POST", ROUTE, another, headers={"Idempotency-Key": key})
    assert (reused.status, reused.body["code"]) == (422, "idempotency_key_reused")

    dump = stack.primary.sql("SELECT * FROM giftmarket.idempotency_records")
    signature = token.rsplit(".", 1)[1]
    for secret in (token, signature, hashlib.sha256(token.encode()).hexdigest()):
        assert secret not in dump
    assert first.body["token"] not in dump and replay.body["token"] not in dump
