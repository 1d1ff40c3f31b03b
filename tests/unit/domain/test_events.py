import dataclasses
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Protocol

import pytest
from tests.unit.domain.factories import voucher

from giftmarket.domain import events, marketplace
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.ids import IdGenerator
from giftmarket.domain.images import Image
from giftmarket.domain.orderbook import SellBid
from giftmarket.domain.orders import AUTO_COMPLETE_AFTER, DisputeDecision
from giftmarket.domain.settlement import SettleableOrder, business_date_of
from giftmarket.domain.users import User
from giftmarket.domain.vouchers import InspectionMode, VoucherRules

pytestmark = pytest.mark.unit

AUTO = VoucherRules()
MANUAL = VoucherRules(inspection=InspectionMode.MANUAL)

EVENT_CLASSES = {
    value
    for value in vars(events).values()
    if isinstance(value, type) and issubclass(value, DomainEvent) and value is not DomainEvent
}


class Aggregate(Protocol):
    events: list[DomainEvent]


def every_kind_of_change(ids: IdGenerator, now: datetime) -> list[DomainEvent]:
    """One trip through the whole marketplace, returning every event it records."""

    def sign_up(name: str) -> User:
        return User.sign_up(
            user_id=ids(),
            email=f"{name}@example.com",
            nickname=name,
            password_hash="hash",
            admin_emails=("admin@example.com",),
            now=now,
        )

    def uploaded(owner: User) -> Image:
        return Image.request(image_id=ids(), owner_id=owner.id, content_type="image/png", now=now)

    admin, bob, sally = sign_up("admin"), sign_up("bob"), sign_up("sally")
    product = Product.register(
        product_id=ids(), name="Latte", brand="Cafe", category="cafe", face_value=5_000, now=now
    )
    product.like(bob.id, already_liked=False, now=now)
    product.unlike(bob.id, was_liked=True, now=now)
    marketplace.charge(bob, 40_000, ids, now)
    coupon = Coupon.issue_welcome(coupon_id=ids(), user_id=bob.id, discount_amount=1_000, now=now)

    def listed(price: int, image: Image, barcode: str, days: int = 30) -> SellBid:
        return marketplace.place_sell_bid(
            sally.id,
            product.id,
            price,
            image,
            1_000,
            "image/png",
            voucher(now, barcode, days),
            None,
            ids,
            now,
        )

    ask_image, withdrawn_image, sold_image = uploaded(sally), uploaded(sally), uploaded(sally)
    ask = listed(5_000, ask_image, "10000001")
    bought, _ = marketplace.buy_now(bob, sally, ask, coupon, AUTO, ids, now)
    withdrawn = listed(6_000, withdrawn_image, "10000002")
    marketplace.cancel_sell_bid(sally.id, withdrawn, now)
    # The daily cleanup, a week later.
    withdrawn_image.begin_deletion(reason="cancelled_ask", now=now + timedelta(days=8))
    withdrawn_image.mark_deleted(now + timedelta(days=8))

    bid, _ = marketplace.place_buy_bid(bob, product.id, 4_000, None, ids, now)
    regretted, _ = marketplace.place_buy_bid(bob, product.id, 3_000, None, ids, now)
    marketplace.cancel_buy_bid(bob, regretted, ids, now)
    sold, _ = marketplace.sell_now(
        sally, bob, bid, sold_image, 1_000, "image/png", voucher(now, "10000003"), AUTO, ids, now
    )

    # An ask whose voucher got too close to its last day, marked by the daily job.
    expiring = listed(7_000, uploaded(sally), "10000004", days=3)
    assert expiring.expire_if_due(AUTO, now + timedelta(days=3))

    # Manual inspection: one order fails (refunded, its coupon restored), one passes and
    # is disputed and refunded, one passes and its dispute is rejected.
    spare = Coupon.issue_welcome(coupon_id=ids(), user_id=bob.id, discount_amount=500, now=now)
    inspected = [
        marketplace.buy_now(
            bob, sally, listed(4_000, uploaded(sally), code), paying, MANUAL, ids, now
        )[0]
        for code, paying in (("10000005", spare), ("10000006", None), ("10000007", None))
    ]
    failed, refunded, kept = inspected
    marketplace.decide_inspection(
        failed, bob, sally, spare, by_admin=admin.id, passed=False, reason="used", ids=ids, now=now
    )
    for order in (refunded, kept):
        marketplace.decide_inspection(
            order, bob, sally, None, by_admin=admin.id, passed=True, reason=None, ids=ids, now=now
        )
        order.open_dispute(bob.id, "the barcode was already used", now + timedelta(hours=1))
    for order, decision in ((refunded, DisputeDecision.REFUND), (kept, DisputeDecision.REJECT)):
        marketplace.resolve_dispute(
            order,
            bob,
            sally,
            None,
            by_admin=admin.id,
            decision=decision,
            note="checked with the brand",
            ids=ids,
            now=now + timedelta(hours=2),
        )

    bought.confirm(bob.id, now + timedelta(hours=1))
    later = now + AUTO_COMPLETE_AFTER
    sold.complete_if_due(later)
    settlement, _ = marketplace.settle_seller(
        sally, [bought, sold], 500, business_date_of(later), ids, later
    )
    # The daily job settles set-based: its settlement announces the orders SQL marks.
    assert kept.completed_at is not None
    sale = SettleableOrder(
        id=kept.id,
        seller_id=kept.seller_id,
        buyer_id=kept.buyer_id,
        product_id=kept.product_id,
        price=kept.price,
        completed_at=kept.completed_at,
        version=kept.version,
    )
    nightly, _ = marketplace.pay_out_seller(sally, [sale], 500, business_date_of(later), ids, later)
    nightly.announce_settled([sale], later)

    aggregates: list[Aggregate] = [
        admin,
        bob,
        sally,
        product,
        coupon,
        spare,
        ask_image,
        withdrawn_image,
        sold_image,
        ask,
        withdrawn,
        expiring,
        bid,
        regretted,
        bought,
        sold,
        *inspected,
        settlement,
        nightly,
    ]
    return [event for aggregate in aggregates for event in aggregate.events]


