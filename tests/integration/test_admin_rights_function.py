"""The operator's path to admin rights on a deployed stage: the migration function's
`admin` event, run here as Lambda would run it, against the test stack's primary."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from tests.support.stack import sign_up_directly
from tests.unit.cfn_template import import_handler_module

from giftmarket_local.stack import Stack


class LambdaContext:
    function_name = "giftmarket-prod-MigrationFunction"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:ap-northeast-2:000000000000:function:migration"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"


@pytest.fixture
def invoke(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in stack.config.app_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ADMIN_EMAILS", "")
    handler = import_handler_module("MigrationFunction").handler
    return lambda event: handler(event, LambdaContext())


def test_the_admin_event_grants_revokes_and_lists_with_the_operator_named(
    stack: Stack, invoke: Any
) -> None:
    email = f"lambda-made-{uuid.uuid4().hex[:10]}@example.com"
    grant = {"admin": {"action": "grant", "email": email, "by": "ops-park"}}
    assert "No account has the email" in invoke(grant)["error"]
    user_id = sign_up_directly(stack, email)
    answer = invoke(grant)
    assert answer == {"user_id": user_id, "email": email, "is_admin": True, "changed": True}
    listed = invoke({"admin": {"action": "list"}})
    assert {"user_id": user_id, "email": email} in listed["admins"]
    (latest,) = [r for r in listed["record"] if r["email"] == email]
    assert latest["by"] == "ops-park (lambda:giftmarket-prod-MigrationFunction)"
    revoke = invoke({"admin": {"action": "revoke", "email": email, "by": "ops-park"}})
    assert revoke["is_admin"] is False and revoke["changed"] is True


@pytest.mark.parametrize(
    "request_",
    [{"action": "promote", "email": "a@b.c"}, {"action": "grant"}, "grant a@b.c", None],
)
def test_a_malformed_admin_event_is_answered_with_its_shape(invoke: Any, request_: Any) -> None:
    assert "expected" in invoke({"admin": request_})["error"]
