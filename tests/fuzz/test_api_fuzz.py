"""API fuzzing: schemathesis generates requests from the OpenAPI of both FastAPI apps, and
each one goes through the function's real Lambda handler, as API Gateway would send it
(template route → API Gateway v2 event → Powertools → Mangum → FastAPI), against the test
stack. Every answer must be no server error and conform to the schema: a documented status
code, the documented content type, a body matching the documented model.

Generation is bounded and reproducible: derandomized Hypothesis, MAX_EXAMPLES per operation
in both positive (valid) and negative (invalid) modes, no shrinking, no example database.
Most requests carry a real token (the admin's on admin routes, a user's elsewhere) and many
carry real ids, so the fuzzer gets past authentication and lookups into the handlers: the
user's orders are in every state a decision route acts on (delivered, disputed, waiting for
inspection), so the buyer's dispute and the admins' inspection and resolution routes reach
their domain rules, and their successes are checked against the schema too.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from requests.structures import CaseInsensitiveDict
from schemathesis import Case, CheckFunction, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.support.handler_client import PNG, http_put
from tests.support.oidc_local import local_id_token
from tests.support.vouchers import voucher_facts

from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.http.command_app import create_command_app
from giftmarket.http.query_app import create_query_app
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.stack import Stack

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 15
ADMIN_EMAIL = "admin@giftmarket.local"
PASSWORD = "password123"
# Routes only an admin may call: they get the admin's token, every other route a user's.
ADMIN_ROUTES = {("POST", "/api/products")}
SOCIAL_SIGN_IN = "POST /api/auth/oidc/{provider}"


def is_admin_route(method: str, path: str) -> bool:
    return (method, path) in ADMIN_ROUTES or path.startswith("/api/admin/")


# Never sent by a real client: the placeholder host of the generated URLs.
BASE_URL = "http://lambda.invalid"


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def load(app_schema: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_dict(app_schema)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
        no_shrink=True,
        database="none",
    )
    # The coverage phase's boundary values stay; its requests with methods the operation does
    # not have go nowhere here: API Gateway routes only the template's method + path pairs.
    schema.config.phases.coverage.unexpected_methods = set()
    return schema


command_schema = load(create_command_app().openapi())
query_schema = load(create_query_app().openapi())

fuzz_settings = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=list(hypothesis.HealthCheck),
)


# ---------------------------------------------------------------------------------------
# The Lambda handlers


def send(invoker: LocalInvoker, case: Case[Any]) -> Response:
    """The case as one HTTP request through the Lambda handler of the route it hits."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    request = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        cookies=kwargs.get("cookies"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
        files=kwargs.get("files"),
    ).prepare()
    raw = request.body
    body = raw.encode() if isinstance(raw, str) else raw if isinstance(raw, bytes) else b""
    headers = {name: str(value) for name, value in request.headers.items()}
    started = time.perf_counter()
    reply = invoker.http(str(request.method), request.path_url, body=body, headers=headers)
    elapsed = time.perf_counter() - started
    return to_response(reply, request, elapsed)


def to_response(reply: Reply, request: requests.PreparedRequest, elapsed: float) -> Response:
    try:
        message = HTTPStatus(reply.status).phrase
    except ValueError:
        message = ""
    return Response(
        status_code=reply.status,
        headers={name: [value] for name, value in reply.headers.items()},
        content=reply.raw,
        request=request,
        elapsed=elapsed,
        verify=True,
        message=message,
    )


# ---------------------------------------------------------------------------------------
# Users and real ids


