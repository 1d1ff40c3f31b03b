"""Every command route of the HTTP contract, end to end: real HTTP → the local runner → an
API Gateway v2 event → the command Lambda handler → the MariaDB primary and LocalStack S3.

The database is shared by the whole session, so every test makes its own users (unique
emails) and its own product, and reads balances and states from the primary by id.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support.net import free_port, port_open
from tests.support.oidc_local import local_id_token
from tests.support.oidc_tokens import forged, hs256_with_public_key, provider_token, unsigned
from tests.support.runner import runner_env
from tests.support.vouchers import voucher_facts

from giftmarket.consistency import ConsistencyToken
from giftmarket_local.stack import REPO_ROOT, Stack

# The suite's convention for the default admin (ADMIN_EMAILS defaults to this address).
ADMIN_EMAIL = "admin@giftmarket.local"
PASSWORD = "password123"
MIB = 1024 * 1024
MAX_IMAGE_BYTES = 5 * MIB
_NO_BODY: Any = object()


# ---------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def __str__(self) -> str:
        return f"{self.status} {self.headers.get('content-type')} {self.raw[:600]!r}"


def http(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Reply:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - loopback
            return Reply(resp.status, _lower(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, _lower(err.headers.items()), err.read())


def _lower(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        *,
        token: str | None = None,
        key: str | None = None,
        data: bytes | None = None,
    ) -> Reply:
        headers: dict[str, str] = {}
        if body is not _NO_BODY:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if key is not None:
            headers["Idempotency-Key"] = key
        return http(method, self.base + path, data, headers)


def ok(reply: Reply, status: int) -> Any:
    """A successful command: the status, JSON (or nothing for 204), a consistency token."""
    assert reply.status == status, str(reply)
    token = reply.headers.get("x-consistency-token")
    assert token, f"no X-Consistency-Token: {reply.headers}"
    assert ConsistencyToken.decode(token) is not None, token
    if status == 204:
        assert reply.raw == b"", str(reply)
        return None
    assert reply.headers["content-type"] == "application/json", str(reply)
    return reply.body


def refused(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with the given status and machine-readable code."""
    assert reply.status == status, str(reply)
    assert reply.headers["content-type"] == "application/problem+json", str(reply)
    problem: dict[str, Any] = reply.body
    assert problem["status"] == status, problem
    assert isinstance(problem.get("code"), str) and problem["code"], problem
    if code is not None:
        assert problem["code"] == code, problem
    return problem


# ---------------------------------------------------------------------------------------
# The runner, one per module


@pytest.fixture(scope="module")
def runner_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runner") / "runner.log"


