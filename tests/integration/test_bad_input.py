"""Hostile and malformed input to the command Lambda handler, in process, on the real stack.

Each request is an API Gateway HTTP API v2 event built as the gateway builds it, handed to
the handler template.yaml names. Whatever the input, the answer is a 4xx problem detail with
a machine-readable `code` — never a 500 — and the database is exactly as it was before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.stack import Stack
from giftmarket_local.template import read_application

APPLICATION = read_application()
FUNCTION = APPLICATION.functions["CommandApiFunction"]
INVOKER = LocalInvoker(APPLICATION)
ADMIN_EMAIL = f"bad-input-admin-{uuid.uuid4().hex[:12]}@example.com"
PASSWORD = "password123"
MISSING = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # a well-formed ULID that names nothing
MIB = 1024 * 1024
# A voucher's facts, valid on their own: these requests are refused for something else.
VOUCHER = {"barcode": "8801234567890", "expires_on": "2099-12-31"}
ASK = {"price": 1000, "image_id": MISSING, **VOUCHER}


# ---------------------------------------------------------------------------------------
# Invoking the handler


def invoke(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Reply:
    """`path` is the raw (percent-encoded) path; path parameters arrive decoded, as in AWS."""
    resolved = APPLICATION.resolve(method, path.split("?")[0])
    assert resolved is not None, f"{method} {path} is not routed"
    assert resolved[0].function == FUNCTION.logical_id, resolved[0]
    return INVOKER.http(method, path, body=body, headers=headers)


def call(
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    sent = {"content-type": "application/json"} if body is not None else {}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    return invoke(method, path, b"" if body is None else json.dumps(body).encode(), sent)


def assert_problem(reply: Reply, *statuses: int) -> dict[str, Any]:
    assert reply.status in statuses, str(reply)
    assert reply.headers.get("content-type") == "application/problem+json", str(reply)
    problem: dict[str, Any] = reply.body
    assert problem["status"] == reply.status, problem
    assert isinstance(problem.get("code"), str) and problem["code"], problem
    if reply.status == 401:
        assert reply.headers.get("www-authenticate", "").startswith("Bearer"), str(reply)
    return problem


# ---------------------------------------------------------------------------------------
# The stack, the container and the people in it


@pytest.fixture(scope="module")
def container(
    make_settings: Callable[..., Settings],
) -> Iterator[Container]:
    settings = make_settings(
        admin_emails=ADMIN_EMAIL, password_hash_time_cost=1, password_hash_memory_kib=1024
    )
    built = bootstrap(settings)
    set_container(built)
    yield built
    set_container(None)
    built.close()


@dataclass(frozen=True)
class Ids:
    user_id: str
    user_token: str
    admin_id: str
    admin_token: str
    product: str
    secret: str

    def fill(self, text: str) -> str:
        return text.format(
            product=self.product, user_id=self.user_id, product_lower=self.product.lower()
        )


def sign_up(email: str) -> tuple[str, str]:
    reply = call(
        "POST", "/api/auth/signup", {"email": email, "password": PASSWORD, "nickname": "n"}
    )
    assert reply.status == 201, str(reply)
    return reply.body["user_id"], reply.body["token"]


@pytest.fixture(scope="module")
def ids(container: Container) -> Ids:
    user_id, user_token = sign_up(f"bad-input-{uuid.uuid4().hex}@example.com")
    admin_id, admin_token = sign_up(ADMIN_EMAIL)
    body = {"name": "Bad input latte", "brand": "b", "category": "c", "face_value": 1000}
    reply = call("POST", "/api/products", body, token=admin_token)
    assert reply.status == 201, str(reply)
    product = reply.body["product_id"]
    return Ids(user_id, user_token, admin_id, admin_token, product, container.jwt_secret)


@pytest.fixture(scope="module")
def tables(stack: Stack, container: Container) -> list[str]:
    names = stack.primary.sql("SHOW TABLES FROM giftmarket").split()
    return [f"giftmarket.{name}" for name in names if name != "alembic_version"]


@pytest.fixture
def unchanged(stack: Stack, tables: list[str]) -> Iterator[None]:
    """The test's requests leave every table of the write model exactly as it was."""

    def snapshot() -> str:
        return stack.primary.sql(f"CHECKSUM TABLE {', '.join(tables)} EXTENDED")

    before = snapshot()
    yield
    assert snapshot() == before, "a refused request changed the database"


