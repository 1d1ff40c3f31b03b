"""The primary stopped under the command Lambda handler: 503 with Retry-After, then success
again once it is back, without restarting anything."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.settings import Settings
from giftmarket_local.runner import LambdaContext, build_http_api_event, load_handler
from giftmarket_local.stack import Stack
from giftmarket_local.template import read_application

SPEC = read_application().functions["CommandApiFunction"]


@pytest.fixture
def handler(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., dict[str, Any]]]:
    container: Container = bootstrap(make_settings())
    set_container(container)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _, lambda_handler = load_handler(SPEC)
    route = next(r for r in read_application().routes if r.path == "/api/auth/signup")

    def signup(email: str) -> dict[str, Any]:
        body = json.dumps({"email": email, "password": "password123", "nickname": "n"}).encode()
        event = build_http_api_event(
            method="POST",
            raw_path=route.path,
            raw_query="",
            headers=[("content-type", "application/json")],
            body=body,
            route=route,
            path_parameters={},
        )
        result: dict[str, Any] = lambda_handler(
            event, LambdaContext(SPEC.logical_id, SPEC.memory_mb, SPEC.timeout_seconds)
        )
        return result

    yield signup
    asyncio.set_event_loop(None)
    loop.close()
    set_container(None)
    container.close()


def test_commands_answer_503_while_the_primary_is_down_and_recover_after(
    handler: Callable[[str], dict[str, Any]], stack: Stack
) -> None:
    assert handler(f"{uuid.uuid4().hex}@before.io")["statusCode"] == 201

    assert stack.primary.process.stop()
    try:
        during = handler(f"{uuid.uuid4().hex}@during.io")
    finally:
        stack.primary.process.start()
    stack.wait_replica_caught_up()

    assert during["statusCode"] == 503
    assert during["headers"]["content-type"] == "application/problem+json"
    assert int(during["headers"]["retry-after"]) > 0
    assert json.loads(during["body"])["code"] == "database_unavailable"
    # The pooled connections died with the old server process; new ones are made on demand.
    assert handler(f"{uuid.uuid4().hex}@after.io")["statusCode"] == 201
