"""No secrets in logs: signup, login (right and wrong), charge and refused requests driven
through the command and query Lambda handlers while everything they log is captured: the
Powertools loggers' own output (their stdout stream is redirected for the test), every other
logger at DEBUG, and the process's stdout/stderr. Neither a password, an issued JWT, a
presented (forged) JWT, the JWT secret nor the database password may appear; nor a
voucher's barcode, listed, refused as a duplicate or as expiring, or in a malformed request
(nor in any of those answers).
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from tests.support.handler_client import User
from tests.support.oidc_local import local_id_token
from tests.support.oidc_tokens import forged as forged_id_token
from tests.support.oidc_tokens import provider_token
from tests.support.security import Client

pytestmark = pytest.mark.e2e


class Captured:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def text(self) -> str:
        return self.buffer.getvalue()


@pytest.fixture
def logs(client: Client) -> Iterator[Captured]:
    # Load both handlers first, so that their Powertools loggers exist.
    client.call("GET", "/api/health")
    client.call("POST", "/api/auth/login", {})
    captured = Captured()
    handler = logging.StreamHandler(captured.buffer)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    attached: list[logging.Logger] = [root]
    for logger in [*logging.root.manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger):
            continue
        for existing in logger.handlers:
            if type(existing) is logging.StreamHandler:
                # Assigned, not setStream(): that flushes the old stream first, which may be
                # an earlier test's capture, closed by now.
                swapped.append((existing, existing.stream))
                existing.stream = captured.buffer
        if not logger.propagate:
            attached.append(logger)
    assert swapped, "no Powertools stream handler found"
    levels = {logger: logger.level for logger in attached}
    for logger in attached:
        logger.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        for logger in attached:
            logger.removeHandler(handler)
            logger.setLevel(levels[logger])
        for existing, stream in swapped:
            existing.stream = stream


def test_no_password_token_or_secret_is_logged(
    client: Client, admin: User, logs: Captured, capfd: pytest.CaptureFixture[str]
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    email = f"{uuid.uuid4().hex}@security.test"
    account = {"email": email, "password": password, "nickname": "logged"}
    signup = client.call("POST", "/api/auth/signup", account)
    assert signup.status == 201, signup
    login = client.call("POST", "/api/auth/login", {"email": email, "password": password})
    assert login.status == 200, login
    tokens = [signup.body["token"], login.body["token"]]

    wrong_password = f"wrong-{uuid.uuid4().hex}"
    bad = client.call("POST", "/api/auth/login", {"email": email, "password": wrong_password})
    assert bad.status == 401, bad
    assert client.call("POST", "/api/auth/signup", account).status == 409
    too_long = f"long-{uuid.uuid4().hex}" * 10
    refused = client.call("POST", "/api/auth/signup", {**account, "password": too_long})
    assert refused.status == 422, refused
    assert too_long not in refused.raw.decode()

    for token in tokens:
        assert client.call("POST", "/api/points/charge", {"amount": 10}, token).status == 200
        client.settle()
        assert client.call("GET", "/api/me", token=token).status == 200
    forged = jwt.encode({"sub": signup.body["user_id"]}, f"x-{uuid.uuid4().hex}", "HS256")
    assert client.call("POST", "/api/points/charge", {"amount": 10}, forged).status == 401
    assert client.call("GET", "/api/me", token=forged).status == 401

    seller, product = client.sign_up(), client.new_product(admin)
    path = f"/api/products/{product}/sell-bids"
    listed, expiring = client.voucher(), client.voucher(days=1)
    answers = [
        client.call("POST", path, {"price": 9000, "image_id": image, **voucher}, seller.token)
        for image, voucher in (
            (client.uploaded_image(seller), listed),
            (client.uploaded_image(seller), listed),  # 409 voucher_duplicate
            (client.uploaded_image(seller), expiring),  # 409 voucher_expiring
            ("not-an-image-id", listed),  # 422
        )
    ]
    assert [a.status for a in answers] == [201, 409, 409, 422], answers
    for answer in answers:
        assert listed["barcode"] not in answer.raw.decode(), answer

    # Social sign-in: a good ID token, an expired one and a forged one.
    issuer, sub = client.stack.config.oidc_issuer, f"logged-{uuid.uuid4().hex}"
    id_token = local_id_token(issuer, sub)
    expired = provider_token(issuer, sub, {"exp": 1_000_000_000, "iat": 999_999_000})
    social = [
        client.call("POST", "/api/auth/oidc/local", {"id_token": t})
        for t in (id_token, expired, forged_id_token(id_token))
    ]
    assert [a.status for a in social] == [201, 401, 401], social

    out, err = capfd.readouterr()
    output = logs.text() + out + err
    assert len(output) > 0, "nothing was captured: the probe would prove nothing"
    assert "POST" in output or "/api/" in output or "giftmarket" in output, output[:2000]
    settings = client.container.settings
    secrets = {
        "password": password,
        "wrong password": wrong_password,
        "over-long password": too_long,
        "issued token": tokens[0],
        "login token": tokens[1],
        "token signature": tokens[0].rsplit(".", 1)[1],
        "forged token": forged,
        "JWT secret": client.container.jwt_secret,
        "database password": settings.db_password.get_secret_value(),
        "barcode": listed["barcode"],
        "expiring barcode": expiring["barcode"],
        "ID token": id_token,
        "ID token signature": id_token.rsplit(".", 1)[1],
        "expired ID token": expired,
        "social sign-in's token": social[0].body["token"],
    }
    leaked = [name for name, value in secrets.items() if value in output]
    assert leaked == [], f"{leaked} found in the logs:\n{output[:4000]}"
    print(f"captured {len(output)} characters of logs, no secret in them")