# ---------------------------------------------------------------------------------------
# Tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(sub: object, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": sub, "iss": "giftmarket", "iat": now, "exp": now + 3600} | overrides


def hs_token(payload: dict[str, object], secret: str, alg: str = "HS256") -> str:
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{b64url(signature)}"


def unsigned_token(payload: dict[str, object]) -> str:
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(payload).encode())}."


def tampered(token: str, sub: str) -> str:
    head, _, signature = token.split(".")
    return f"{head}.{b64url(json.dumps(claims(sub)).encode())}.{signature}"


# Authorization header values (None: no header); each builder gets the module's ids. The
# forged ones claim to be the admin: accepting any of them would be a privilege escalation.
BAD_AUTHORIZATION: dict[str, Callable[[Ids], str | None]] = {
    "absent": lambda i: None,
    "empty": lambda i: "",
    "bearer-alone": lambda i: "Bearer",
    "bearer-blank": lambda i: "Bearer    ",
    "basic-scheme": lambda i: "Basic dXNlcjpwYXNzd29yZA==",
    "token-scheme-valid-token": lambda i: f"Token {i.user_token}",
    "valid-token-no-scheme": lambda i: i.user_token,
    "garbage": lambda i: "Bearer garbage",
    "three-garbage-parts": lambda i: "Bearer a.b.c",
    "two-tokens": lambda i: f"Bearer {i.user_token} {i.user_token}",
    "non-ascii": lambda i: f"Bearer é{i.user_token}",
    "other-key": lambda i: "Bearer " + hs_token(claims(i.admin_id), "another-secret-" + "x" * 32),
    "alg-none": lambda i: "Bearer " + unsigned_token(claims(i.admin_id)),
    "alg-none-signature-kept": lambda i: (
        "Bearer " + unsigned_token(claims(i.admin_id)) + i.user_token.rsplit(".", 1)[1]
    ),
    "expired": lambda i: (
        "Bearer "
        + hs_token(
            claims(i.user_id, iat=int(time.time()) - 7200, exp=int(time.time()) - 60), i.secret
        )
    ),
    "hs512-right-key": lambda i: "Bearer " + hs_token(claims(i.admin_id), i.secret, "HS512"),
    "no-exp": lambda i: (
        "Bearer " + hs_token({k: v for k, v in claims(i.user_id).items() if k != "exp"}, i.secret)
    ),
    "wrong-issuer": lambda i: "Bearer " + hs_token(claims(i.user_id, iss="someone-else"), i.secret),
    "empty-sub": lambda i: "Bearer " + hs_token(claims(""), i.secret),
    "numeric-sub": lambda i: "Bearer " + hs_token(claims(12345), i.secret),
    "user-token-with-admin-claims": lambda i: "Bearer " + tampered(i.user_token, i.admin_id),
}

