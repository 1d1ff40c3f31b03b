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


def test_orders_are_inspected_and_disputes_resolved_by_admins_only(
    client: Client, admin: User
) -> None:
    """Even the order's own parties are refused: the decisions move the money."""
    seller, buyer = client.sign_up(), client.sign_up()
    product = client.new_product(admin)
    client.command("POST", "/api/points/charge", {"amount": 5000}, buyer.token)
    ask = {"price": 5000, "image_id": client.uploaded_image(seller), **client.voucher()}
    client.command("POST", f"/api/products/{product}/sell-bids", ask, seller.token)
    order = client.command("POST", f"/api/products/{product}/buy-now", {"price": 5000}, buyer.token)
    order_id = order["order_id"]
    client.command("POST", f"/api/orders/{order_id}/dispute", {"reason": "used"}, buyer.token)
    row = f"SELECT status, refunded_at IS NULL FROM giftmarket.orders WHERE id = '{order_id}'"
    before = client.sql(row)
    decisions = [
        (f"/api/admin/orders/{order_id}/resolution", {"decision": "refund"}),
        (f"/api/admin/orders/{order_id}/inspection", {"result": "fail", "reason": "used"}),
    ]
    for user in (buyer, seller, client.sign_up()):
        for path, body in decisions:
            forbidden(client.call("POST", path, body, user.token))
    assert before.split() == ["DISPUTED", "1"]
    assert client.sql(row) == before

    resolved = client.call("POST", decisions[0][0], decisions[0][1], admin.token)
    assert (resolved.status, resolved.body["status"]) == (200, "REFUNDED"), resolved


def test_admin_routes_without_a_token_are_401_not_403(client: Client) -> None:
    body = {"name": "x", "brand": "B", "category": "c", "face_value": 1000}
    assert client.call("POST", "/api/products", body).status == 401