@pytest.fixture(scope="module")
def api(stack: Stack, runner_log: Path) -> Iterator[Api]:
    port = free_port()
    # Output goes to a file: the runner logs a line per request, which would fill a pipe.
    with runner_log.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "giftmarket_local", "run", "--profile", "test"]
            + ["--port", str(port)],
            cwd=REPO_ROOT,
            env=runner_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while not port_open(port):
            assert proc.poll() is None, f"runner exited early:\n{runner_log.read_text()}"
            assert time.monotonic() < deadline, "runner did not start listening"
            time.sleep(0.1)
        yield Api(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = runner_log.read_text()
    assert proc.returncode == 0, output
    # No request of this module may have been an unhandled error.
    assert "→ 500" not in output, output
    assert "Traceback" not in output, output


# ---------------------------------------------------------------------------------------
# Domain helpers


@dataclass(frozen=True)
class User:
    user_id: str
    token: str
    email: str


def unique_email() -> str:
    return f"e2e-{uuid.uuid4().hex}@example.com"


def sign_up(api: Api, email: str | None = None) -> User:
    email = email or unique_email()
    body = {"email": email, "password": PASSWORD, "nickname": "e2e"}
    created = ok(api.call("POST", "/api/auth/signup", body), 201)
    return User(created["user_id"], created["token"], email)


def charge(api: Api, user: User, amount: int, key: str | None = None) -> int:
    body = ok(
        api.call("POST", "/api/points/charge", {"amount": amount}, token=user.token, key=key), 200
    )
    assert isinstance(body["available_points"], int)
    return int(body["available_points"])


def balances(stack: Stack, user: User) -> tuple[int, int, int]:
    """(available, escrowed, pending), read from the primary."""
    row = stack.primary.sql(
        "SELECT available_points, escrowed_points, pending_points FROM giftmarket.users"
        f" WHERE id = '{user.user_id}'"
    )
    available, escrowed, pending = (int(v) for v in row.split("\t"))
    return available, escrowed, pending


def column(stack: Stack, table: str, column_name: str, row_id: str) -> str:
    return stack.primary.sql(f"SELECT {column_name} FROM giftmarket.{table} WHERE id = '{row_id}'")


def new_product(api: Api, admin: User, face_value: int = 5000) -> str:
    name = f"Americano {uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"name": name, "brand": "Starbucks", "category": "coffee"}
    body["face_value"] = face_value
    created = ok(api.call("POST", "/api/products", body, token=admin.token), 201)
    assert isinstance(created["product_id"], str)
    return str(created["product_id"])


def png(size: int | None = None) -> bytes:
    """A 1×1 PNG, padded after IEND to `size` bytes when given."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    image = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )
    return image if size is None else image + b"\x00" * (size - len(image))


def upload_slot(api: Api, user: User, content_type: str = "image/png") -> tuple[str, str]:
    body = {"content_type": content_type}
    slot = ok(api.call("POST", "/api/images", body, token=user.token), 201)
    assert isinstance(slot["image_id"], str) and slot["upload_url"].startswith("http")
    return str(slot["image_id"]), str(slot["upload_url"])


def put_object(url: str, data: bytes, content_type: str) -> Reply:
    return http("PUT", url, data, {"Content-Type": content_type})


def uploaded_image(api: Api, user: User, size: int | None = None) -> str:
    image_id, url = upload_slot(api, user)
    put = put_object(url, png(size), "image/png")
    assert put.status == 200, str(put)
    return image_id


voucher = voucher_facts  # a sell bid's or sell-now's voucher: fresh, valid 30 days


def place_ask(api: Api, seller: User, product_id: str, price: int) -> str:
    image_id = uploaded_image(api, seller)
    body = {"price": price, "image_id": image_id, **voucher()}
    reply = api.call("POST", f"/api/products/{product_id}/sell-bids", body, token=seller.token)
    placed = ok(reply, 201)
    assert placed["status"] == "OPEN", placed
    return str(placed["sell_bid_id"])


def place_bid(api: Api, buyer: User, product_id: str, price: int) -> str:
    reply = api.call(
        "POST", f"/api/products/{product_id}/buy-bids", {"price": price}, token=buyer.token
    )
    placed = ok(reply, 201)
    assert placed["status"] == "OPEN", placed
    return str(placed["buy_bid_id"])


def buy_now(api: Api, buyer: User, product_id: str, price: int, coupon: str | None = None) -> Reply:
    body: dict[str, Any] = {"price": price}
    if coupon is not None:
        body["coupon_id"] = coupon
    return api.call("POST", f"/api/products/{product_id}/buy-now", body, token=buyer.token)


def sell_now(api: Api, seller: User, product_id: str, price: int, image_id: str) -> Reply:
    body = {"price": price, "image_id": image_id, **voucher()}
    return api.call("POST", f"/api/products/{product_id}/sell-now", body, token=seller.token)


def issue_coupon(api: Api, admin: User, user: User, amount: int, expires_in: timedelta) -> str:
    body = {
        "user_id": user.user_id,
        "name": "e2e coupon",
        "discount_amount": amount,
        "expires_at": (datetime.now(UTC) + expires_in).isoformat(),
    }
    created = ok(api.call("POST", "/api/admin/coupons", body, token=admin.token), 201)
    assert isinstance(created["coupon_id"], str)
    return str(created["coupon_id"])


@pytest.fixture(scope="module")
def admin(api: Api) -> User:
    body = {"email": ADMIN_EMAIL, "password": PASSWORD, "nickname": "admin"}
    reply = api.call("POST", "/api/auth/signup", body)
    if reply.status == 409:  # signed up earlier in the session
        reply = api.call("POST", "/api/auth/login", {"email": ADMIN_EMAIL, "password": PASSWORD})
        assert reply.status == 200, f"cannot sign in as {ADMIN_EMAIL}/{PASSWORD}: {reply}"
    else:
        assert reply.status == 201, str(reply)
    return User(reply.body["user_id"], reply.body["token"], ADMIN_EMAIL)


@pytest.fixture
def product(api: Api, admin: User) -> str:
    return new_product(api, admin)


# ---------------------------------------------------------------------------------------
# Social sign-in: ID tokens from the stack's own OpenID provider (`local`)


def social_sign_in(api: Api, id_token: str, **fields: str) -> Reply:
    return api.call("POST", "/api/auth/oidc/local", {"id_token": id_token, **fields})


def welcome_coupon(api: Api, user: User) -> str:
    """The user's welcome coupon, once the projector has issued it (through SQS)."""
    deadline = time.monotonic() + 30
    while True:
        reply = api.call("GET", "/api/me/coupons", token=user.token)
        assert reply.status == 200, str(reply)
        if reply.body["items"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (coupon,) = reply.body["items"]
    assert coupon["discount_amount"] == 1000, coupon
    return str(coupon["coupon_id"])


def test_a_social_sign_in_creates_the_account_then_signs_in_and_the_user_buys(
    api: Api, stack: Stack, product: str
) -> None:
    issuer, sub = stack.config.oidc_issuer, f"e2e-{uuid.uuid4().hex}"
    email = f"{sub}@example.com"
    token = local_id_token(issuer, sub, email=email, email_verified=True, nonce="n-e2e")
    first = ok(social_sign_in(api, token, nonce="n-e2e", nickname="social"), 201)
    assert first["created"] is True and first["token"]
    again = ok(social_sign_in(api, local_id_token(issuer, sub, email=email)), 200)
    assert (again["user_id"], again["created"]) == (first["user_id"], False)
    user = User(first["user_id"], again["token"], email)
    assert column(stack, "users", "password_hash", user.user_id) == "NULL"

    # A social-only account has no password to log in with.
    login = api.call("POST", "/api/auth/login", {"email": email, "password": PASSWORD})
    refused(login, 401, "invalid_credentials")

    coupon = welcome_coupon(api, user)
    charge(api, user, 5000)
    place_ask(api, sign_up(api), product, 4000)
    order = ok(buy_now(api, user, product, 4000, coupon), 201)
    assert (order["price"], order["discount"], order["paid"]) == (4000, 1000, 3000)


def test_forged_expired_misaddressed_and_unsigned_id_tokens_are_401_invalid_token(
    api: Api, stack: Stack
) -> None:
    issuer, sub = stack.config.oidc_issuer, f"e2e-{uuid.uuid4().hex}"
    good = local_id_token(issuer, sub)
    an_hour_ago = int(time.time()) - 3600
    bad = {
        "forged": forged(good),
        "expired": provider_token(issuer, sub, {"exp": an_hour_ago, "iat": an_hour_ago - 60}),
        "wrong audience": provider_token(issuer, sub, {"aud": "another-app"}),
        "wrong issuer": provider_token(issuer, sub, {"iss": "https://accounts.example.com"}),
        "alg none": unsigned(good),
        "HS256 with the public key": hs256_with_public_key(good, issuer),
        "not a JWT": "not-a-token",
    }
    for case, token in bad.items():
        problem = refused(social_sign_in(api, token), 401, "invalid_token")
        assert "token" in problem["detail"].lower(), (case, problem)
    identities = "SELECT COUNT(*) FROM giftmarket.user_identities WHERE provider = 'local'"
    assert stack.primary.sql(f"{identities} AND subject = '{sub}'") == "0"
    # The provider's real token still signs in.
    ok(social_sign_in(api, good), 201)
    refused(api.call("POST", "/api/auth/oidc/nobody", {"id_token": good}), 404)


# ---------------------------------------------------------------------------------------
# Accounts and points


def test_a_fresh_runner_answers_its_first_hundreds_of_commands_without_a_500(api: Api) -> None:
    """First in the module, so that it sees the runner's first commands: a warm container
    must not fail after some number of invocations."""
    user = sign_up(api)
    statuses = [
        api.call("POST", "/api/points/charge", {"amount": 1}, token=user.token).status
        for _ in range(150)
    ]
    assert [(i, s) for i, s in enumerate(statuses) if s != 200] == []
    assert charge(api, user, 1) == 151


def test_signup_is_201_with_user_id_and_token_and_login_is_200_for_the_same_user(
    api: Api,
) -> None:
    email = unique_email()
    body = {"email": email, "password": PASSWORD, "nickname": "newcomer"}
    created = ok(api.call("POST", "/api/auth/signup", body), 201)
    assert isinstance(created["user_id"], str) and isinstance(created["token"], str)

    login = {"email": email.upper(), "password": PASSWORD}
    signed_in = ok(api.call("POST", "/api/auth/login", login), 200)
    assert signed_in["user_id"] == created["user_id"]
    for token in (created["token"], signed_in["token"]):
        reply = api.call("POST", "/api/points/charge", {"amount": 1}, token=token)
        assert ok(reply, 200)["available_points"] >= 1


def test_signup_with_a_registered_email_in_any_case_is_409_email_taken(api: Api) -> None:
    user = sign_up(api)
    for email in (user.email, user.email.upper(), f"  {user.email}  "):
        body = {"email": email, "password": "another-password", "nickname": "copycat"}
        refused(api.call("POST", "/api/auth/signup", body), 409, "email_taken")
    # The first account keeps its password.
    login = {"email": user.email, "password": PASSWORD}
    assert ok(api.call("POST", "/api/auth/login", login), 200)["user_id"] == user.user_id


def test_login_with_a_wrong_password_or_unknown_email_is_401(api: Api) -> None:
    user = sign_up(api)
    for email, password in ((user.email, "wrong-password"), (unique_email(), PASSWORD)):
        reply = api.call("POST", "/api/auth/login", {"email": email, "password": password})
        refused(reply, 401)
        assert reply.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_charge_is_200_with_the_new_available_points(api: Api, stack: Stack) -> None:
    user = sign_up(api)
    assert charge(api, user, 1000) == 1000
    assert charge(api, user, 234) == 1234
    assert balances(stack, user) == (1234, 0, 0)


def test_charge_retried_with_the_same_idempotency_key_replays_the_first_answer_and_charges_once(
    api: Api, stack: Stack
) -> None:
    user = sign_up(api)
    key = f"charge-{uuid.uuid4()}"
    first = api.call("POST", "/api/points/charge", {"amount": 500}, token=user.token, key=key)
    retry = api.call("POST", "/api/points/charge", {"amount": 500}, token=user.token, key=key)
    assert ok(first, 200) == {"available_points": 500}
    assert ok(retry, 200) == {"available_points": 500}
    assert retry.raw == first.raw
    assert retry.headers["x-consistency-token"] == first.headers["x-consistency-token"]
    # The balance grew once: the next charge starts from 500.
    assert charge(api, user, 1) == 501
    assert balances(stack, user) == (501, 0, 0)


def test_simultaneous_retries_with_one_idempotency_key_charge_once(api: Api, stack: Stack) -> None:
    user = sign_up(api)
    key = f"racing-{uuid.uuid4()}"

    def attempt(_: int) -> Reply:
        return api.call("POST", "/api/points/charge", {"amount": 300}, token=user.token, key=key)

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(attempt, range(6)))
    assert {r.status for r in replies} == {200}, [str(r) for r in replies]
    assert {r.raw for r in replies} == {b'{"available_points":300}'}
    assert charge(api, user, 1) == 301


def test_an_idempotency_key_reused_with_another_request_is_422_and_changes_nothing(
    api: Api, product: str
) -> None:
    user = sign_up(api)
    key = f"reused-{uuid.uuid4()}"
    charge(api, user, 100, key=key)
    another_body = api.call(
        "POST", "/api/points/charge", {"amount": 200}, token=user.token, key=key
    )
    refused(another_body, 422, "idempotency_key_reused")
    another_route = api.call(
        "POST", f"/api/products/{product}/buy-bids", {"price": 50}, token=user.token, key=key
    )
    refused(another_route, 422, "idempotency_key_reused")
    assert charge(api, user, 1) == 101


def test_idempotency_keys_belong_to_one_user(api: Api) -> None:
    key = f"shared-{uuid.uuid4()}"
    first, second = sign_up(api), sign_up(api)
    assert charge(api, first, 100, key=key) == 100
    assert charge(api, second, 100, key=key) == 100
    assert charge(api, second, 1) == 101


# ---------------------------------------------------------------------------------------
# Catalog: products, likes, coupons, images


def test_admin_registers_a_product_201(api: Api, admin: User, stack: Stack) -> None:
    name = f"Latte {uuid.uuid4().hex[:8]}"
    body = {"name": name, "brand": "Starbucks", "category": "coffee", "face_value": 5500}
    product_id = ok(api.call("POST", "/api/products", body, token=admin.token), 201)["product_id"]
    assert stack.primary.sql(
        f"SELECT name, brand, category, face_value FROM giftmarket.products"
        f" WHERE id = '{product_id}'"
    ).split("\t") == [name, "Starbucks", "coffee", "5500"]


def test_a_non_admin_gets_403_on_admin_routes_and_nothing_is_created(
    api: Api, stack: Stack
) -> None:
    user = sign_up(api)
    name = f"Forged {uuid.uuid4().hex}"
    body = {"name": name, "brand": "b", "category": "c", "face_value": 1000}
    refused(api.call("POST", "/api/products", body, token=user.token), 403, "forbidden")
    coupon = {
        "user_id": user.user_id,
        "name": "free money",
        "discount_amount": 10**9,
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    refused(api.call("POST", "/api/admin/coupons", coupon, token=user.token), 403, "forbidden")
    assert (
        stack.primary.sql(f"SELECT COUNT(*) FROM giftmarket.products WHERE name = '{name}'") == "0"
    )
    assert (
        stack.primary.sql(
            f"SELECT COUNT(*) FROM giftmarket.coupons WHERE user_id = '{user.user_id}'"
            " AND kind = 'admin'"
        )
        == "0"
    )


def test_like_and_unlike_are_204_and_doing_either_twice_is_the_same_as_once(
    api: Api, stack: Stack, product: str
) -> None:
    user = sign_up(api)
    path = f"/api/products/{product}/likes"
    likes = f"SELECT COUNT(*) FROM giftmarket.product_likes WHERE product_id = '{product}'"
    for _ in range(2):
        ok(api.call("POST", path, token=user.token), 204)
        assert column(stack, "products", "like_count", product) == "1"
        assert stack.primary.sql(likes) == "1"
    for _ in range(2):
        ok(api.call("DELETE", path, token=user.token), 204)
        assert column(stack, "products", "like_count", product) == "0"
        assert stack.primary.sql(likes) == "0"


def test_liking_a_product_that_does_not_exist_is_404(api: Api) -> None:
    user = sign_up(api)
    missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    refused(api.call("POST", f"/api/products/{missing}/likes", token=user.token), 404)


def test_an_upload_slot_is_201_with_a_presigned_url_that_takes_the_png(
    api: Api, stack: Stack
) -> None:
    user = sign_up(api)
    image_id, url = upload_slot(api, user)
    assert column(stack, "images", "status", image_id) == "PENDING"
    put = put_object(url, png(), "image/png")
    assert put.status == 200, str(put)


def test_an_upload_slot_for_a_gif_is_409_image_unusable(api: Api) -> None:
    user = sign_up(api)
    reply = api.call("POST", "/api/images", {"content_type": "image/gif"}, token=user.token)
    refused(reply, 409, "image_unusable")


# ---------------------------------------------------------------------------------------
# The order book


def test_a_sell_bid_is_201_open_and_cancelling_it_is_204_then_409_bid_not_open(
    api: Api, stack: Stack, product: str
) -> None:
    seller = sign_up(api)
    ask = place_ask(api, seller, product, 4000)
    assert column(stack, "sell_bids", "status", ask) == "OPEN"
    ok(api.call("DELETE", f"/api/sell-bids/{ask}", token=seller.token), 204)
    assert column(stack, "sell_bids", "status", ask) == "CANCELLED"
    refused(api.call("DELETE", f"/api/sell-bids/{ask}", token=seller.token), 409, "bid_not_open")
    # A cancelled ask is no longer for sale.
    buyer = sign_up(api)
    charge(api, buyer, 5000)
    refused(buy_now(api, buyer, product, 4000), 409, "no_matching_bid")


def test_a_buy_bid_is_201_and_escrows_its_price_and_cancelling_it_is_204_and_returns_it(
    api: Api, stack: Stack, product: str
) -> None:
    buyer = sign_up(api)
    charge(api, buyer, 5000)
    bid = place_bid(api, buyer, product, 3000)
    assert balances(stack, buyer) == (2000, 3000, 0)
    ok(api.call("DELETE", f"/api/buy-bids/{bid}", token=buyer.token), 204)
    assert balances(stack, buyer) == (5000, 0, 0)
    refused(api.call("DELETE", f"/api/buy-bids/{bid}", token=buyer.token), 409, "bid_not_open")
    assert balances(stack, buyer) == (5000, 0, 0)
    assert column(stack, "buy_bids", "status", bid) == "CANCELLED"


def test_buy_now_is_201_paid_and_pays_the_ask_price_not_the_buyers_limit(
    api: Api, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    ask = place_ask(api, seller, product, 4000)
    charge(api, buyer, 5000)
    purchase = ok(buy_now(api, buyer, product, 4500), 201)
    assert isinstance(purchase["order_id"], str)
    assert {k: purchase[k] for k in ("price", "discount", "paid", "status")} == {
        "price": 4000,
        "discount": 0,
        "paid": 4000,
        "status": "PAID",
    }
    assert balances(stack, buyer) == (1000, 0, 0)
    assert balances(stack, seller) == (0, 0, 4000)
    assert column(stack, "sell_bids", "status", ask) == "MATCHED"
    assert column(stack, "orders", "status", purchase["order_id"]) == "PAID"


def test_buy_now_takes_the_cheapest_ask_and_never_the_buyers_own(
    api: Api, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    own = place_ask(api, buyer, product, 3000)
    cheapest = place_ask(api, seller, product, 3500)
    place_ask(api, seller, product, 3900)
    charge(api, buyer, 10_000)
    purchase = ok(buy_now(api, buyer, product, 4000), 201)
    assert purchase["price"] == 3500
    assert column(stack, "sell_bids", "status", cheapest) == "MATCHED"
    assert column(stack, "sell_bids", "status", own) == "OPEN"


def test_buy_now_with_a_coupon_pays_the_price_minus_the_discount(
    api: Api, admin: User, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    coupon = issue_coupon(api, admin, buyer, 1000, timedelta(days=7))
    place_ask(api, seller, product, 3000)
    charge(api, buyer, 2000)
    purchase = ok(buy_now(api, buyer, product, 3000, coupon), 201)
    assert (purchase["price"], purchase["discount"], purchase["paid"]) == (3000, 1000, 2000)
    assert purchase["status"] == "PAID"
    assert balances(stack, buyer) == (0, 0, 0)
    # The platform pays the discount: the seller gets the whole price.
    assert balances(stack, seller) == (0, 0, 3000)
    assert column(stack, "coupons", "status", coupon) == "USED"


def test_a_coupon_discount_is_capped_at_the_price(
    api: Api, admin: User, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    coupon = issue_coupon(api, admin, buyer, 5000, timedelta(days=7))
    place_ask(api, seller, product, 3000)
    purchase = ok(buy_now(api, buyer, product, 3000, coupon), 201)
    assert (purchase["price"], purchase["discount"], purchase["paid"]) == (3000, 3000, 0)
    assert balances(stack, buyer) == (0, 0, 0)
    assert balances(stack, seller) == (0, 0, 3000)


def test_a_used_coupon_is_409_coupon_unavailable_and_the_ask_stays_open(
    api: Api, admin: User, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    coupon = issue_coupon(api, admin, buyer, 500, timedelta(days=7))
    place_ask(api, seller, product, 1000)
    second = place_ask(api, seller, product, 1000)
    charge(api, buyer, 5000)
    ok(buy_now(api, buyer, product, 1000, coupon), 201)
    refused(buy_now(api, buyer, product, 1000, coupon), 409, "coupon_unavailable")
    assert balances(stack, buyer) == (4500, 0, 0)
    assert column(stack, "sell_bids", "status", second) == "OPEN"


def test_someone_elses_coupon_is_409_coupon_unavailable_and_stays_available(
    api: Api, admin: User, stack: Stack, product: str
) -> None:
    seller, buyer, owner = sign_up(api), sign_up(api), sign_up(api)
    coupon = issue_coupon(api, admin, owner, 500, timedelta(days=7))
    ask = place_ask(api, seller, product, 1000)
    charge(api, buyer, 5000)
    refused(buy_now(api, buyer, product, 1000, coupon), 409, "coupon_unavailable")
    assert balances(stack, buyer) == (5000, 0, 0)
    assert column(stack, "sell_bids", "status", ask) == "OPEN"
    assert column(stack, "coupons", "status", coupon) == "AVAILABLE"


def test_an_expired_coupon_is_409_coupon_unavailable(
    api: Api, admin: User, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    coupon = issue_coupon(api, admin, buyer, 500, -timedelta(minutes=1))
    ask = place_ask(api, seller, product, 1000)
    charge(api, buyer, 5000)
    refused(buy_now(api, buyer, product, 1000, coupon), 409, "coupon_unavailable")
    assert balances(stack, buyer) == (5000, 0, 0)
    assert column(stack, "sell_bids", "status", ask) == "OPEN"


def test_an_unknown_coupon_is_409_coupon_unavailable(api: Api, stack: Stack, product: str) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    place_ask(api, seller, product, 1000)
    charge(api, buyer, 5000)
    refused(buy_now(api, buyer, product, 1000, "01ARZ3NDEKTSV4RRFFQ69G5FAV"), 409)
    assert balances(stack, buyer) == (5000, 0, 0)


def test_sell_now_into_a_buy_bid_is_201_and_the_buyer_confirms_200_completed(
    api: Api, stack: Stack, product: str
) -> None:
    seller, buyer, stranger = sign_up(api), sign_up(api), sign_up(api)
    charge(api, buyer, 6000)
    bid = place_bid(api, buyer, product, 5000)
    image = uploaded_image(api, seller)
    sale = ok(sell_now(api, seller, product, 4800, image), 201)
    assert isinstance(sale["order_id"], str)
    assert (sale["price"], sale["status"]) == (5000, "PAID")
    order = sale["order_id"]
    assert balances(stack, buyer) == (1000, 0, 0)
    assert balances(stack, seller) == (0, 0, 5000)
    assert column(stack, "buy_bids", "status", bid) == "MATCHED"
    assert column(stack, "images", "status", image) == "ATTACHED"

    confirm = f"/api/orders/{order}/confirm"
    refused(api.call("POST", confirm, token=stranger.token), 404, "not_found")
    seller_confirm = api.call("POST", confirm, token=seller.token)
    assert 400 <= seller_confirm.status < 500, str(seller_confirm)
    assert column(stack, "orders", "status", order) == "PAID"

    confirmed = ok(api.call("POST", confirm, token=buyer.token), 200)
    assert confirmed == {"order_id": order, "status": "COMPLETED"}
    assert column(stack, "orders", "status", order) == "COMPLETED"
    refused(api.call("POST", confirm, token=buyer.token), 409)


def test_buy_now_and_sell_now_without_a_matching_bid_are_409_no_matching_bid(
    api: Api, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    charge(api, buyer, 10_000)
    ask = place_ask(api, seller, product, 4000)
    refused(buy_now(api, buyer, product, 3999), 409, "no_matching_bid")
    # Only the buyer's own ask matches: still nothing to buy.
    refused(buy_now(api, seller, product, 4000), 409, "no_matching_bid")
    assert column(stack, "sell_bids", "status", ask) == "OPEN"

    bid = place_bid(api, buyer, product, 3000)
    image = uploaded_image(api, seller)
    refused(sell_now(api, seller, product, 3001, image), 409, "no_matching_bid")
    assert column(stack, "images", "status", image) == "PENDING"
    assert column(stack, "buy_bids", "status", bid) == "OPEN"
    assert balances(stack, buyer) == (7000, 3000, 0)


def test_bids_that_would_cross_the_book_are_409_crosses_book(
    api: Api, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    charge(api, buyer, 10_000)
    place_ask(api, seller, product, 4000)
    for price in (4000, 4001):
        reply = api.call(
            "POST", f"/api/products/{product}/buy-bids", {"price": price}, token=buyer.token
        )
        refused(reply, 409, "crosses_book")
    assert balances(stack, buyer) == (10_000, 0, 0)
    place_bid(api, buyer, product, 3500)
    image = uploaded_image(api, seller)
    for price in (3500, 3499):
        body = {"price": price, "image_id": image, **voucher()}
        reply = api.call("POST", f"/api/products/{product}/sell-bids", body, token=seller.token)
        refused(reply, 409, "crosses_book")
    assert column(stack, "images", "status", image) == "PENDING"


def test_not_enough_points_is_409_insufficient_points_and_changes_nothing(
    api: Api, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    charge(api, buyer, 2999)
    reply = api.call(
        "POST", f"/api/products/{product}/buy-bids", {"price": 3000}, token=buyer.token
    )
    refused(reply, 409, "insufficient_points")
    ask = place_ask(api, seller, product, 3000)
    refused(buy_now(api, buyer, product, 3000), 409, "insufficient_points")
    assert balances(stack, buyer) == (2999, 0, 0)
    assert balances(stack, seller) == (0, 0, 0)
    assert column(stack, "sell_bids", "status", ask) == "OPEN"


# ---------------------------------------------------------------------------------------
# Vouchers, disputes and their resolution (inspection is automatic on this runner)


def test_a_voucher_is_listed_once_and_one_expiring_too_soon_is_409_voucher_expiring(
    api: Api, stack: Stack, product: str
) -> None:
    seller, rival, buyer = sign_up(api), sign_up(api), sign_up(api)
    listed = voucher()
    path = f"/api/products/{product}/sell-bids"
    body = {"price": 9000, "image_id": uploaded_image(api, seller), **listed}
    ask = str(ok(api.call("POST", path, body, token=seller.token), 201)["sell_bid_id"])
    assert column(stack, "sell_bids", "barcode_last4", ask) == listed["barcode"][-4:]
    assert column(stack, "sell_bids", "expires_on", ask) == listed["expires_on"]

    # The same barcode, whoever lists it and however: refused, and nothing changes.
    charge(api, buyer, 5000)
    bid = place_bid(api, buyer, product, 5000)
    image = uploaded_image(api, rival)
    again = {"price": 9500, "image_id": image, **listed}
    refused(api.call("POST", path, again, token=rival.token), 409, "voucher_duplicate")
    sold = {"price": 5000, "image_id": uploaded_image(api, rival), **listed}
    reply = api.call("POST", f"/api/products/{product}/sell-now", sold, token=rival.token)
    refused(reply, 409, "voucher_duplicate")
    assert column(stack, "buy_bids", "status", bid) == "OPEN"
    assert column(stack, "images", "status", image) == "PENDING"
    assert balances(stack, rival) == (0, 0, 0)

    # Valid until the day after tomorrow in Korea: 1 day short of the 3 days asked.
    expiring = {"price": 9500, "image_id": image, **voucher(days=2)}
    refused(api.call("POST", path, expiring, token=rival.token), 409, "voucher_expiring")
    assert column(stack, "images", "status", image) == "PENDING"

    # Cancelled, the voucher may be listed again.
    ok(api.call("DELETE", f"/api/sell-bids/{ask}", token=seller.token), 204)
    ok(api.call("POST", path, again, token=rival.token), 201)


def test_a_buyers_dispute_is_200_disputed_and_an_admin_refund_pays_everything_back(
    api: Api, admin: User, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    coupon = issue_coupon(api, admin, buyer, 1000, timedelta(days=7))
    listed = voucher()
    body = {"price": 4000, "image_id": uploaded_image(api, seller), **listed}
    ok(api.call("POST", f"/api/products/{product}/sell-bids", body, token=seller.token), 201)
    charge(api, buyer, 5000)
    order = ok(buy_now(api, buyer, product, 4000, coupon), 201)["order_id"]
    assert (balances(stack, buyer), balances(stack, seller)) == ((2000, 0, 0), (0, 0, 4000))

    dispute = f"/api/orders/{order}/dispute"
    reason = {"reason": "the barcode was already used at the store"}
    refused(api.call("POST", dispute, reason, token=seller.token), 409, "order_not_disputable")
    disputed = ok(api.call("POST", dispute, reason, token=buyer.token), 200)
    assert disputed == {"order_id": order, "status": "DISPUTED"}
    refused(api.call("POST", dispute, reason, token=buyer.token), 409, "order_not_disputable")
    confirm = api.call("POST", f"/api/orders/{order}/confirm", token=buyer.token)
    refused(confirm, 409, "order_not_confirmable")
    # Not an order waiting for inspection: nothing to decide there.
    inspection = {"result": "pass"}
    reply = api.call("POST", f"/api/admin/orders/{order}/inspection", inspection, token=admin.token)
    refused(reply, 409, "order_not_pending")
    assert column(stack, "orders", "status", order) == "DISPUTED"

    resolution = f"/api/admin/orders/{order}/resolution"
    refund = {"decision": "refund", "note": "the brand confirmed it was used"}
    resolved = ok(api.call("POST", resolution, refund, token=admin.token), 200)
    assert resolved == {"order_id": order, "status": "REFUNDED"}
    assert (balances(stack, buyer), balances(stack, seller)) == ((5000, 0, 0), (0, 0, 0))
    assert column(stack, "coupons", "status", coupon) == "AVAILABLE"
    again = api.call("POST", resolution, {"decision": "reject"}, token=admin.token)
    refused(again, 409, "order_not_pending")
    assert column(stack, "orders", "status", order) == "REFUNDED"

    # A refunded voucher stays blocked; the coupon pays for another order.
    relist = {"price": 4000, "image_id": uploaded_image(api, seller), **listed}
    reply = api.call("POST", f"/api/products/{product}/sell-bids", relist, token=seller.token)
    refused(reply, 409, "voucher_duplicate")
    place_ask(api, seller, product, 4000)
    assert ok(buy_now(api, buyer, product, 4000, coupon), 201)["paid"] == 3000


def test_a_rejected_dispute_completes_the_order(
    api: Api, admin: User, stack: Stack, product: str
) -> None:
    seller, buyer = sign_up(api), sign_up(api)
    place_ask(api, seller, product, 3000)
    charge(api, buyer, 3000)
    order = ok(buy_now(api, buyer, product, 3000), 201)["order_id"]
    reason = {"reason": "does not scan"}
    ok(api.call("POST", f"/api/orders/{order}/dispute", reason, token=buyer.token), 200)
    resolution = f"/api/admin/orders/{order}/resolution"
    rejected = ok(api.call("POST", resolution, {"decision": "reject"}, token=admin.token), 200)
    assert rejected == {"order_id": order, "status": "COMPLETED"}
    assert column(stack, "orders", "status", order) == "COMPLETED"
    assert (balances(stack, buyer), balances(stack, seller)) == ((0, 0, 0), (0, 0, 3000))


# ---------------------------------------------------------------------------------------
# Images that cannot be attached


def test_attaching_an_image_that_was_never_uploaded_is_409_image_unusable(
    api: Api, stack: Stack, product: str
) -> None:
    seller = sign_up(api)
    image, _ = upload_slot(api, seller)
    body = {"price": 4000, "image_id": image, **voucher()}
    reply = api.call("POST", f"/api/products/{product}/sell-bids", body, token=seller.token)
    refused(reply, 409, "image_unusable")
    assert column(stack, "images", "status", image) == "PENDING"


def test_an_image_of_5_mib_is_accepted_and_one_byte_more_is_409_image_unusable(
    api: Api, stack: Stack, product: str
) -> None:
    seller = sign_up(api)
    too_big = uploaded_image(api, seller, size=MAX_IMAGE_BYTES + 1)
    body = {"price": 4000, "image_id": too_big, **voucher()}
    reply = api.call("POST", f"/api/products/{product}/sell-bids", body, token=seller.token)
    refused(reply, 409, "image_unusable")
    assert column(stack, "images", "status", too_big) == "PENDING"

    just_fits = uploaded_image(api, seller, size=MAX_IMAGE_BYTES)
    body = {"price": 4000, "image_id": just_fits, **voucher()}
    ok(api.call("POST", f"/api/products/{product}/sell-bids", body, token=seller.token), 201)
    assert column(stack, "images", "status", just_fits) == "ATTACHED"


def test_an_upload_declaring_another_content_type_never_gives_a_usable_image(
    api: Api, stack: Stack, product: str
) -> None:
    seller = sign_up(api)
    image, url = upload_slot(api, seller)
    put = put_object(url, b"<html>not an image</html>", "text/html")
    if put.status == 200:  # the store did not enforce the signed header; attaching must
        body = {"price": 4000, "image_id": image, **voucher()}
        reply = api.call("POST", f"/api/products/{product}/sell-bids", body, token=seller.token)
        refused(reply, 409, "image_unusable")
    else:
        assert put.status == 403, str(put)
    assert column(stack, "images", "status", image) == "PENDING"


def test_an_image_attaches_once(api: Api, product: str) -> None:
    seller = sign_up(api)
    image = uploaded_image(api, seller)
    body = {"price": 4000, "image_id": image, **voucher()}
    path = f"/api/products/{product}/sell-bids"
    ok(api.call("POST", path, body, token=seller.token), 201)
    again = body | voucher()  # another voucher: only the image is used already
    refused(api.call("POST", path, again, token=seller.token), 409, "image_unusable")


# ---------------------------------------------------------------------------------------
# Other users' objects do not exist


def test_another_users_bids_orders_and_images_are_404_like_missing_ones(
    api: Api, stack: Stack, product: str
) -> None:
    owner, other, seller = sign_up(api), sign_up(api), sign_up(api)
    missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    charge(api, owner, 10_000)
    place_bid(api, owner, product, 1000)
    order = ok(sell_now(api, seller, product, 1000, uploaded_image(api, seller)), 201)["order_id"]
    ask = place_ask(api, owner, product, 9000)
    bid = place_bid(api, owner, product, 900)
    image = uploaded_image(api, owner)

    for route, theirs in (
        ("DELETE /api/sell-bids/{}", ask),
        ("DELETE /api/buy-bids/{}", bid),
        ("POST /api/orders/{}/confirm", order),
    ):
        method, path = route.split(" ")
        not_yours = refused(api.call(method, path.format(theirs), token=other.token), 404)
        not_there = refused(api.call(method, path.format(missing), token=other.token), 404)
        assert not_yours["code"] == not_there["code"] == "not_found"
        assert not_yours["detail"] == not_there["detail"]

    body = {"price": 9500, "image_id": image, **voucher()}
    path = f"/api/products/{product}/sell-bids"
    refused(api.call("POST", path, body, token=other.token), 404, "not_found")
    assert column(stack, "sell_bids", "status", ask) == "OPEN"
    assert column(stack, "buy_bids", "status", bid) == "OPEN"
    assert column(stack, "orders", "status", order) == "PAID"
    assert column(stack, "images", "status", image) == "PENDING"
    # The owner can still use everything.
    ok(api.call("POST", path, body, token=owner.token), 201)


def test_a_body_over_the_gateways_limit_is_413_before_it_is_read(api: Api, stack: Stack) -> None:
    user = sign_up(api)
    port = int(api.base.rsplit(":", 1)[1])
    head = (
        "POST /api/points/charge HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {user.token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {6 * MIB + 1}\r\n\r\n"
    )
    # The gateway answers from the headers alone, as API Gateway does; no body is sent.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1] == b"413", answer[:300]
    assert balances(stack, user) == (0, 0, 0)


def test_an_encoded_slash_after_an_id_is_a_404_problem_not_a_redirect(api: Api) -> None:
    user = sign_up(api)
    charge(api, user, 1000)
    missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    for path in (f"/api/sell-bids/{missing}%2F", f"/api/buy-bids/{missing}%2F"):
        refused(api.call("DELETE", path, token=user.token), 404)