# Every authenticated command with a body that is valid apart from the caller.
AUTHENTICATED_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/points/charge", {"amount": 1}),
    ("POST", "/api/products", {"name": "n", "brand": "b", "category": "c", "face_value": 1}),
    ("POST", "/api/products/{product}/likes", None),
    ("DELETE", "/api/products/{product}/likes", None),
    ("POST", "/api/images", {"content_type": "image/png"}),
    ("POST", "/api/products/{product}/sell-bids", ASK),
    ("DELETE", f"/api/sell-bids/{MISSING}", None),
    ("POST", "/api/products/{product}/buy-bids", {"price": 1}),
    ("DELETE", f"/api/buy-bids/{MISSING}", None),
    ("POST", "/api/products/{product}/buy-now", {"price": 1}),
    ("POST", "/api/products/{product}/sell-now", ASK),
    ("POST", f"/api/orders/{MISSING}/confirm", None),
    ("POST", f"/api/orders/{MISSING}/dispute", {"reason": "the barcode was used"}),
    ("POST", f"/api/admin/orders/{MISSING}/inspection", {"result": "pass"}),
    ("POST", f"/api/admin/orders/{MISSING}/resolution", {"decision": "reject"}),
    (
        "POST",
        "/api/admin/coupons",
        {
            "user_id": MISSING,
            "name": "n",
            "discount_amount": 1,
            "expires_at": "2030-01-01T00:00:00Z",
        },
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    AUTHENTICATED_ROUTES,
    ids=[f"{m} {p}" for m, p, _ in AUTHENTICATED_ROUTES],
)
@pytest.mark.parametrize("authorization", list(BAD_AUTHORIZATION))
def test_a_request_without_a_valid_token_is_401_with_www_authenticate(
    ids: Ids, unchanged: None, authorization: str, method: str, path: str, body: Any
) -> None:
    value = BAD_AUTHORIZATION[authorization](ids)
    headers = {} if value is None else {"authorization": value}
    problem = assert_problem(call(method, ids.fill(path), body, headers=headers), 401)
    assert problem["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [r for r in AUTHENTICATED_ROUTES if MISSING not in r[1]],
    ids=[f"{m} {p}" for m, p, _ in AUTHENTICATED_ROUTES if MISSING not in p],
)
def test_a_well_signed_token_of_an_account_that_does_not_exist_is_401(
    ids: Ids, unchanged: None, method: str, path: str, body: Any
) -> None:
    token = hs_token(claims(MISSING), ids.secret)
    reply = call(method, ids.fill(path), body, token=token)
    if "buy-now" in path or "sell-now" in path:
        # These look for a matching bid before the caller; an empty book answers first.
        assert_problem(reply, 401, 409)
    else:
        assert_problem(reply, 401)


def test_a_well_formed_token_is_accepted_on_the_same_route(ids: Ids) -> None:
    """The control for the 401 tests: the real token and secret pass."""
    token = hs_token(claims(ids.user_id), ids.secret)
    reply = call("POST", "/api/points/charge", {"amount": 1}, token=token)
    assert reply.status == 200, str(reply)


def test_a_non_admin_is_403_on_admin_routes(ids: Ids, unchanged: None) -> None:
    for name in ("product", "coupon", "inspection", "resolution"):
        route = ROUTES_BY_NAME[name]
        body = json.dumps(valid_body(ids, route)).encode()
        headers = {"authorization": f"Bearer {ids.user_token}"}
        assert assert_problem(send(ids, route, body, headers), 403)["code"] == "forbidden"


# ---------------------------------------------------------------------------------------
# Bodies


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    who: str  # "user", "admin" or "anonymous"
    template: dict[str, Any]  # a valid body; "{email}" and "{user_id}" are filled in
    amount: str | None = None  # the field holding points, if any


