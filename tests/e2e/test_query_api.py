"""A trade told by the query API: commands through the command Lambda handler, then every
query route through the query Lambda handler, both invoked in-process as API Gateway would,
against the MariaDB primary and replica, Redis and LocalStack S3.

Before each query the client lets the projector catch up with the outbox (in-process, in
commit order), so the answers come from the Redis read models; the SQS leg of the pipeline
has its own e2e test (test_local_runner.py).
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from tests.support.fakes import fresh_barcode, valid_until
from tests.support.handler_client import PNG, HandlerClient, handler_client, http_put
from tests.support.stack import redis_stopped

from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

ADMIN_EMAIL = "admin@giftmarket.local"
PASSWORD = "password123"


class Client(HandlerClient):
    def sign_up(self, email: str | None = None) -> tuple[str, str]:
        email = email or f"{uuid.uuid4().hex}@query-e2e.test"
        reply = self.call(
            "POST", "/api/auth/signup", {"email": email, "password": PASSWORD, "nickname": "n"}
        )
        if reply.status == 409:  # the admin, signed up by an earlier test
            reply = self.call("POST", "/api/auth/login", {"email": email, "password": PASSWORD})
        assert reply.status in (200, 201), reply
        return reply.body["user_id"], reply.body["token"]


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Client]:
    # No events queue: the client projects the outbox itself.
    settings = make_settings(events_queue_url=None, replica_check_interval_seconds=0)
    with handler_client(Client, settings, stack) as client:
        yield client


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - LocalStack
        body: bytes = resp.read()
        return body


def test_a_trade_is_visible_in_every_query_of_both_parties(client: Client) -> None:
    _, admin = client.sign_up(ADMIN_EMAIL)
    seller_id, seller = client.sign_up()
    buyer_id, buyer = client.sign_up()
    name = f"Gift {uuid.uuid4().hex[:10]}"
    category = f"e2e-{uuid.uuid4().hex[:8]}"
    product = client.command(
        "POST",
        "/api/products",
        {"name": name, "brand": "E2E Bakery", "category": category, "face_value": 6000},
        admin,
    )["product_id"]
    client.command("POST", "/api/points/charge", {"amount": 10_000}, buyer)
    client.command("POST", f"/api/products/{product}/likes", token=buyer)
    slot = client.command("POST", "/api/images", {"content_type": "image/png"}, seller)
    assert http_put(slot["upload_url"], PNG, "image/png")[0] == 200
    barcode, expires_on = fresh_barcode(), valid_until(datetime.now(UTC), 40).isoformat()
    voucher = {"image_id": slot["image_id"], "barcode": barcode, "expires_on": expires_on}
    ask = client.command(
        "POST", f"/api/products/{product}/sell-bids", {"price": 5000, **voucher}, seller
    )["sell_bid_id"]
    bid = client.command("POST", f"/api/products/{product}/buy-bids", {"price": 4000}, buyer)[
        "buy_bid_id"
    ]

    listed = client.query(f"/api/products?category={category}")
    assert listed == {
        "items": [
            {
                "product_id": product,
                "name": name,
                "brand": "E2E Bakery",
                "category": category,
                "face_value": 6000,
                "lowest_ask": 5000,
                "highest_bid": 4000,
                "like_count": 1,
            }
        ],
        "next_cursor": None,
    }
    asks = client.query("/api/sell/history/bidding", seller)["items"]
    assert [(a["sell_bid_id"], a["price"], a["product_name"]) for a in asks] == [(ask, 5000, name)]
    assert (asks[0]["barcode_last4"], asks[0]["expires_on"]) == (barcode[-4:], expires_on)
    ladder = client.query(f"/api/products/{product}")["asks"]
    assert ladder == [{"price": 5000, "count": 1, "earliest_expires_on": expires_on}]
    bids = client.query("/api/buy/history/bidding", buyer)["items"]
    assert [(b["buy_bid_id"], b["status"]) for b in bids] == [(bid, "OPEN")]

    order = client.command("POST", f"/api/products/{product}/buy-now", {"price": 5000}, buyer)[
        "order_id"
    ]

    detail = client.query(f"/api/products/{product}")
    assert (detail["lowest_ask"], detail["highest_bid"]) == (None, 4000)
    assert (detail["order_count"], detail["last_trade_price"]) == (1, 5000)
    assert detail["asks"] == []  # the matched ask left the ladder
    assert [t["price"] for t in detail["recent_trades"]] == [5000]
    assert client.query("/api/sell/history/bidding", seller) == {"items": []}
    purchases = client.query("/api/buy/history/in_progress", buyer)["items"]
    assert [(p["order_id"], p["status"], p["paid"]) for p in purchases] == [(order, "PAID", 5000)]
    sales = client.query("/api/sell/history/in_progress", seller)["items"]
    assert [(s["order_id"], s["status"]) for s in sales] == [(order, "PAID")]

    seen_by_buyer = client.query(f"/api/orders/{order}", buyer)
    assert seen_by_buyer["role"] == "buyer" and seen_by_buyer["buyer_id"] == buyer_id
    # Inspection is automatic here: delivered when placed.
    assert seen_by_buyer["delivered_at"] == seen_by_buyer["created_at"]
    assert (seen_by_buyer["barcode_last4"], seen_by_buyer["expires_on"]) == (
        barcode[-4:],
        expires_on,
    )
    assert seen_by_buyer["dispute"] is None
    assert "barcode" not in seen_by_buyer
    assert "seller_id" not in seen_by_buyer
    assert client.query(f"/api/orders/{order}", seller)["seller_id"] == seller_id
    link = client.query(f"/api/orders/{order}/gifticon", buyer)["download_url"]
    assert download(link) == PNG
    _, stranger = client.sign_up()
    client.stack.wait_replica_caught_up()
    assert client.call("GET", f"/api/orders/{order}/gifticon", token=stranger).status == 404

    me = client.query("/api/me", buyer)
    assert (me["user_id"], me["available_points"], me["escrowed_points"]) == (
        buyer_id,
        10_000 - 4000 - 5000,
        4000,
    )
    assert client.query("/api/me", seller)["pending_points"] == 5000

    client.command("POST", f"/api/orders/{order}/confirm", token=buyer)
    assert client.query("/api/buy/history/in_progress", buyer) == {"items": []}
    done = client.query("/api/buy/history/done", buyer)["items"]
    assert [(d["order_id"], d["status"]) for d in done] == [(order, "COMPLETED")]
    assert done[0]["completed_at"] is not None
    sales = client.query("/api/sell/history/in_progress", seller)["items"]
    assert [(s["order_id"], s["status"]) for s in sales] == [(order, "COMPLETED")]

    found = client.query(f"/api/search?q={name.split()[1].upper()}")["items"]
    assert [f["product_id"] for f in found] == [product]
    liked = client.query("/api/rankings?by=likes&limit=100")["items"]
    assert any(r["product_id"] == product and r["score"] == 1 for r in liked)
    assert client.query("/api/me/settlements", seller) == {"items": []}

    # The same answers when Redis is down (SQL on the replica), and when the replica is down
    # too (the primary): nothing but latency changes.
    every_query = [
        (f"/api/products?category={category}&sort={sort}", None)
        for sort in ("popular", "latest", "price")
    ] + [
        (f"/api/products/{product}", None),
        ("/api/rankings?by=orders&limit=100", None),
        (f"/api/orders/{order}", buyer),
        (f"/api/orders/{order}", seller),
        ("/api/me", buyer),
        ("/api/me/coupons", buyer),
        ("/api/me/settlements", seller),
        *[(f"/api/{side}/history/{state}", who)
          for side, who in (("buy", buyer), ("sell", seller))
          for state in ("bidding", "in_progress", "done")],
    ]  # fmt: skip
    from_redis = [client.query(path, token) for path, token in every_query]
    with redis_stopped(client.stack):
        assert [client.query(path, token) for path, token in every_query] == from_redis
        assert client.stack.replica.process.stop()
        try:
            from_primary = [client.call("GET", path, token=token) for path, token in every_query]
            gifticon = client.call("GET", f"/api/orders/{order}/gifticon", token=buyer)
        finally:
            client.stack.replica.process.start()
    assert [reply.body for reply in from_primary] == from_redis
    assert gifticon.status == 200
