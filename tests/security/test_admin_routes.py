"""Admin routes: an authenticated non-admin gets 403 and nothing is created; the admin (an
email in ADMIN_EMAILS, read from the database, never from the token) succeeds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.handler_client import User
from tests.support.security import Client

pytestmark = pytest.mark.e2e


def forbidden(reply: Any) -> None:
    assert reply.status == 403, reply
    assert reply.headers["content-type"] == "application/problem+json", reply
    assert reply.body["code"] == "forbidden", reply


def test_products_are_registered_by_admins_only(client: Client, admin: User) -> None:
    user = client.sign_up()
    name = f"Forged {uuid.uuid4().hex}"
    body = {"name": name, "brand": "B", "category": "c", "face_value": 1000}
    forbidden(client.call("POST", "/api/products", body, user.token))
    count = f"SELECT COUNT(*) FROM giftmarket.products WHERE name = '{name}'"
    assert client.sql(count) == "0"

    created = client.call("POST", "/api/products", body, admin.token)
    assert created.status == 201, created
    assert client.sql(count) == "1"


def test_coupons_are_issued_by_admins_only(client: Client, admin: User) -> None:
    user = client.sign_up()
    body = {
        "user_id": user.user_id,
        "name": "free money",
        "discount_amount": 1000,
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    count = (
        "SELECT COUNT(*) FROM giftmarket.coupons"
        f" WHERE user_id = '{user.user_id}' AND name = 'free money'"
    )
    forbidden(client.call("POST", "/api/admin/coupons", body, user.token))  # to oneself
    other = client.sign_up()
    forbidden(client.call("POST", "/api/admin/coupons", body, other.token))  # to someone else
    assert client.sql(count) == "0"

    created = client.call("POST", "/api/admin/coupons", body, admin.token)
    assert created.status == 201, created
    assert client.sql(count) == "1"


def test_admin_routes_without_a_token_are_401_not_403(client: Client) -> None:
    body = {"name": "x", "brand": "B", "category": "c", "face_value": 1000}
    assert client.call("POST", "/api/products", body).status == 401