PRODUCTS = "/api/products/{product}"
ROUTES = [
    Route(
        "signup",
        "POST",
        "/api/auth/signup",
        who="anonymous",
        template={"email": "{email}", "password": PASSWORD, "nickname": "n"},
    ),
    Route(
        "login",
        "POST",
        "/api/auth/login",
        who="anonymous",
        template={"email": "{email}", "password": PASSWORD},
    ),
    Route(
        "charge",
        "POST",
        "/api/points/charge",
        who="user",
        template={"amount": 1},
        amount="amount",
    ),
    Route(
        "product",
        "POST",
        "/api/products",
        who="admin",
        template={"name": "n", "brand": "b", "category": "c", "face_value": 1000},
        amount="face_value",
    ),
    Route("image", "POST", "/api/images", who="user", template={"content_type": "image/png"}),
    Route(
        "sell-bid",
        "POST",
        f"{PRODUCTS}/sell-bids",
        who="user",
        template=ASK,
        amount="price",
    ),
    Route(
        "buy-bid",
        "POST",
        f"{PRODUCTS}/buy-bids",
        who="user",
        template={"price": 1},
        amount="price",
    ),
    Route(
        "buy-now",
        "POST",
        f"{PRODUCTS}/buy-now",
        who="user",
        template={"price": 1},
        amount="price",
    ),
    Route(
        "sell-now",
        "POST",
        f"{PRODUCTS}/sell-now",
        who="user",
        template=ASK,
        amount="price",
    ),
    Route(
        "coupon",
        "POST",
        "/api/admin/coupons",
        who="admin",
        template={
            "user_id": "{user_id}",
            "name": "n",
            "discount_amount": 100,
            "expires_at": "2030-01-01T00:00:00Z",
        },
        amount="discount_amount",
    ),
    Route(
        "dispute",
        "POST",
        f"/api/orders/{MISSING}/dispute",
        who="user",
        template={"reason": "the barcode was already used"},
    ),
    Route(
        "inspection",
        "POST",
        f"/api/admin/orders/{MISSING}/inspection",
        who="admin",
        # A failed inspection needs its reason, so each field here is required.
        template={"result": "fail", "reason": "the barcode does not scan"},
    ),
    Route(
        "resolution",
        "POST",
        f"/api/admin/orders/{MISSING}/resolution",
        who="admin",
        template={"decision": "refund"},  # the note is optional
    ),
]
ROUTES_BY_NAME = {route.name: route for route in ROUTES}
AMOUNT_ROUTES = [route for route in ROUTES if route.amount]


