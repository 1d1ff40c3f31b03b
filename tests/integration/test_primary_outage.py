"""The primary stopped under the command Lambda handler: 503 with Retry-After, then success
again once it is back, without restarting anything."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest

from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.stack import Stack


@pytest.fixture
def signup(make_settings: Callable[..., Settings]) -> Iterator[Callable[[str], Reply]]:
    container: Container = bootstrap(make_settings())
    set_container(container)
    invoker = LocalInvoker()

    def sign_up(email: str) -> Reply:
        body = json.dumps({"email": email, "password": "password123", "nickname": "n"})
        return invoker.http(
            "POST",
            "/api/auth/signup",
            body=body.encode(),
            headers={"content-type": "application/json"},
        )

    yield sign_up
    set_container(None)
    container.close()


def test_commands_answer_503_while_the_primary_is_down_and_recover_after(
    signup: Callable[[str], Reply], stack: Stack
) -> None:
    assert signup(f"{uuid.uuid4().hex}@before.io").status == 201

    assert stack.primary.process.stop()
    try:
        during = signup(f"{uuid.uuid4().hex}@during.io")
    finally:
        stack.primary.process.start()
    stack.wait_replica_caught_up()

    assert during.status == 503
    assert during.headers["content-type"] == "application/problem+json"
    assert int(during.headers["retry-after"]) > 0
    assert during.body["code"] == "database_unavailable"
    # The pooled connections died with the old server process; new ones are made on demand.
    assert signup(f"{uuid.uuid4().hex}@after.io").status == 201
