"""Object-level authorization: every route that names someone else's object, called by a
signed-in stranger, answers exactly what a truly missing id answers (404, the same problem
body), and changes nothing. Each probe first shows that the object is live for its owner,
so a 404 can only come from the ownership check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.handler_client import User
from tests.support.security import Client, missing_id

from giftmarket_local.invoke import Reply

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Market:
    admin: User
    seller: User
    buyer: User
    stranger: User
    product: str
    order: str  # PAID: buyer bought the seller's ask
    open_ask: str  # the seller's, still open
    open_bid: str  # the buyer's, still open
    spare_image: str  # the seller's, uploaded and not used yet


@pytest.fixture(scope="module")
def market(client: Client, admin: User) -> Market:
    seller, buyer, stranger = client.sign_up(), client.sign_up(), client.sign_up()
    product = client.new_product(admin)
    client.command("POST", "/api/points/charge", {"amount": 50_000}, buyer.token)
    client.command("POST", "/api/points/charge", {"amount": 50_000}, stranger.token)
    sold = {"price": 5000, "image_id": client.uploaded_image(seller), **client.voucher()}
    client.command("POST", f"/api/products/{product}/sell-bids", sold, seller.token)
    order = client.command(
        "POST", f"/api/products/{product}/buy-now", {"price": 5000}, buyer.token
    )["order_id"]
    listed = {"price": 7000, "image_id": client.uploaded_image(seller), **client.voucher()}
    ask = client.command("POST", f"/api/products/{product}/sell-bids", listed, seller.token)
    bid = client.command("POST", f"/api/products/{product}/buy-bids", {"price": 4000}, buyer.token)
    market = Market(
        admin=admin,
        seller=seller,
        buyer=buyer,
        stranger=stranger,
        product=product,
        order=str(order),
        open_ask=str(ask["sell_bid_id"]),
        open_bid=str(bid["buy_bid_id"]),
        spare_image=client.uploaded_image(seller),
    )
    client.settle()
    return market


def state(client: Client, m: Market) -> dict[str, Any]:
    """Everything a stranger's probe could change, read from the primary."""
    users = ", ".join(f"'{u.user_id}'" for u in (m.seller, m.buyer, m.stranger))
    return {
        "order": client.sql(f"SELECT status FROM giftmarket.orders WHERE id = '{m.order}'"),
        "ask": client.sql(f"SELECT status FROM giftmarket.sell_bids WHERE id = '{m.open_ask}'"),
        "bid": client.sql(f"SELECT status FROM giftmarket.buy_bids WHERE id = '{m.open_bid}'"),
        "image": client.sql(f"SELECT status FROM giftmarket.images WHERE id = '{m.spare_image}'"),
        "balances": client.sql(
            "SELECT GROUP_CONCAT(CONCAT_WS(':', id, available_points, escrowed_points,"
            f" pending_points) ORDER BY id) FROM giftmarket.users WHERE id IN ({users})"
        ),
        "orders": client.sql(
            f"SELECT COUNT(*) FROM giftmarket.orders WHERE product_id = '{m.product}'"
        ),
        "asks": client.sql(
            f"SELECT COUNT(*) FROM giftmarket.sell_bids WHERE product_id = '{m.product}'"
        ),
        "outbox": client.sql("SELECT MAX(id) FROM giftmarket.outbox"),
    }


def not_found(reply: Reply) -> dict[str, Any]:
    assert reply.status == 404, reply
    assert reply.headers["content-type"] == "application/problem+json", reply
    body: dict[str, Any] = reply.body
    assert body["status"] == 404 and body["code"] == "not_found", body
    return body


def indistinguishable(stranger: Reply, missing: Reply) -> None:
    """The stranger learns nothing a missing id would not tell: same status, same body,
    same content type."""
    assert not_found(stranger) == not_found(missing)
    assert stranger.headers["content-type"] == missing.headers["content-type"]


def test_a_strangers_get_order_is_the_404_of_a_missing_order(
    client: Client, market: Market
) -> None:
    for owner in (market.buyer, market.seller):
        assert client.query(f"/api/orders/{market.order}", owner.token)["order_id"] == market.order
    before = state(client, market)
    stranger = client.call("GET", f"/api/orders/{market.order}", token=market.stranger.token)
    missing = client.call("GET", f"/api/orders/{missing_id()}", token=market.stranger.token)
    indistinguishable(stranger, missing)
    assert market.order not in stranger.raw.decode()
    assert state(client, market) == before


def test_a_strangers_gifticon_link_is_the_404_of_a_missing_order(
    client: Client, market: Market
) -> None:
    for owner in (market.buyer, market.seller):
        link = client.query(f"/api/orders/{market.order}/gifticon", owner.token)["download_url"]
        assert link.startswith("http")
    before = state(client, market)
    path = f"/api/orders/{market.order}/gifticon"
    stranger = client.call("GET", path, token=market.stranger.token)
    missing = client.call(
        "GET", f"/api/orders/{missing_id()}/gifticon", token=market.stranger.token
    )
    indistinguishable(stranger, missing)
    assert b"X-Amz-Signature" not in stranger.raw
    assert state(client, market) == before