def send(ids: Ids, route: Route, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    sent = {"content-type": "application/json"}
    if route.who != "anonymous":
        sent["authorization"] = (
            f"Bearer {ids.user_token if route.who == 'user' else ids.admin_token}"
        )
    sent.update(headers or {})
    return invoke(route.method, ids.fill(route.path), body, sent)


def valid_body(ids: Ids, route: Route, **changes: Any) -> dict[str, Any]:
    """The route's template with placeholders filled; changes set (or, with ..., drop) fields."""
    email = f"bad-input-{uuid.uuid4().hex}@example.com"
    body = {
        k: v.replace("{email}", email).replace("{user_id}", ids.user_id)
        if isinstance(v, str)
        else v
        for k, v in route.template.items()
    }
    for name, value in changes.items():
        if value is ...:
            body.pop(name, None)
        else:
            body[name] = value
    return body


MALFORMED_BODIES: dict[str, bytes] = {
    "empty": b"",
    "truncated": b'{"amount": 1',
    "lone-brace": b"{",
    "missing-value": b'{"amount":}',
    "trailing-comma": b'{"amount": 1,}',
    "single-quotes": b"{'amount': 1}",
    "not-json": b"amount=1",
    "invalid-utf8": b'{"amount": 1, "x": "\xff\xfe"}',
    "array": b"[]",
    "array-of-object": b'[{"amount": 1}]',
    "string": b'"amount"',
    "null": b"null",
    "number": b"1",
    "true": b"true",
    "empty-object": b"{}",
    "deeply-nested-arrays": b"[" * 100_000,
    "deeply-nested-objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("body", list(MALFORMED_BODIES))
def test_a_body_that_is_not_the_expected_json_object_is_refused(
    ids: Ids, unchanged: None, route: Route, body: str
) -> None:
    assert_problem(send(ids, route, MALFORMED_BODIES[body]), 400, 422)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_json_sent_as_text_plain_is_refused(ids: Ids, unchanged: None, route: Route) -> None:
    body = json.dumps(valid_body(ids, route)).encode()
    assert_problem(send(ids, route, body, {"content-type": "text/plain"}), 400, 415, 422)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_an_unknown_field_is_refused(ids: Ids, unchanged: None, route: Route) -> None:
    for extra in ({"is_admin": True}, {"available_points": 10**9}, {"": 1}):
        body = valid_body(ids, route) | extra
        assert_problem(send(ids, route, json.dumps(body).encode()), 400, 422)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_each_missing_required_field_is_refused(ids: Ids, unchanged: None, route: Route) -> None:
    for name in route.template:
        body = valid_body(ids, route, **{name: ...})
        assert_problem(send(ids, route, json.dumps(body).encode()), 400, 422)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_null_and_wrongly_typed_fields_are_refused(ids: Ids, unchanged: None, route: Route) -> None:
    for name, value in route.template.items():
        wrong: list[Any] = [None, [value], {"value": value}]
        wrong += [1, 1.5, True] if isinstance(value, str) else ["1", 1.0, True, False]
        if name == "expires_at":
            wrong.remove(1)  # a Unix timestamp is a time: pydantic's documented reading
            wrong.remove(1.5)
        for bad in wrong:
            body = valid_body(ids, route, **{name: bad})
            assert_problem(send(ids, route, json.dumps(body).encode()), 400, 422)


BAD_AMOUNTS: dict[str, str] = {
    # JSON text of the amount, spliced into an otherwise valid body
    "zero": "0",
    "negative": "-1",
    "over-10^9": str(10**9 + 1),
    "10^30": str(10**30),
    "minus-10^30": str(-(10**30)),
    "5000-digits": "9" * 5000,
    "string": '"100"',
    "string-10^9": '"1000000000"',
    "float": "1.5",
    "integral-float": "1.0",
    "exponent": "1e3",
    "1e400": "1e400",
    "nan": "NaN",
    "infinity": "Infinity",
    "minus-infinity": "-Infinity",
    "true": "true",
    "false": "false",
    "null": "null",
    "array": "[1]",
    "object": '{"value": 1}',
    "leading-zero": "01",
    "plus-sign": "+1",
    "hex": "0x10",
}


@pytest.mark.parametrize("route", AMOUNT_ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("amount", list(BAD_AMOUNTS))
def test_a_non_positive_absurd_or_non_integer_amount_is_refused(
    ids: Ids, unchanged: None, route: Route, amount: str
) -> None:
    assert route.amount is not None
    body = json.dumps(valid_body(ids, route, **{route.amount: "__AMOUNT__"}))
    raw = body.replace('"__AMOUNT__"', BAD_AMOUNTS[amount]).encode()
    assert_problem(send(ids, route, raw), 400, 422)


def test_refused_charges_leave_available_points_unchanged(ids: Ids, stack: Stack) -> None:
    def available() -> int:
        return int(
            stack.primary.sql(
                f"SELECT available_points FROM giftmarket.users WHERE id = '{ids.user_id}'"
            )
        )

    before = available()
    route = ROUTES_BY_NAME["charge"]
    for amount in BAD_AMOUNTS.values():
        assert send(ids, route, f'{{"amount": {amount}}}'.encode()).status in (400, 422)
    assert available() == before
    reply = call("POST", "/api/points/charge", {"amount": 1}, token=ids.user_token)
    assert reply.status == 200 and reply.body == {"available_points": before + 1}, str(reply)


def test_the_largest_amount_is_accepted(ids: Ids) -> None:
    """The control for the amount tests: 10^9 itself is a valid amount."""
    user_id, token = sign_up(f"bad-input-{uuid.uuid4().hex}@example.com")
    reply = call("POST", "/api/points/charge", {"amount": 10**9}, token=token)
    assert (reply.status, reply.body) == (200, {"available_points": 10**9}), str(reply)


# Strings: (route, field, value) that must be refused.
LONE_SURROGATE = "\ud800"
NUL = "\x00"
BAD_STRINGS: list[tuple[str, str, Any]] = [
    ("signup", "nickname", "n" * 31),
    ("signup", "nickname", ""),
    ("signup", "nickname", "   "),
    ("signup", "nickname", "\t\n"),
    ("signup", "nickname", LONE_SURROGATE),
    ("signup", "nickname", f"nick{LONE_SURROGATE}name"),
    ("signup", "nickname", f"nick{NUL}"),
    ("signup", "nickname", "n" * MIB),
    ("signup", "password", "p" * 7),
    ("signup", "password", "p" * 129),
    ("signup", "password", ""),
    ("signup", "password", LONE_SURROGATE * 8),
    ("signup", "password", f"password{NUL}"),
    ("signup", "email", ""),
    ("signup", "email", "   "),
    ("signup", "email", "not-an-email"),
    ("signup", "email", "two@at@example.com"),
    ("signup", "email", "spaced name@example.com"),
    ("signup", "email", "e" * 250 + "@example.com"),
    ("signup", "email", f"{LONE_SURROGATE}@example.com"),
    ("signup", "email", f"a{NUL}b@example.com"),
    ("login", "password", ""),
    ("login", "password", "p" * 129),
    ("login", "password", LONE_SURROGATE),
    ("login", "email", ""),
    ("login", "email", f"{LONE_SURROGATE}@example.com"),
    ("product", "name", "n" * 101),
    ("product", "name", ""),
    ("product", "name", "   "),
    ("product", "name", LONE_SURROGATE),
    ("product", "name", f"latte{NUL}"),
    ("product", "brand", "b" * 51),
    ("product", "brand", ""),
    ("product", "brand", LONE_SURROGATE),
    ("product", "category", "c" * 51),
    ("product", "category", " "),
    ("product", "category", NUL),
    ("image", "content_type", ""),
    ("image", "content_type", "  "),
    ("image", "content_type", "image/" + "p" * 100),
    ("image", "content_type", f"image/png{LONE_SURROGATE}"),
    ("image", "content_type", f"image/png{NUL}"),
    ("sell-bid", "image_id", ""),
    ("sell-bid", "image_id", "é"),
    ("sell-bid", "image_id", "../" + MISSING),
    ("sell-bid", "image_id", "A" * 65),
    ("sell-bid", "image_id", LONE_SURROGATE),
    ("sell-bid", "image_id", NUL),
    ("sell-now", "image_id", ""),
    ("sell-now", "image_id", f"{MISSING}/../x"),
    ("sell-bid", "barcode", ""),
    ("sell-bid", "barcode", "1234567"),
    ("sell-bid", "barcode", "1" * 33),
    ("sell-bid", "barcode", "1234 5678"),
    ("sell-bid", "barcode", "12345678\n"),
    ("sell-bid", "barcode", "+12345678"),
    ("sell-bid", "barcode", "ABCDEFGH"),
    ("sell-bid", "barcode", "١٢٣٤٥٦٧٨"),  # digits, but not 0-9
    ("sell-bid", "barcode", "１２３４５６７８"),
    ("sell-bid", "barcode", f"1234567{NUL}"),
    ("sell-bid", "barcode", "1" * MIB),
    ("sell-now", "barcode", "1234567"),
    ("sell-now", "barcode", LONE_SURROGATE * 8),
    ("sell-bid", "expires_on", ""),
    ("sell-bid", "expires_on", "not a date"),
    ("sell-bid", "expires_on", "2099-02-30"),
    ("sell-bid", "expires_on", "20991231"),
    ("sell-bid", "expires_on", "2099-12-31T00:00:00Z"),
    ("sell-bid", "expires_on", " 2099-12-31"),
    ("sell-bid", "expires_on", "99999-01-01"),
    ("sell-now", "expires_on", "2099-13-01"),
    ("sell-now", "expires_on", LONE_SURROGATE),
    ("dispute", "reason", ""),
    ("dispute", "reason", "   "),
    ("dispute", "reason", "r" * 501),
    ("dispute", "reason", LONE_SURROGATE),
    ("dispute", "reason", f"used{NUL}"),
    ("inspection", "result", "PASS"),
    ("inspection", "result", "maybe"),
    ("inspection", "result", ""),
    ("inspection", "reason", ""),
    ("inspection", "reason", "   "),
    ("inspection", "reason", "r" * 501),
    ("inspection", "reason", LONE_SURROGATE),
    ("resolution", "decision", "REFUND"),
    ("resolution", "decision", "approve"),
    ("resolution", "decision", ""),
    ("resolution", "note", "n" * 501),
    ("resolution", "note", LONE_SURROGATE),
    ("resolution", "note", f"note{NUL}"),
    ("buy-now", "coupon_id", ""),
    ("buy-now", "coupon_id", "é"),
    ("buy-now", "coupon_id", "A" * 65),
    ("buy-now", "coupon_id", LONE_SURROGATE),
    ("coupon", "user_id", ""),
    ("coupon", "user_id", "é"),
    ("coupon", "user_id", LONE_SURROGATE),
    ("coupon", "name", "n" * 101),
    ("coupon", "name", "   "),
    ("coupon", "name", f"coupon{NUL}"),
    ("coupon", "expires_at", ""),
    ("coupon", "expires_at", "not a date"),
    ("coupon", "expires_at", "2030-01-01T00:00:00"),
    ("coupon", "expires_at", "2030-13-01T00:00:00Z"),
    ("coupon", "expires_at", "2030-01-01T00:00:00+25:00"),
    ("coupon", "expires_at", "0001-01-01T00:00:00+01:00"),
    ("coupon", "expires_at", "9999-12-31T23:59:59-01:00"),
    ("coupon", "expires_at", LONE_SURROGATE),
]


@pytest.mark.parametrize(
    ("route_name", "field_name", "value"),
    BAD_STRINGS,
    ids=[f"{r}.{f}={v[:12]!r}+{len(v)}" for r, f, v in BAD_STRINGS],
)
def test_an_oversized_empty_or_unstorable_string_is_refused(
    ids: Ids, unchanged: None, route_name: str, field_name: str, value: str
) -> None:
    route = ROUTES_BY_NAME[route_name]
    body = json.dumps(valid_body(ids, route, **{field_name: value})).encode()
    assert_problem(send(ids, route, body), 400, 422)


def test_strings_at_their_limits_are_accepted(ids: Ids) -> None:
    """The control for the string tests: the limits themselves are valid."""
    for password in ("p" * 8, "p" * 128):
        email = f"bad-input-{uuid.uuid4().hex}@example.com"
        body = {"email": email, "password": password, "nickname": "n" * 30}
        assert call("POST", "/api/auth/signup", body).status == 201
    product = {"name": "n" * 100, "brand": "b" * 50, "category": "c" * 50, "face_value": 1}
    assert call("POST", "/api/products", product, token=ids.admin_token).status == 201


def test_an_image_type_other_than_png_jpeg_or_webp_is_409_image_unusable(
    ids: Ids, unchanged: None
) -> None:
    for content_type in ("image/gif", "text/html", "application/octet-stream", "image/svg+xml"):
        reply = call("POST", "/api/images", {"content_type": content_type}, token=ids.user_token)
        assert assert_problem(reply, 409)["code"] == "image_unusable"


@pytest.mark.parametrize(
    "expires_at", ["0500-01-01T00:00:00Z", "1000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
)
def test_a_coupon_expiring_at_an_extreme_time_is_issued_or_refused_never_a_500(
    ids: Ids, expires_at: str
) -> None:
    body = valid_body(ids, ROUTES_BY_NAME["coupon"], expires_at=expires_at)
    reply = call("POST", "/api/admin/coupons", body, token=ids.admin_token)
    if reply.status != 201:
        assert_problem(reply, 400, 422)


def test_a_coupon_for_a_user_that_does_not_exist_is_404(ids: Ids, unchanged: None) -> None:
    body = valid_body(ids, ROUTES_BY_NAME["coupon"], user_id=MISSING)
    assert_problem(call("POST", "/api/admin/coupons", body, token=ids.admin_token), 404)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_body_larger_than_the_api_accepts_is_refused(
    ids: Ids, unchanged: None, route: Route
) -> None:
    body = valid_body(ids, route) | {"padding": "x" * (7 * MIB)}
    assert_problem(send(ids, route, json.dumps(body).encode()), 400, 413, 422)


# ---------------------------------------------------------------------------------------
# Path ids


PATH_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/products/{id}/likes", None),
    ("DELETE", "/api/products/{id}/likes", None),
    ("POST", "/api/products/{id}/sell-bids", ASK),
    ("POST", "/api/products/{id}/buy-bids", {"price": 1}),
    ("POST", "/api/products/{id}/buy-now", {"price": 1}),
    ("POST", "/api/products/{id}/sell-now", ASK),
    ("DELETE", "/api/sell-bids/{id}", None),
    ("DELETE", "/api/buy-bids/{id}", None),
    ("POST", "/api/orders/{id}/confirm", None),
    ("POST", "/api/orders/{id}/dispute", {"reason": "the barcode was used"}),
    ("POST", "/api/admin/orders/{id}/inspection", {"result": "pass"}),
    ("POST", "/api/admin/orders/{id}/resolution", {"decision": "reject"}),
]
BAD_PATH_IDS: dict[str, str] = {
    # the raw, percent-encoded path segment
    "e-acute": "%C3%A9",
    "dot-dot": "..",
    "dot-dot-encoded-slash": "..%2F",
    "encoded-slash": f"{MISSING[:13]}%2F{MISSING[13:]}",
    "encoded-trailing-slash": f"{MISSING}%2F",
    "lowercase-ulid": MISSING.lower(),
    "our-product-lowercased": "{product_lower}",
    "27-chars": MISSING + "0",
    "25-chars": MISSING[:-1],
    "ulid-with-I": "I" * 26,
    "nul": "%00",
    "invalid-utf8": "%FF%FE",
    "encoded-lone-surrogate": "%ED%A0%80",
    "sql": "%27%20OR%201%3D1%20--",
    "long": "A" * 2000,
    "emoji": "%F0%9F%8E%81",
    "space": "%20",
}


@pytest.mark.parametrize(
    ("method", "path", "body"), PATH_ROUTES, ids=[f"{m} {p}" for m, p, _ in PATH_ROUTES]
)
@pytest.mark.parametrize("bad_id", list(BAD_PATH_IDS))
def test_a_path_id_that_is_not_one_of_ours_is_404(
    ids: Ids, unchanged: None, bad_id: str, method: str, path: str, body: Any
) -> None:
    segment = ids.fill(BAD_PATH_IDS[bad_id])
    reply = call(method, path.replace("{id}", segment), body, token=ids.user_token)
    assert_problem(reply, 404)


# ---------------------------------------------------------------------------------------
# Idempotency-Key


BAD_IDEMPOTENCY_KEYS: dict[str, str] = {
    "empty": "",
    "space": " ",
    "inner-space": "my key",
    "tab": "key\tvalue",
    "256-chars": "k" * 256,
    "non-ascii": "열쇠-key",
    "e-acute": "clé",
}


@pytest.mark.parametrize("key", list(BAD_IDEMPOTENCY_KEYS))
def test_a_malformed_idempotency_key_is_422_and_nothing_runs(
    ids: Ids, unchanged: None, key: str
) -> None:
    headers = {"idempotency-key": BAD_IDEMPOTENCY_KEYS[key]}
    reply = call("POST", "/api/points/charge", {"amount": 1}, token=ids.user_token, headers=headers)
    assert assert_problem(reply, 400, 422)["code"] == "invalid_idempotency_key"


def test_an_idempotency_key_of_255_printable_characters_works_and_replays(ids: Ids) -> None:
    """The control for the key tests: the longest valid key is accepted and replayed."""
    key = (uuid.uuid4().hex + "!~" * 200)[:255]
    headers = {"idempotency-key": key}
    first = call("POST", "/api/points/charge", {"amount": 1}, token=ids.user_token, headers=headers)
    again = call("POST", "/api/points/charge", {"amount": 1}, token=ids.user_token, headers=headers)
    assert first.status == again.status == 200, (str(first), str(again))
    assert first.raw == again.raw