@dataclass
class World:
    invoker: LocalInvoker
    admin: str
    user: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    # Ids for one route's path parameters, over `ids`: objects in the state it acts on.
    route_ids: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    counters: dict[str, Iterator[int]] = field(default_factory=dict)
    issuer: str = ""  # the stack's OpenID provider, for real ID tokens

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        data = b"" if body is None else as_json(body)
        reply = self.invoker.http(method, path, body=data, headers=headers)
        assert reply.status < 300, f"{method} {path}: {reply}"
        return reply.body

    def prepare(self, case: Case[Any]) -> None:
        """A real token on most cases (every fifth keeps what was generated: none or junk),
        and on positive cases a real id in every other path parameter."""
        operation = case.operation
        key = f"{operation.method.upper()} {operation.path}"
        n = next(self.counters.setdefault(key, itertools.count()))
        names = {p.name.lower() for p in operation.iter_parameters() if p.location == "header"}
        if "authorization" in names and n % 5 != 4:
            admin = is_admin_route(operation.method.upper(), operation.path)
            token = self.admin if admin else self.user
            if case.headers is None:
                case.headers = CaseInsensitiveDict()
            case.headers["authorization"] = f"Bearer {token}"
        positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
        if positive and n % 2 == 0 and case.path_parameters:
            for name in list(case.path_parameters):
                known = self.route_ids.get(key, {}).get(name) or self.ids.get(name)
                if known:
                    case.path_parameters[name] = known[n // 2 % len(known)]
        if positive and n % 2 == 0 and key == SOCIAL_SIGN_IN and isinstance(case.body, dict):
            # A real ID token, so the success answers are checked against the schema too
            # (without a nonce: a generated one would not be the token's).
            case.body["id_token"] = local_id_token(self.issuer, f"fuzz-{uuid.uuid4().hex}")
            case.body.pop("nonce", None)
            if case.headers is not None:  # a generated key is seldom a valid one
                case.headers.pop("Idempotency-Key", None)


def as_json(body: Any) -> bytes:
    return json.dumps(body).encode()


def sign_up(invoker: LocalInvoker, email: str) -> str:
    headers = {"content-type": "application/json"}
    payload = {"email": email, "password": PASSWORD, "nickname": "fuzz"}
    reply = invoker.http("POST", "/api/auth/signup", body=as_json(payload), headers=headers)
    if reply.status == 409:  # the admin, signed up by an earlier test
        payload = {"email": email, "password": PASSWORD}
        reply = invoker.http("POST", "/api/auth/login", body=as_json(payload), headers=headers)
    assert reply.status in (200, 201), str(reply)
    token: str = reply.body["token"]
    return token


@pytest.fixture(scope="module")
def world(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[World]:
    # No events queue: what the fuzzer writes stays in the outbox, out of other tests' way.
    settings = make_settings(events_queue_url=None)
    container: Container = bootstrap(settings)
    # The same database under manual inspection, for orders that wait for an admin.
    inspecting: Container = bootstrap(
        make_settings(events_queue_url=None, inspection_mode="manual")
    )
    set_container(container)
    try:
        invoker = LocalInvoker()
        admin = sign_up(invoker, ADMIN_EMAIL)
        user = sign_up(invoker, f"{uuid.uuid4().hex}@fuzz.test")
        seller = sign_up(invoker, f"{uuid.uuid4().hex}@fuzz.test")
        w = World(invoker, admin, user, issuer=stack.config.oidc_issuer)
        product = w.call(
            "POST",
            "/api/products",
            {"name": "Fuzz gift", "brand": "Fuzz", "category": "fuzz", "face_value": 5000},
            admin,
        )["product_id"]
        w.call("POST", "/api/points/charge", {"amount": 100_000}, user)

        def ask(price: int) -> str:
            slot = w.call("POST", "/api/images", {"content_type": "image/png"}, seller)
            assert http_put(slot["upload_url"], PNG, "image/png")[0] == 200
            body = {"price": price, "image_id": slot["image_id"], **voucher_facts()}
            sell_bid: str = w.call("POST", f"/api/products/{product}/sell-bids", body, seller)[
                "sell_bid_id"
            ]
            return sell_bid

        def bought() -> str:
            ask(3000)
            order_id: str = w.call(
                "POST", f"/api/products/{product}/buy-now", {"price": 3000}, user
            )["order_id"]
            return order_id

        # Trades between the seller and the user: the user's orders, delivered (PAID) and
        # disputed, and (under manual inspection) waiting for inspection; an open ask of
        # the seller's and a buy bid of the user's, so id-taking routes see real objects.
        # A few of each, as each decision takes one out of the state it needs.
        delivered = [bought() for _ in range(4)]
        disputed = [bought() for _ in range(3)]
        for order_id in disputed:
            w.call("POST", f"/api/orders/{order_id}/dispute", {"reason": "fuzz"}, user)
        set_container(inspecting)
        waiting = [bought() for _ in range(3)]
        set_container(container)
        sell_bid = ask(9000)
        buy_bid = w.call("POST", f"/api/products/{product}/buy-bids", {"price": 1000}, user)[
            "buy_bid_id"
        ]
        w.ids = {
            "product_id": [product],
            "order_id": [*delivered, *disputed, *waiting],
            "sell_bid_id": [sell_bid],
            "buy_bid_id": [buy_bid],
            "provider": ["local"],
        }
        w.route_ids = {
            "POST /api/orders/{order_id}/confirm": {"order_id": delivered[:2]},
            "POST /api/orders/{order_id}/dispute": {"order_id": delivered[2:]},
            "POST /api/admin/orders/{order_id}/inspection": {"order_id": waiting},
            "POST /api/admin/orders/{order_id}/resolution": {"order_id": disputed},
        }
        yield w
        total = sum(w.statuses.values())
        print(f"\nfuzzed {total} requests through the Lambda handlers:")
        for (operation, status), count in sorted(w.statuses.items()):
            print(f"  {operation:45} {status} x{count}")
    finally:
        set_container(None)
        container.close()
        inspecting.close()


# ---------------------------------------------------------------------------------------
# The fuzz tests: one per operation of each app


def fuzz_one(world: World, case: Case[Any]) -> None:
    world.prepare(case)
    response = send(world.invoker, case)
    world.statuses[
        (f"{case.operation.method.upper()} {case.operation.path}", response.status_code)
    ] += 1
    case.validate_response(response, checks=CHECKS, headers=dict(case.headers or {}))


@command_schema.parametrize()  # type: ignore[untyped-decorator]
@fuzz_settings
def test_command_api_fuzz(world: World, case: Case[Any]) -> None:
    fuzz_one(world, case)


@query_schema.parametrize()  # type: ignore[untyped-decorator]
@fuzz_settings
def test_query_api_fuzz(world: World, case: Case[Any]) -> None:
    fuzz_one(world, case)


# ---------------------------------------------------------------------------------------
# Statuses the fuzzing found undocumented once (400 for a body that is not JSON, 403 for a
# non-admin on the admin routes), each checked directly.

COMMAND_OPENAPI = create_command_app().openapi()


def body_operations() -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in COMMAND_OPENAPI["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    ]


def test_unparsable_bodies_are_documented(world: World) -> None:
    undocumented = []
    for method, path in body_operations():
        target = path
        for name, values in world.ids.items():
            target = target.replace("{" + name + "}", values[0])
        token = world.admin if is_admin_route(method, path) else world.user
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        reply = world.invoker.http(method, target, body=b"\xff{", headers=headers)
        assert reply.status < 500, f"{method} {path}: {reply}"
        assert reply.headers["content-type"] == "application/problem+json", str(reply)
        documented = COMMAND_OPENAPI["paths"][path][method.lower()]["responses"]
        if str(reply.status) not in documented:
            undocumented.append(f"{method} {path} -> {reply.status}")
    assert not undocumented, undocumented


QUERY_OPENAPI = create_query_app().openapi()
ADMIN_OPERATIONS = sorted(
    (method.upper(), path, openapi)
    for openapi in (COMMAND_OPENAPI, QUERY_OPENAPI)
    for path, operations in openapi["paths"].items()
    for method in operations
    if is_admin_route(method.upper(), path)
)
# A body valid but for the caller, for each admin command.
ADMIN_BODIES: dict[str, Any] = {
    "/api/products": {"name": "x", "brand": "x", "category": "x", "face_value": 1000},
    "/api/admin/coupons": {
        "user_id": "x",
        "name": "x",
        "discount_amount": 100,
        "expires_at": "2030-01-01T00:00:00Z",
    },
    "/api/admin/orders/{order_id}/inspection": {"result": "fail", "reason": "x"},
    "/api/admin/orders/{order_id}/resolution": {"decision": "refund"},
}


def test_the_admin_routes_are_the_expected_ones() -> None:
    """So that a new admin route is not fuzzed with a user's token by mistake."""
    assert [(method, path) for method, path, _ in ADMIN_OPERATIONS] == sorted(
        [
            ("POST", "/api/products"),
            ("POST", "/api/admin/coupons"),
            ("POST", "/api/admin/orders/{order_id}/inspection"),
            ("POST", "/api/admin/orders/{order_id}/resolution"),
            ("GET", "/api/admin/inspections"),
            ("GET", "/api/admin/disputes"),
        ]
    )


@pytest.mark.parametrize(
    "method, path, openapi", ADMIN_OPERATIONS, ids=[f"{m} {p}" for m, p, _ in ADMIN_OPERATIONS]
)
def test_admin_routes_document_their_refusal_of_users(
    world: World, method: str, path: str, openapi: dict[str, Any]
) -> None:
    headers = {"authorization": f"Bearer {world.user}"}
    body = b""
    if method != "GET":
        headers["content-type"] = "application/json"
        body = as_json(ADMIN_BODIES[path])
    # The user's own order, even: the decisions are the admins' alone.
    target = path.replace("{order_id}", world.ids["order_id"][0])
    reply = world.invoker.http(method, target, body=body, headers=headers)
    assert reply.status == 403, str(reply)
    documented = openapi["paths"][path][method.lower()]["responses"]
    assert "403" in documented, f"{method} {path}: 403 not in {sorted(documented)}"