def test_a_stranger_cannot_cancel_someone_elses_ask(client: Client, market: Market) -> None:
    before = state(client, market)
    token = market.stranger.token
    stranger = client.call("DELETE", f"/api/sell-bids/{market.open_ask}", token=token)
    missing = client.call("DELETE", f"/api/sell-bids/{missing_id()}", token=token)
    indistinguishable(stranger, missing)
    # Not even the buyer, who traded with this seller, may cancel it.
    indistinguishable(
        client.call("DELETE", f"/api/sell-bids/{market.open_ask}", token=market.buyer.token),
        missing,
    )
    assert state(client, market) == before
    assert before["ask"] == "OPEN"


def test_a_stranger_cannot_cancel_someone_elses_bid(client: Client, market: Market) -> None:
    before = state(client, market)
    token = market.stranger.token
    stranger = client.call("DELETE", f"/api/buy-bids/{market.open_bid}", token=token)
    missing = client.call("DELETE", f"/api/buy-bids/{missing_id()}", token=token)
    indistinguishable(stranger, missing)
    indistinguishable(
        client.call("DELETE", f"/api/buy-bids/{market.open_bid}", token=market.seller.token),
        missing,
    )
    assert state(client, market) == before
    assert before["bid"] == "OPEN"


def test_a_stranger_cannot_confirm_someone_elses_order(client: Client, market: Market) -> None:
    before = state(client, market)
    token = market.stranger.token
    stranger = client.call("POST", f"/api/orders/{market.order}/confirm", token=token)
    missing = client.call("POST", f"/api/orders/{missing_id()}/confirm", token=token)
    indistinguishable(stranger, missing)
    assert state(client, market) == before


def test_a_stranger_cannot_dispute_someone_elses_order(client: Client, market: Market) -> None:
    before = state(client, market)
    body, token = {"reason": "the barcode was already used"}, market.stranger.token
    stranger = client.call("POST", f"/api/orders/{market.order}/dispute", body, token)
    missing = client.call("POST", f"/api/orders/{missing_id()}/dispute", body, token)
    indistinguishable(stranger, missing)
    # The seller is a party, so the order is no secret to them; but only the buyer disputes.
    seller = client.call("POST", f"/api/orders/{market.order}/dispute", body, market.seller.token)
    assert (seller.status, seller.body["code"]) == (409, "order_not_disputable"), seller
    assert state(client, market) == before
    assert before["order"] == "PAID"
    assert before["order"] == "PAID"


def test_a_stranger_cannot_list_an_ask_with_someone_elses_image(
    client: Client, market: Market
) -> None:
    before = state(client, market)
    path = f"/api/products/{market.product}/sell-bids"
    token = market.stranger.token
    voucher = client.voucher()  # the same in both: only the image differs
    stranger = client.call(
        "POST", path, {"price": 9000, "image_id": market.spare_image, **voucher}, token
    )
    missing = client.call("POST", path, {"price": 9000, "image_id": missing_id(), **voucher}, token)
    indistinguishable(stranger, missing)
    assert state(client, market) == before
    assert before["image"] == "PENDING"


def test_a_stranger_cannot_sell_now_with_someone_elses_image(
    client: Client, market: Market
) -> None:
    """The buyer's open bid at 4000 would match: only the image's owner stops the sale."""
    before = state(client, market)
    path = f"/api/products/{market.product}/sell-now"
    token = market.stranger.token
    voucher = client.voucher()
    stranger = client.call(
        "POST", path, {"price": 4000, "image_id": market.spare_image, **voucher}, token
    )
    missing = client.call("POST", path, {"price": 4000, "image_id": missing_id(), **voucher}, token)
    indistinguishable(stranger, missing)
    assert state(client, market) == before
    assert (before["bid"], before["image"]) == ("OPEN", "PENDING")


def test_the_owners_can_do_what_the_stranger_could_not(client: Client, market: Market) -> None:
    """Last: the same ids work for their owners, so each 404 above was the ownership check."""
    body = {"price": 4000, "image_id": market.spare_image, **client.voucher()}
    sale = client.call(
        "POST", f"/api/products/{market.product}/sell-now", body, market.seller.token
    )
    assert sale.status == 201, sale
    assert (
        client.call("DELETE", f"/api/sell-bids/{market.open_ask}", token=market.seller.token).status
        == 204
    )
    confirm = client.call("POST", f"/api/orders/{market.order}/confirm", token=market.buyer.token)
    assert confirm.status == 200, confirm
    state_now = state(client, market)
    assert (state_now["order"], state_now["ask"], state_now["bid"]) == (
        "COMPLETED",
        "CANCELLED",
        "MATCHED",
    )
