"""The read side's voucher rules, pure: who may download an order's voucher, and how order
facts read in either store (absent in Redis, None from SQL) show."""

from __future__ import annotations

import pytest

from giftmarket.domain.errors import NotDelivered
from giftmarket.queries import trades

KEY = "images/s1/i1"


def downloadable(viewer: str, delivered_at: object) -> str | None:
    return trades.downloadable_key(
        KEY, buyer_id="b1", seller_id="s1", delivered_at=delivered_at, viewer_id=viewer
    )


@pytest.mark.parametrize("delivered_at", [None, ""])
def test_the_buyer_gets_409_until_the_voucher_is_delivered(delivered_at: object) -> None:
    with pytest.raises(NotDelivered):
        downloadable("b1", delivered_at)


def test_the_buyer_downloads_once_delivered() -> None:
    assert downloadable("b1", "2026-12-06T09:00:00+00:00") == KEY


@pytest.mark.parametrize("delivered_at", [None, "2026-12-06T09:00:00+00:00"])
def test_the_seller_always_downloads_their_upload_and_strangers_never(
    delivered_at: object,
) -> None:
    assert downloadable("s1", delivered_at) == KEY
    assert downloadable("someone", delivered_at) is None


ORDER = {
    "id": "o1", "product_id": "p1", "product_name": "Cake", "buyer_id": "b1",
    "seller_id": "s1", "price": "5000", "discount": "0", "paid": "5000",
    "status": "INSPECTING", "via": "buy_now", "created_at": "2026-12-06T09:00:00+00:00",
    "completed_at": "", "settled_at": "",
}  # fmt: skip


def test_an_order_not_yet_delivered_nor_disputed_shows_nulls_whichever_store() -> None:
    from_redis = trades.present_order(ORDER, "b1")  # facts not known are absent there
    from_sql = trades.present_order(
        {**ORDER, "delivered_at": None, "barcode_last4": None, "expires_on": None,
         "dispute_reason": None, "refunded_at": None},
        "b1",
    )  # fmt: skip
    assert from_redis == from_sql
    assert from_redis is not None
    assert (from_redis["delivered_at"], from_redis["dispute"]) == (None, None)


def test_a_disputed_order_shows_its_dispute_until_and_after_the_decision() -> None:
    disputed = {**ORDER, "status": "DISPUTED", "dispute_reason": "used",
                "dispute_opened_at": "2026-12-07T00:00:00+00:00"}  # fmt: skip
    shown = trades.present_order(disputed, "s1")
    assert shown is not None and shown["dispute"] == {
        "reason": "used",
        "opened_at": "2026-12-07T00:00:00+00:00",
        "decision": None,
        "decided_at": None,
    }
    decided = {**disputed, "dispute_decision": "reject", "dispute_decided_at": "2026-12-08"}
    shown = trades.present_order(decided, "b1")
    assert shown is not None
    assert (shown["dispute"]["decision"], shown["dispute"]["decided_at"]) == (
        "reject",
        "2026-12-08",
    )


def test_a_purchase_hides_the_barcode_digits_and_a_sale_shows_them() -> None:
    fields = {**ORDER, "barcode_last4": "4321", "expires_on": "2027-01-31"}
    purchase = trades.order_item(fields, with_payment=True)
    sale = trades.order_item(fields, with_payment=False)
    assert "barcode_last4" not in purchase and purchase["expires_on"] == "2027-01-31"
    assert sale["barcode_last4"] == "4321" and "paid" not in sale