def test_the_marketplace_records_every_kind_of_event(ids: IdGenerator, now: datetime) -> None:
    recorded = {type(event) for event in every_kind_of_change(ids, now)}

    assert recorded == EVENT_CLASSES


def test_every_payload_survives_a_json_round_trip(ids: IdGenerator, now: datetime) -> None:
    for event in every_kind_of_change(ids, now):
        payload = event.to_payload()

        assert json.loads(json.dumps(payload)) == payload, event.event_type


def test_every_event_comes_back_from_its_payload(ids: IdGenerator, now: datetime) -> None:
    for event in every_kind_of_change(ids, now):
        payload = json.loads(json.dumps(event.to_payload()))

        back = type(event).from_payload(payload)

        assert back == event, event.event_type
        assert back.to_payload() == event.to_payload(), event.event_type
        assert events.event_class(event.event_type) is type(event)


def test_from_payload_gives_aware_utc_instants_and_dates() -> None:
    payload = {
        "aggregate_id": "s", "version": 1, "occurred_at": "2025-03-15T00:10:00+09:00",
        "settlement_id": "s", "seller_id": "sally", "business_date": "2025-03-14",
        "order_count": 1, "gross": 100, "fee": 5, "net": 95,
    }  # fmt: skip

    event = events.SettlementCompleted.from_payload(payload)

    assert event.occurred_at == datetime(2025, 3, 14, 15, 10, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert event.business_date == date(2025, 3, 14)


def test_from_payload_ignores_fields_a_newer_writer_added(now: datetime) -> None:
    liked = events.ProductLiked(
        aggregate_id="p", version=2, occurred_at=now, product_id="p", user_id="u", like_count=1
    )

    newer = liked.to_payload() | {"liked_from": "app"}

    assert events.ProductLiked.from_payload(newer) == liked


def test_a_payload_without_a_field_that_cannot_be_none_is_refused(now: datetime) -> None:
    payload = events.ProductLiked(
        aggregate_id="p", version=2, occurred_at=now, product_id="p", user_id="u", like_count=1
    ).to_payload()
    del payload["like_count"]

    with pytest.raises(ValueError, match="like_count"):
        events.ProductLiked.from_payload(payload)


def test_an_order_settled_before_it_carried_its_times_settled_when_recorded(
    now: datetime,
) -> None:
    settled = events.OrderSettled(
        aggregate_id="o", version=3, occurred_at=now, order_id="o", product_id="p",
        buyer_id="b", seller_id="s", settlement_id="st",
        completed_at=now - timedelta(days=1), settled_at=now + timedelta(seconds=1),
    )  # fmt: skip
    older = settled.to_payload()
    del older["completed_at"], older["settled_at"]

    assert events.OrderSettled.from_payload(older) == dataclasses.replace(
        settled, completed_at=None, settled_at=now
    )


def test_an_event_type_this_code_does_not_know_has_no_class() -> None:
    assert events.event_class("GiftWrapped") is None
    assert events.event_class("DomainEvent") is None


def test_payload_names_the_aggregate_by_its_own_id_field(ids: IdGenerator, now: datetime) -> None:
    for event in every_kind_of_change(ids, now):
        payload = event.to_payload()

        assert payload[f"{event.aggregate_type}_id"] == event.aggregate_id, event.event_type


def test_versions_rise_by_one_per_change_of_an_aggregate(ids: IdGenerator, now: datetime) -> None:
    versions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in every_kind_of_change(ids, now):
        versions[event.aggregate_type, event.aggregate_id].append(event.version)

    for aggregate, seen in versions.items():
        assert seen == sorted(seen), aggregate
        # Events recorded by one change (PointsCharged + UserBalancesChanged) share it.
        assert sorted(set(seen)) == list(range(1, len(set(seen)) + 1)), aggregate


def test_payload_writes_instants_in_utc_and_dates_as_iso() -> None:
    seoul = timezone(timedelta(hours=9))
    event = events.SettlementCompleted(
        aggregate_id="s",
        version=1,
        occurred_at=datetime(2025, 3, 15, 0, 10, tzinfo=seoul),
        settlement_id="s",
        seller_id="sally",
        business_date=date(2025, 3, 14),
        order_count=1,
        gross=100,
        fee=5,
        net=95,
    )

    payload = event.to_payload()

    assert payload["occurred_at"] == "2025-03-14T15:10:00+00:00"
    assert payload["business_date"] == "2025-03-14"
    assert (payload["gross"], payload["fee"], payload["net"]) == (100, 5, 95)


def test_payload_writes_enums_as_their_plain_value(ids: IdGenerator, now: datetime) -> None:
    changed = [
        event
        for event in every_kind_of_change(ids, now)
        if isinstance(event, events.UserBalancesChanged | events.OrderPlaced)
    ]

    for event in changed:
        values = event.to_payload().values()
        assert all(type(value) in (str, int, bool, type(None)) for value in values)


def test_event_type_is_the_class_name(now: datetime) -> None:
    event = events.ProductLiked(
        aggregate_id="p", version=2, occurred_at=now, product_id="p", user_id="u", like_count=1
    )

    assert event.event_type == "ProductLiked"
    assert event.aggregate_type == "product"


def test_events_cannot_be_changed_after_the_fact(now: datetime) -> None:
    event = events.ProductLiked(
        aggregate_id="p", version=2, occurred_at=now, product_id="p", user_id="u", like_count=1
    )

    with pytest.raises(dataclasses.FrozenInstanceError):
        event.like_count = 2  # type: ignore[misc]
