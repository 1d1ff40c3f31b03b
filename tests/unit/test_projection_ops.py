"""Events → read-model operations, and the operations' encoding (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any, get_args, get_type_hints

import pytest
from tests.support.fakes import RecordedCommands

from giftmarket.commands.accounts import IssueWelcomeCoupon
from giftmarket.domain import events
from giftmarket.messages import EventEnvelope, MalformedMessage
from giftmarket.projections import ops
from giftmarket.projections.projector import _PROJECTIONS, Projector, operations
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


def test_an_event_and_the_row_it_left_make_the_same_operation() -> None:
    placed = events.OrderPlaced(
        **common("o1", 1), order_id="o1", product_id="p1", buyer_id="b1", seller_id="s1",
        price=5000, discount=1000, paid=4000, sell_bid_id="a1", buy_bid_id=None,
        coupon_id="c1", image_id="i1", via="buy_now",
    )  # fmt: skip
    parties: ops.OrderParties = {"product_id": "p1", "buyer_id": "b1", "seller_id": "s1"}
    terms: ops.OrderTerms = {
        "price": 5000, "discount": 1000, "paid": 4000, "via": "buy_now", "image_id": "i1",
    }  # fmt: skip
    from_row = ops.order(
        "o1", 1, parties=parties, terms=terms, status="PAID", completed_at=None,
        settled_at=None, created_at=AT.replace(tzinfo=None),
    )  # fmt: skip
    assert operations(delivered(placed)) == [from_row]


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


def test_bid_events_open_and_close_the_bid_under_its_version() -> None:
    base: dict[str, Any] = {"sell_bid_id": "a1", "product_id": "p1", "seller_id": "s1"}
    base["price"] = 5000
    placed = events.SellBidPlaced(**common("a1", 1), **base, image_id="i1")
    cancelled = events.SellBidCancelled(**common("a1", 2), **base, image_id="i1")
    (opened,) = operations(delivered(placed))
    (closed,) = operations(delivered(cancelled))
    assert (opened["k"], opened["v"], opened["set"]["status"]) == ("ask", "1", "OPEN")
    assert opened["once"]["owner_id"] == "s1" and "created_us" in opened["once"]
    assert (closed["v"], closed["set"]["status"]) == ("2", "CANCELLED")
    assert "created_us" not in closed["once"]


def test_events_no_query_shows_make_no_operation() -> None:
    charged = events.PointsCharged(
        **common("u1", 2), user_id="u1", amount=5, available_points=5, transaction_id="t1"
    )
    assert operations(delivered(charged)) == []


def test_a_deleted_image_becomes_a_tombstone_under_its_version() -> None:
    deleted = events.ImageDeleted(
        **common("i1", 3), image_id="i1", owner_id="u1", s3_key="images/u1/i1"
    )
    (op,) = operations(delivered(deleted))
    assert (op["k"], op["id"], op["v"]) == ("image", "i1", "3")
    assert (op["once"], op["set"]) == ({"s3_key": "images/u1/i1"}, {"status": "DELETED"})


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
    events.ProductLiked, events.ProductUnliked, events.ImageRequested, events.ImageDeleted,
    events.SellBidPlaced, events.SellBidCancelled, events.SellBidMatched,
    events.BuyBidPlaced, events.BuyBidCancelled, events.BuyBidMatched,
    events.OrderPlaced, events.OrderCompleted, events.OrderSettled,
    events.CouponIssued, events.CouponUsed, events.SettlementCompleted,
}  # fmt: skip
NO_QUERY_SHOWS = {events.PointsCharged, events.ImageAttached, events.ImageDeletionStarted}


MADE_UP: dict[object, Any] = {str: "x1", int: 7, bool: False, datetime: AT, date: AT.date()}


def sample(event_class: type[events.DomainEvent]) -> events.DomainEvent:
    """An event of `event_class` with a made-up value of its type in every field."""
    hints = get_type_hints(event_class)

    def made_up(hint: object) -> Any:
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
