"""A secret that cannot be read (Secrets Manager throttling, its endpoint down, a secret
deleted by mistake) is a 503 with Retry-After, as a database outage is: never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.fakes import FakeUnitOfWork

from giftmarket.bootstrap import Container, set_container
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker

MISSING = "arn:aws:secretsmanager:us-east-1:000000000000:secret:gone-AbCdEf"


@pytest.fixture
def container(secretsmanager: Any) -> Iterator[Container]:
    settings = Settings(fingerprint_key_secret_arn=MISSING, jwt_secret_arn=MISSING)
    built = Container(settings, unit_of_work=FakeUnitOfWork)
    set_container(built)
    yield built
    set_container(None)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/auth/signup", {"idempotency-key": "signup-1"}),  # the fingerprint key
        ("/api/auth/signup", {}),  # the JWT signing key
    ],
)
def test_an_unreadable_secret_is_503_with_retry_after(
    container: Container, path: str, headers: dict[str, str]
) -> None:
    body = {"email": "s@example.com", "password": "password-123", "nickname": "s"}
    reply = LocalInvoker().http(
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )
    assert reply.status == 503, reply
    assert reply.body["code"] == "secrets_unavailable"
    assert int(reply.headers["retry-after"]) >= 1
