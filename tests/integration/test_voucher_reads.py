"""The read side of vouchers, through the Lambda handlers on the real stack, with manual
inspection: history states, order detail, the gifticon download before and after delivery,
the admins' queues, the price ladder and expired asks; each answer from the Redis read
models and from SQL alike (PRODUCT.md, "Vouchers: facts, inspection (검수) and disputes").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from tests.support.fakes import fresh_barcode, valid_until
from tests.support.handler_client import MarketClient, User, handler_client

from giftmarket.adapters.db import ReplicaState
from giftmarket.consistency import HEADER as CONSISTENCY_HEADER
from giftmarket.domain.errors import NotDelivered
from giftmarket.jobs.expiry import expire_asks
from giftmarket.queries import admin, products, trades
from giftmarket.queries.params import HistoryState
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

ADMIN_EMAIL = f"voucher-admin-{uuid.uuid4().hex[:12]}@reads.test"


class Client(MarketClient):
    def ask(
        self, seller: User, product: str, price: int, *, days: int = 30
    ) -> tuple[str, str, str]:
        """An ask of a fresh voucher: (sell bid id, barcode, expires_on)."""
        barcode = fresh_barcode()
        expires_on = valid_until(datetime.now(UTC), days).isoformat()
        body = {
            "price": price,
            "image_id": self.uploaded_image(seller),
            "barcode": barcode,
            "expires_on": expires_on,
        }
        placed = self.command("POST", f"/api/products/{product}/sell-bids", body, seller.token)
        return placed["sell_bid_id"], barcode, expires_on

    def status(self, path: str, token: str | None) -> tuple[int, Any]:
        self.settle()
        reply = self.call("GET", path, token=token)
        return reply.status, reply.body

    def sql(self, query: Callable[[Any], Any]) -> Any:
        return self.container.database.run_on_primary(query)


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Client]:
    settings = make_settings(
        events_queue_url=None,
        replica_check_interval_seconds=0,
        inspection_mode="manual",
        admin_emails=ADMIN_EMAIL,
    )
    with handler_client(Client, settings, stack) as client:
        yield client


@pytest.fixture(scope="module")
def admin_user(client: Client) -> User:
    return client.sign_up(ADMIN_EMAIL)


def bought(client: Client, admin_user: User, *, coupon: bool = False) -> dict[str, Any]:
    """A seller's ask bought now by a buyer (with a coupon of 500), left INSPECTING."""
    seller, buyer = client.sign_up(), client.sign_up()
    product = client.new_product(admin_user)
    client.command("POST", "/api/points/charge", {"amount": 20_000}, buyer.token)
    ask, barcode, expires_on = client.ask(seller, product, 5000)
    body: dict[str, Any] = {"price": 5000}
    if coupon:
        issued = client.command(
            "POST",
            "/api/admin/coupons",
            {
                "user_id": buyer.user_id,
                "name": "Refundable",
                "discount_amount": 500,
                "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            },
            admin_user.token,
        )
        body["coupon_id"] = issued["coupon_id"]
    order = client.command("POST", f"/api/products/{product}/buy-now", body, buyer.token)
    assert order["status"] == "INSPECTING"
    return {
        "seller": seller, "buyer": buyer, "product": product, "ask": ask, "barcode": barcode,
        "expires_on": expires_on, "order": order["order_id"], "coupon": body.get("coupon_id"),
    }  # fmt: skip


def history(client: Client, user: User, side: str, state: HistoryState) -> dict[str, Any]:
    """The history the route gives, checked equal to the read model's and the SQL view's."""
    answer = client.query(f"/api/{side}/history/{state}", user.token)
    kind = trades.BUYER if side == "buy" else trades.SELLER
    rm = client.container.read_models
    from_rm = trades.history_from_read_model(rm, user.user_id, state, side=kind, limit=50)
    from_sql = client.sql(lambda s: trades.history_from_sql(s, user.user_id, state, side=kind))
    assert answer == from_rm == from_sql
    return dict(answer)


def order_detail(client: Client, order: str, user: User) -> dict[str, Any]:
    answer = client.query(f"/api/orders/{order}", user.token)
    from_rm = trades.order_detail_from_read_model(client.container.read_models, order, user.user_id)
    assert answer == from_rm
    assert answer == client.sql(lambda s: trades.order_detail_from_sql(s, order, user.user_id))
    return dict(answer)


def queue(client: Client, name: str, admin_user: User) -> list[dict[str, Any]]:
    answer = client.query(f"/api/admin/{name}?limit=100", admin_user.token)
    readers = {"inspections": admin.inspections_from_sql, "disputes": admin.disputes_from_sql}
    from_sql = client.sql(lambda s: readers[name](s, limit=100))
    from_rm = client.container.read_models.queue(name, 100)
    assert from_rm is not None and len(from_rm) == len(answer["items"])
    for item in answer["items"]:
        item.pop("image_url", None)
    for item in from_sql["items"]:
        item.pop("image_key", None)
    assert answer == from_sql
    return list(answer["items"])


def ids(items: list[dict[str, Any]], key: str = "order_id") -> list[str]:
    return [item[key] for item in items]


def test_an_order_in_inspection_is_in_progress_and_not_downloadable_by_its_buyer(
    client: Client, admin_user: User
) -> None:
    t = bought(client, admin_user)
    buyer, seller, order = t["buyer"], t["seller"], t["order"]

    seen = order_detail(client, order, buyer)
    assert (seen["status"], seen["delivered_at"], seen["dispute"]) == ("INSPECTING", None, None)
    assert (seen["barcode_last4"], seen["expires_on"]) == (t["barcode"][-4:], t["expires_on"])
    assert order in ids(history(client, buyer, "buy", "in_progress")["items"])
    sales = history(client, seller, "sell", "in_progress")["items"]
    assert [(s["order_id"], s["status"], s["barcode_last4"]) for s in sales] == [
        (order, "INSPECTING", t["barcode"][-4:])
    ]

    status, problem = client.status(f"/api/orders/{order}/gifticon", buyer.token)
    assert (status, problem["code"]) == (409, "not_delivered")
    assert client.status(f"/api/orders/{order}/gifticon", seller.token)[0] == 200
    # The same answers from SQL (the read model's rule and the view's agree).
    with pytest.raises(NotDelivered):
        client.sql(lambda s: trades.order_gifticon_key_from_sql(s, order, buyer.user_id))

    waiting = queue(client, "inspections", admin_user)
    mine = next(item for item in waiting if item["order_id"] == order)
    assert (mine["price"], mine["barcode_last4"], mine["expires_on"]) == (
        5000,
        t["barcode"][-4:],
        t["expires_on"],
    )
    assert mine["waiting_since"] == seen["created_at"]
    times = [item["waiting_since"] for item in waiting]
    assert times == sorted(times)  # oldest first
    with_url = client.query("/api/admin/inspections?limit=100", admin_user.token)["items"]
    assert next(i for i in with_url if i["order_id"] == order)["image_url"].startswith("http")

    client.command(
        "POST", f"/api/admin/orders/{order}/inspection", {"result": "pass"}, admin_user.token
    )
    seen = order_detail(client, order, buyer)
    assert seen["status"] == "PAID" and seen["delivered_at"] is not None
    assert client.status(f"/api/orders/{order}/gifticon", buyer.token)[0] == 200
    assert order not in ids(queue(client, "inspections", admin_user))


def test_a_failed_inspection_is_done_refunded_and_never_downloadable_by_the_buyer(
    client: Client, admin_user: User
) -> None:
    t = bought(client, admin_user)
    buyer, seller, order = t["buyer"], t["seller"], t["order"]
    decision = {"result": "fail", "reason": "the barcode was already used"}
    client.command("POST", f"/api/admin/orders/{order}/inspection", decision, admin_user.token)

    seen = order_detail(client, order, seller)
    assert (seen["status"], seen["delivered_at"]) == ("REFUNDED", None)
    assert seen["refunded_at"] is not None
    assert history(client, buyer, "buy", "in_progress")["items"] == []
    assert ids(history(client, buyer, "buy", "done")["items"]) == [order]
    assert ids(history(client, seller, "sell", "done")["items"]) == [order]
    status, problem = client.status(f"/api/orders/{order}/gifticon", buyer.token)
    assert (status, problem["code"]) == (409, "not_delivered")
    assert client.status(f"/api/orders/{order}/gifticon", seller.token)[0] == 200
    assert order not in ids(queue(client, "inspections", admin_user))


def test_a_dispute_waits_in_the_queue_and_an_upheld_one_is_refunded_with_its_coupon(
    client: Client, admin_user: User
) -> None:
    t = bought(client, admin_user, coupon=True)
    buyer, seller, order = t["buyer"], t["seller"], t["order"]
    client.command(
        "POST", f"/api/admin/orders/{order}/inspection", {"result": "pass"}, admin_user.token
    )
    client.command("POST", f"/api/orders/{order}/dispute", {"reason": "used"}, buyer.token)

    seen = order_detail(client, order, buyer)
    assert seen["status"] == "DISPUTED"
    assert seen["dispute"]["reason"] == "used" and seen["dispute"]["decision"] is None
    assert ids(history(client, buyer, "buy", "in_progress")["items"]) == [order]
    assert ids(history(client, seller, "sell", "in_progress")["items"]) == [order]
    disputes = queue(client, "disputes", admin_user)
    mine = next(item for item in disputes if item["order_id"] == order)
    assert (mine["reason"], mine["opened_at"]) == ("used", seen["dispute"]["opened_at"])
    opened = [item["opened_at"] for item in disputes]
    assert opened == sorted(opened)

    client.command(
        "POST",
        f"/api/admin/orders/{order}/resolution",
        {"decision": "refund", "note": "confirmed with the brand"},
        admin_user.token,
    )
    seen = order_detail(client, order, buyer)
    assert seen["status"] == "REFUNDED"
    assert seen["dispute"]["decision"] == "refund" and seen["dispute"]["decided_at"] is not None
    assert ids(history(client, buyer, "buy", "done")["items"]) == [order]
    assert order not in ids(queue(client, "disputes", admin_user))
    coupons = client.query("/api/me/coupons", buyer.token)["items"]
    assert [(c["coupon_id"], c["status"]) for c in coupons if c["name"] == "Refundable"] == [
        (t["coupon"], "AVAILABLE")
    ]


def test_the_admin_queues_are_for_admins_only(client: Client, admin_user: User) -> None:
    someone = client.sign_up()
    for name in ("inspections", "disputes"):
        status, problem = client.status(f"/api/admin/{name}", someone.token)
        assert (status, problem["code"]) == (403, "forbidden")
        assert client.status(f"/api/admin/{name}", None)[0] == 401
        assert client.status(f"/api/admin/{name}?limit=101", admin_user.token)[0] == 422


def test_the_ladder_counts_open_asks_by_price_with_their_earliest_expiry(
    client: Client, admin_user: User
) -> None:
    seller = client.sign_up()
    product = client.new_product(admin_user)
    _, _, late = client.ask(seller, product, 5200, days=60)
    _, _, soon = client.ask(seller, product, 5200, days=10)
    cancelled, _, _ = client.ask(seller, product, 5100, days=20)
    for price in range(6000, 6011):
        client.ask(seller, product, price)
    client.command("DELETE", f"/api/sell-bids/{cancelled}", token=seller.token)

    detail = client.query(f"/api/products/{product}")
    assert detail == products.product_detail_from_read_model(client.container.read_models, product)
    assert detail == client.sql(lambda s: products.product_detail_from_sql(s, product))
    ladder = detail["asks"]
    assert ladder[0] == {"price": 5200, "count": 2, "earliest_expires_on": min(soon, late)}
    assert [step["price"] for step in ladder] == [5200, *range(6000, 6009)]
    assert all(step["count"] == 1 for step in ladder[1:])
    assert detail["lowest_ask"] == 5200


def test_an_expired_ask_leaves_bidding_and_the_ladder_for_its_sellers_done(
    client: Client, admin_user: User
) -> None:
    seller = client.sign_up()
    product = client.new_product(admin_user)
    ask, barcode, expires_on = client.ask(seller, product, 4800, days=3)
    kept, _, _ = client.ask(seller, product, 4900, days=30)
    # Three days on, the voucher is inside the margin; vouchers valid longer stay open.
    report = expire_asks(client.container.command_executor, now=datetime.now(UTC) + timedelta(3))
    assert report.expired >= 1 and report.takeable_from > date.fromisoformat(expires_on)

    assert ids(history(client, seller, "sell", "bidding")["items"], "sell_bid_id") == [kept]
    done = history(client, seller, "sell", "done")["items"]
    assert [(d["sell_bid_id"], d["status"]) for d in done] == [(ask, "EXPIRED")]
    assert (done[0]["barcode_last4"], done[0]["expires_on"]) == (barcode[-4:], expires_on)
    detail = client.query(f"/api/products/{product}")
    assert [step["price"] for step in detail["asks"]] == [4900]
    assert detail["lowest_ask"] == 4900


def test_search_with_a_token_finds_what_the_command_just_wrote_despite_replica_lag(
    client: Client, admin_user: User, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.settle()
    name = f"Lagging {uuid.uuid4().hex[:10]}"
    body = {"name": name, "brand": "Lag", "category": "lag", "face_value": 1000}
    # A replica behind by less than the bound is used: stood for by a stopped SQL thread
    # that the monitor's last reading has not seen yet.
    monitor = client.container.database.monitor
    assert monitor is not None
    monkeypatch.setattr(monitor, "state", lambda: ReplicaState(True, "ok", 0.0))
    stack.replica.sql("STOP SLAVE SQL_THREAD")
    try:
        reply = client.call("POST", "/api/products", body, admin_user.token)
        assert reply.status == 201
        token = reply.headers[CONSISTENCY_HEADER.lower()]
        path = f"/api/search?q={name.split()[1]}"
        without = client.call("GET", path)
        with_token = client.call("GET", path, headers={CONSISTENCY_HEADER: token})
    finally:
        stack.replica.sql("START SLAVE SQL_THREAD")
        stack.wait_replica_caught_up()
    assert without.status == 200 and without.body["items"] == []  # the replica lags
    assert [i["product_id"] for i in with_token.body["items"]] == [reply.body["product_id"]]
