"""Events → read-model operations, and the operations' encoding (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from tests.support.fakes import RecordedCommands

from giftmarket.adapters.read_models import DETAIL_PRICES, DETAIL_TRADES
from giftmarket.commands.accounts import IssueWelcomeCoupon
from giftmarket.domain import events
from giftmarket.messages import EventEnvelope, MalformedMessage
from giftmarket.projections import ops
from giftmarket.projections.projector import _PROJECTIONS, Projector, operations
from giftmarket.queries.products import LADDER_PRICES, RECENT_TRADES
from giftmarket.read_ports import Op, ReadModelWriter

AT = datetime(2026, 11, 22, 5, 30, 1, 123456, tzinfo=UTC)


def envelope(event: events.DomainEvent) -> EventEnvelope:
    return EventEnvelope(
        outbox_id="01KAQ3Y4MJ0A1B2C3D4E5F6G7H",
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        version=event.version,
        event_type=event.event_type,
        message_group=f"{event.aggregate_type}:{event.aggregate_id}",
        occurred_at=event.occurred_at,
        payload=event.to_payload(),
    )


def delivered(event: events.DomainEvent) -> events.DomainEvent:
    """`event` as the projector gets it: an outbox payload in an SQS body, decoded."""
    received = EventEnvelope.from_json(envelope(event).to_json()).event()
    assert received is not None
    return received


def common(aggregate_id: str, version: int) -> dict[str, Any]:
    return {"aggregate_id": aggregate_id, "version": version, "occurred_at": AT}


def test_every_value_is_a_string_and_null_is_empty() -> None:
    assert ops.text(None) == ""
    assert ops.text(True) == "1" and ops.text(False) == "0"
    assert ops.text(2**62) == "4611686018427387904"
    assert ops.text(date(2026, 11, 21)) == "2026-11-21"
    assert ops.text(datetime(2026, 11, 22, 5, 30)) == "2026-11-22T05:30:00+00:00"


def test_micros_are_exact_for_naive_aware_and_iso_times() -> None:
    expected = "1795325401123456"
    assert ops.micros(AT) == expected
    assert ops.micros(AT.replace(tzinfo=None)) == expected
    assert ops.micros(AT.isoformat()) == expected
    kst = datetime.fromisoformat("2026-11-22T14:30:01.123456+09:00")
    assert ops.micros(kst) == expected


PARTIES: ops.OrderParties = {"product_id": "p1", "buyer_id": "b1", "seller_id": "s1"}
EXPIRES_ON = date(2026, 12, 31)


def placed_order(status: str = "PAID", delivered_at: datetime | None = AT) -> events.OrderPlaced:
    return events.OrderPlaced(
        **common("o1", 1), order_id="o1", product_id="p1", buyer_id="b1", seller_id="s1",
        price=5000, discount=1000, paid=4000, sell_bid_id="a1", buy_bid_id=None,
        coupon_id="c1", image_id="i1", via="buy_now", status=status, delivered_at=delivered_at,
        barcode_last4="4321", expires_on=EXPIRES_ON,
    )  # fmt: skip


def test_an_event_and_the_row_it_left_make_the_same_operation() -> None:
    terms: ops.OrderTerms = {
        "price": 5000, "discount": 1000, "paid": 4000, "via": "buy_now", "image_id": "i1",
    }  # fmt: skip
    from_row = ops.order(
        "o1", 1, parties=PARTIES, terms=terms, status="PAID", completed_at=None,
        settled_at=None, created_at=AT.replace(tzinfo=None),
        facts={"barcode_last4": "4321", "expires_on": EXPIRES_ON,
               "delivered_at": AT.replace(tzinfo=None)},
    )  # fmt: skip
    assert operations(delivered(placed_order())) == [from_row]


def test_an_order_placed_for_inspection_leaves_its_delivery_unknown() -> None:
    (op,) = operations(delivered(placed_order("INSPECTING", delivered_at=None)))
    assert op["set"]["status"] == "INSPECTING"
    # Empty: not written, so the delivery, whenever it is projected, can write it.
    assert op["once"]["delivered_at"] == ""
    assert (op["once"]["barcode_last4"], op["once"]["expires_on"]) == ("4321", "2026-12-31")


def test_a_payload_from_before_vouchers_is_an_order_delivered_when_placed() -> None:
    payload = placed_order().to_payload()
    for name in ("status", "delivered_at", "barcode_last4", "expires_on"):
        del payload[name]
    older = events.OrderPlaced.from_payload(payload)
    (op,) = operations(older)
    assert op["set"]["status"] == "PAID"
    assert op["once"]["delivered_at"] == AT.isoformat()
    assert op["once"]["barcode_last4"] == ""


def test_a_delivery_writes_the_delivery_time_once_and_pays_the_order() -> None:
    delivered_at = datetime(2026, 11, 23, 1, 2, 3, tzinfo=UTC)
    event = events.OrderDelivered(
        **common("o1", 2), **PARTIES, order_id="o1", delivered_at=delivered_at,
        inspected_by="admin",
    )  # fmt: skip
    (op,) = operations(delivered(event))
    assert (op["v"], op["set"]["status"]) == ("2", "PAID")
    assert op["once"]["delivered_at"] == delivered_at.isoformat()


def _refund_ops(*changes: events.DomainEvent) -> list[Op]:
    return [op for change in changes for op in operations(delivered(change))]


def test_events_recorded_together_set_the_same_state_whichever_lands_last() -> None:
    at = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    refunded = events.OrderRefunded(
        **common("o1", 3), **PARTIES, order_id="o1", price=5000, discount=1000, paid=4000,
        coupon_id="c1", cause="dispute_upheld", refunded_at=at,
    )  # fmt: skip
    upheld = events.OrderDisputeResolved(
        **common("o1", 3), **PARTIES, order_id="o1", decision="refund", note=None,
        decided_by="admin", decided_at=at,
    )  # fmt: skip
    failed = events.OrderInspectionFailed(
        **common("o1", 2), **PARTIES, order_id="o1", reason="used", inspected_by="admin",
        decided_at=at,
    )  # fmt: skip
    rejected = events.OrderDisputeResolved(
        **common("o1", 3), **PARTIES, order_id="o1", decision="reject", note="works",
        decided_by="admin", decided_at=at,
    )  # fmt: skip
    completed = events.OrderCompleted(
        **common("o1", 3), **PARTIES, order_id="o1", price=5000, automatically=False,
        completed_at=at,
    )  # fmt: skip
    refund_set = {"status": "REFUNDED", "completed_at": "", "settled_at": ""}
    for op in _refund_ops(refunded, upheld, failed):
        assert op["set"] == refund_set
        assert op["once"]["refunded_at"] == at.isoformat()
    reject, complete = _refund_ops(rejected, completed)
    assert reject["set"] == complete["set"] == {
        "status": "COMPLETED", "completed_at": at.isoformat(), "settled_at": "",
    }  # fmt: skip
    assert (reject["once"]["dispute_decision"], reject["once"]["dispute_decided_at"]) == (
        "reject",
        at.isoformat(),
    )
    assert "refunded_at" not in reject["once"]


def test_a_dispute_keeps_its_reason_and_opening_once_known() -> None:
    opened = datetime(2026, 11, 23, 12, 0, 0, 5, tzinfo=UTC)
    disputed = events.OrderDisputed(
        **common("o1", 2), **PARTIES, order_id="o1", price=5000, reason="already used",
        opened_at=opened,
    )  # fmt: skip
    (op,) = operations(delivered(disputed))
    assert op["set"]["status"] == "DISPUTED"
    assert op["once"]["dispute_reason"] == "already used"
    assert op["once"]["dispute_opened_at"] == opened.isoformat()
    assert op["once"]["dispute_opened_us"] == ops.micros(opened)


def test_a_restored_coupon_is_available_again_under_its_version() -> None:
    restored = events.CouponRestored(
        **common("c1", 3), coupon_id="c1", user_id="b1", order_id="o1", expires_at=AT
    )
    (op,) = operations(delivered(restored))
    assert (op["k"], op["v"], op["set"]) == ("coupon", "3", {"status": "AVAILABLE"})


def test_later_order_events_carry_the_whole_changing_state() -> None:
    completed_at = datetime(2026, 11, 23, tzinfo=UTC)
    settled = events.OrderSettled(
        **common("o1", 3), order_id="o1", product_id="p1", buyer_id="b1", seller_id="s1",
        settlement_id="st1", completed_at=completed_at, settled_at=AT,
    )  # fmt: skip
    (op,) = operations(delivered(settled))
    assert op["set"] == {
        "status": "SETTLED",
        "completed_at": completed_at.isoformat(),
        "settled_at": AT.isoformat(),
    }
    assert "created_us" not in op["once"]  # only the placement knows it


def test_a_settlements_orders_settled_make_what_each_orders_own_event_makes() -> None:
    completed = (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 24, 1, 2, 3, 4, UTC))
    one_by_one = [
        events.OrderSettled(
            **common(order_id, version), order_id=order_id, product_id=product_id,
            buyer_id=buyer_id, seller_id="s1", settlement_id="st1", completed_at=at,
            settled_at=AT,
        )
        for order_id, version, product_id, buyer_id, at in (
            ("o1", 4, "p1", "b1", completed[0]), ("o2", 6, "p2", "b2", completed[1])
        )
    ]  # fmt: skip
    together = events.OrdersSettled(
        **common("st1", 1), settlement_id="st1", seller_id="s1", settled_at=AT,
        order_ids=("o1", "o2"), order_versions=(4, 6), product_ids=("p1", "p2"),
        buyer_ids=("b1", "b2"), completed_at=completed,
    )  # fmt: skip
    expected = [op for event in one_by_one for op in operations(delivered(event))]
    assert operations(delivered(together)) == expected
    assert [op["id"] for op in expected] == ["o1", "o2"]


def test_bid_events_open_and_close_the_bid_under_its_version() -> None:
    base: dict[str, Any] = {"sell_bid_id": "a1", "product_id": "p1", "seller_id": "s1"}
    base["price"] = 5000
    placed = events.SellBidPlaced(
        **common("a1", 1), **base, image_id="i1", barcode_last4="0042", expires_on=EXPIRES_ON
    )
    cancelled = events.SellBidCancelled(**common("a1", 2), **base, image_id="i1")
    expired = events.SellBidExpired(**common("a1", 2), **base, image_id="i1", expires_on=EXPIRES_ON)
    (opened,) = operations(delivered(placed))
    (closed,) = operations(delivered(cancelled))
    (gone,) = operations(delivered(expired))
    assert (opened["k"], opened["v"], opened["set"]["status"]) == ("ask", "1", "OPEN")
    assert opened["once"]["owner_id"] == "s1" and "created_us" in opened["once"]
    assert (opened["once"]["barcode_last4"], opened["once"]["expires_on"]) == (
        "0042",
        "2026-12-31",
    )
    assert (closed["v"], closed["set"]["status"]) == ("2", "CANCELLED")
    assert "created_us" not in closed["once"]
    assert (gone["v"], gone["set"]["status"]) == ("2", "EXPIRED")


def test_events_no_query_shows_make_no_operation() -> None:
    charged = events.PointsCharged(
        **common("u1", 2), user_id="u1", amount=5, available_points=5, transaction_id="t1"
    )
    assert operations(delivered(charged)) == []


def test_a_deleted_image_is_marked_gone_and_a_requested_one_is_not_written() -> None:
    deleted = events.ImageDeleted(
        **common("i1", 3), image_id="i1", owner_id="u1", s3_key="images/u1/i1"
    )
    (op,) = operations(delivered(deleted))
    assert (op["k"], op["id"], op["v"]) == ("image", "i1", "3")
    assert (op["once"], op["set"]) == ({}, {"status": "DELETED"})
    requested = events.ImageRequested(
        **common("i2", 1), image_id="i2", owner_id="u1", s3_key="images/u1/i2",
        content_type="image/png",
    )  # fmt: skip
    assert operations(delivered(requested)) == []


# -- which events are projected, by class --------------------------------------------------

EVENT_CLASSES = {
    value
    for value in vars(events).values()
    if isinstance(value, type)
    and issubclass(value, events.DomainEvent)
    and value is not events.DomainEvent
}
PROJECTED = {
    events.UserSignedUp, events.UserBalancesChanged, events.ProductRegistered,
    events.ProductLiked, events.ProductUnliked, events.ImageDeleted,
    events.SellBidPlaced, events.SellBidCancelled, events.SellBidMatched,
    events.BuyBidPlaced, events.BuyBidCancelled, events.BuyBidMatched,
    events.OrderPlaced, events.OrderCompleted, events.OrderSettled, events.OrdersSettled,
    events.CouponIssued, events.CouponUsed, events.SettlementCompleted,
    events.SellBidExpired, events.OrderDelivered, events.OrderInspectionFailed,
    events.OrderDisputed, events.OrderDisputeResolved, events.OrderRefunded,
    events.CouponRestored,
}  # fmt: skip
NO_QUERY_SHOWS = {
    events.PointsCharged, events.ImageRequested, events.ImageAttached,
    events.ImageDeletionStarted,
}  # fmt: skip


MADE_UP: dict[object, Any] = {str: "x1", int: 7, bool: False, datetime: AT, date: AT.date()}


def sample(event_class: type[events.DomainEvent]) -> events.DomainEvent:
    """An event of `event_class` with a made-up value of its type in every field."""
    hints = get_type_hints(event_class)

    def made_up(hint: object) -> Any:
        if get_origin(hint) is tuple:  # tuple[X, ...]: one item
            return (made_up(get_args(hint)[0]),)
        return next(MADE_UP[k] for k in (hint, *get_args(hint)) if k in MADE_UP)  # str | None: str

    return event_class(**{f.name: made_up(hints[f.name]) for f in fields(event_class)})


def test_every_event_class_is_projected_or_shown_by_no_query() -> None:
    assert PROJECTED | NO_QUERY_SHOWS == EVENT_CLASSES
    assert not PROJECTED & NO_QUERY_SHOWS


def test_projections_are_registered_by_event_class_each_taking_its_class() -> None:
    assert set(_PROJECTIONS) == PROJECTED
    for event_class, projection in _PROJECTIONS.items():
        taken = get_type_hints(projection)["e"]
        assert event_class in (taken, *get_args(taken)), (event_class, projection)


def test_every_projected_event_makes_operations_and_the_others_none() -> None:
    for event_class in EVENT_CLASSES:
        made = operations(delivered(sample(event_class)))
        assert bool(made) == (event_class in PROJECTED), event_class.__name__


class RecordingReadModels(ReadModelWriter):
    def __init__(self) -> None:
        self.applied: list[tuple[list[Op], str | None]] = []

    def apply(self, changes: Sequence[Op], *, outbox_id: str | None = None) -> int:
        self.applied.append((list(changes), outbox_id))
        return 1


def test_an_event_type_this_code_does_not_know_is_marked_seen_and_skipped() -> None:
    newer = EventEnvelope(
        outbox_id="01KAQ3Y4MJ0A1B2C3D4E5F6G7H", aggregate_type="gift", aggregate_id="g1",
        version=1, event_type="GiftWrapped", message_group="gift:g1", occurred_at=AT,
        payload={"paper": "red"},
    )  # fmt: skip
    read_models, commands = RecordingReadModels(), RecordedCommands((IssueWelcomeCoupon,))

    assert newer.event() is None
    Projector(read_models, commands.executor).handle(newer)

    assert read_models.applied == [([], "01KAQ3Y4MJ0A1B2C3D4E5F6G7H")]
    assert commands.executed == []


def test_a_payload_that_is_not_the_event_its_type_names_is_malformed() -> None:
    liked = envelope(sample(events.ProductLiked))
    del liked.payload["like_count"]

    with pytest.raises(MalformedMessage, match="like_count"):
        liked.event()


def test_the_rendered_product_detail_holds_what_the_detail_query_shows() -> None:
    # More would make every product detail a read-model miss, answered by SQL.
    assert RECENT_TRADES <= DETAIL_TRADES
    assert LADDER_PRICES <= DETAIL_PRICES
