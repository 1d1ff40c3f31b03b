"""Orders: INSPECTING → PAID (delivered) → COMPLETED (the buyer confirms, or 72 hours after
delivery) → SETTLED; a delivered order the buyer disputes is DISPUTED until an admin refunds
it (REFUNDED) or rejects the dispute (COMPLETED); an order failing inspection is REFUNDED."""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Self, TypedDict

from giftmarket.domain import events
from giftmarket.domain.errors import (
    NotDelivered,
    NotFound,
    OrderNotConfirmable,
    OrderNotDisputable,
    OrderNotPending,
)
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.validation import require_text

AUTO_COMPLETE_AFTER = timedelta(hours=72)
MAX_REASON_LENGTH = 500


def auto_complete_delivered_before(now: datetime) -> datetime:
    """Orders delivered at or before this instant are due to complete automatically at
    `now`."""
    return now - AUTO_COMPLETE_AFTER


def may_download(*, buyer_id: str, seller_id: str, delivered: bool, viewer_id: str) -> bool:
    """Whether `viewer_id` may download the order's voucher image: the seller always (their
    own upload), the buyer once the voucher was delivered (NotDelivered before), nobody
    else (False: the order is not found for them). The query side applies it to what its
    stores hold."""
    if viewer_id not in (buyer_id, seller_id):
        return False
    if viewer_id == buyer_id and viewer_id != seller_id and not delivered:
        raise NotDelivered()
    return True


class _OrderEventHeader(TypedDict):
    aggregate_id: str
    version: int
    occurred_at: datetime
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str


class OrderStatus(StrEnum):
    INSPECTING = "INSPECTING"
    PAID = "PAID"
    DISPUTED = "DISPUTED"
    COMPLETED = "COMPLETED"
    SETTLED = "SETTLED"
    REFUNDED = "REFUNDED"


# Which history state shows an order in each status (PRODUCT.md, "History states" and
# "States and history"): a purchase is done once the buyer has it for good (confirmed,
# settled or refunded), a sale once it is paid out or refunded.
PURCHASE_STATE: dict[OrderStatus, str] = {
    OrderStatus.INSPECTING: "in_progress",
    OrderStatus.PAID: "in_progress",
    OrderStatus.DISPUTED: "in_progress",
    OrderStatus.COMPLETED: "done",
    OrderStatus.SETTLED: "done",
    OrderStatus.REFUNDED: "done",
}
SALE_STATE: dict[OrderStatus, str] = PURCHASE_STATE | {OrderStatus.COMPLETED: "in_progress"}


class InspectionResult(StrEnum):
    PASS = "pass"  # noqa: S105 - not a password
    FAIL = "fail"


class DisputeDecision(StrEnum):
    REFUND = "refund"
    REJECT = "reject"


class RefundCause(StrEnum):
    INSPECTION_FAILED = "inspection_failed"
    DISPUTE_UPHELD = "dispute_upheld"


class OrderVia(StrEnum):
    BUY_NOW = "buy_now"
    SELL_NOW = "sell_now"


@dataclass(eq=False, kw_only=True)
class Order:
    id: str
    product_id: str
    buyer_id: str
    seller_id: str
    price: int
    discount: int
    paid: int
    status: OrderStatus
    via: OrderVia
    sell_bid_id: str | None
    buy_bid_id: str | None
    coupon_id: str | None
    image_id: str
    # The voucher's facts; None only on orders placed before vouchers had them.
    barcode_last4: str | None
    expires_on: date | None
    settlement_id: str | None
    created_at: datetime
    delivered_at: datetime | None  # None while INSPECTING, and for an order never delivered
    completed_at: datetime | None
    settled_at: datetime | None
    inspected_by: str | None
    inspection_failure: str | None
    dispute_reason: str | None
    dispute_opened_at: datetime | None
    dispute_decision: DisputeDecision | None
    dispute_note: str | None
    dispute_decided_by: str | None
    dispute_decided_at: datetime | None
    refunded_at: datetime | None
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def place(
        cls,
        *,
        order_id: str,
        product_id: str,
        buyer_id: str,
        seller_id: str,
        price: int,
        discount: int,
        via: OrderVia,
        image_id: str,
        barcode_last4: str | None,
        expires_on: date | None,
        inspect: bool,
        now: datetime,
        sell_bid_id: str | None = None,
        buy_bid_id: str | None = None,
        coupon_id: str | None = None,
    ) -> Self:
        if not 0 <= discount <= price:
            raise ValueError(f"discount {discount} must lie within 0..{price}")
        order = cls(
            id=order_id,
            product_id=product_id,
            buyer_id=buyer_id,
            seller_id=seller_id,
            price=price,
            discount=discount,
            paid=price - discount,
            status=OrderStatus.INSPECTING if inspect else OrderStatus.PAID,
            via=via,
            sell_bid_id=sell_bid_id,
            buy_bid_id=buy_bid_id,
            coupon_id=coupon_id,
            image_id=image_id,
            barcode_last4=barcode_last4,
            expires_on=expires_on,
            settlement_id=None,
            created_at=now,
            delivered_at=None if inspect else now,
            completed_at=None,
            settled_at=None,
            inspected_by=None,
            inspection_failure=None,
            dispute_reason=None,
            dispute_opened_at=None,
            dispute_decision=None,
            dispute_note=None,
            dispute_decided_by=None,
            dispute_decided_at=None,
            refunded_at=None,
            version=1,
        )
        order.events.append(
            events.OrderPlaced(
                aggregate_id=order.id,
                version=order.version,
                occurred_at=now,
                order_id=order.id,
                product_id=product_id,
                buyer_id=buyer_id,
                seller_id=seller_id,
                price=price,
                discount=discount,
                paid=order.paid,
                sell_bid_id=sell_bid_id,
                buy_bid_id=buy_bid_id,
                coupon_id=coupon_id,
                image_id=image_id,
                via=via,
                status=order.status,
                delivered_at=order.delivered_at,
                barcode_last4=order.barcode_last4,
                expires_on=order.expires_on,
            )
        )
        return order

    @property
    def auto_complete_at(self) -> datetime | None:
        """72 hours after delivery; None before delivery."""
        return None if self.delivered_at is None else self.delivered_at + AUTO_COMPLETE_AFTER

    def is_party(self, user_id: str) -> bool:
        return user_id in (self.buyer_id, self.seller_id)

    def ensure_downloadable_by(self, user_id: str) -> None:
        if not may_download(
            buyer_id=self.buyer_id,
            seller_id=self.seller_id,
            delivered=self.delivered_at is not None,
            viewer_id=user_id,
        ):
            raise NotFound("order")

    # -- inspection (admins) -----------------------------------------------------------

    def pass_inspection(self, by_admin: str, now: datetime) -> None:
        self._require_pending(OrderStatus.INSPECTING, "inspected")
        self.status = OrderStatus.PAID
        self.delivered_at = now
        self.inspected_by = by_admin
        self.version += 1
        self.events.append(
            events.OrderDelivered(
                **self._about(now),
                delivered_at=now,
                inspected_by=by_admin,
            )
        )

    def fail_inspection(self, by_admin: str, reason: str, now: datetime) -> None:
        """The order is refunded: the caller moves the money (`marketplace.refund`)."""
        self._require_pending(OrderStatus.INSPECTING, "inspected")
        reason = require_text(reason, "reason", MAX_REASON_LENGTH)
        self.inspected_by = by_admin
        self.inspection_failure = reason
        self.events.append(
            events.OrderInspectionFailed(
                **self._about(now, version=self.version + 1),
                reason=reason,
                inspected_by=by_admin,
                decided_at=now,
            )
        )
        self._refund(RefundCause.INSPECTION_FAILED, now)

    # -- disputes ----------------------------------------------------------------------

    def open_dispute(self, by_user: str, reason: str, now: datetime) -> None:
        if not self.is_party(by_user):
            raise NotFound("order")
        if by_user != self.buyer_id:
            raise OrderNotDisputable("only the buyer can dispute an order.")
        if self.status is not OrderStatus.PAID:
            raise OrderNotDisputable(f"the order is {self.status}, not a delivered PAID order.")
        if self.is_due_for_completion(now):
            raise OrderNotDisputable("the 72 hours to confirm or dispute the order are over.")
        reason = require_text(reason, "reason", MAX_REASON_LENGTH)
        self.status = OrderStatus.DISPUTED
        self.dispute_reason = reason
        self.dispute_opened_at = now
        self.version += 1
        self.events.append(
            events.OrderDisputed(
                **self._about(now),
                price=self.price,
                reason=reason,
                opened_at=now,
            )
        )

    def resolve_dispute(
        self, by_admin: str, decision: DisputeDecision, note: str | None, now: datetime
    ) -> None:
        """refund: REFUNDED (the caller moves the money); reject: COMPLETED now."""
        self._require_pending(OrderStatus.DISPUTED, "resolved")
        note = None if note is None or not note.strip() else note.strip()[:MAX_REASON_LENGTH]
        self.dispute_decision = decision
        self.dispute_note = note
        self.dispute_decided_by = by_admin
        self.dispute_decided_at = now
        resolved = events.OrderDisputeResolved(
            **self._about(now, version=self.version + 1),
            decision=decision,
            note=note,
            decided_by=by_admin,
            decided_at=now,
        )
        self.events.append(resolved)
        if decision is DisputeDecision.REFUND:
            self._refund(RefundCause.DISPUTE_UPHELD, now)
        else:
            self._complete(completed_at=now, now=now, automatically=False)

    def ensure_inspecting(self) -> None:
        """Refuses an inspection decision (409 order_not_pending) unless INSPECTING."""
        self._require_pending(OrderStatus.INSPECTING, "inspected")

    def ensure_disputed(self) -> None:
        """Refuses a dispute resolution (409 order_not_pending) unless DISPUTED."""
        self._require_pending(OrderStatus.DISPUTED, "resolved")

    def _about(self, now: datetime, *, version: int | None = None) -> _OrderEventHeader:
        """What every event of this order says first: which order, whose, when, at which
        version (by default the order's current one)."""
        return {
            "aggregate_id": self.id,
            "version": self.version if version is None else version,
            "occurred_at": now,
            "order_id": self.id,
            "product_id": self.product_id,
            "buyer_id": self.buyer_id,
            "seller_id": self.seller_id,
        }

    def _require_pending(self, status: OrderStatus, what: str) -> None:
        if self.status is not status:
            raise OrderNotPending(f"the order is {self.status}: there is nothing to be {what}.")

    def _refund(self, cause: RefundCause, now: datetime) -> None:
        self.status = OrderStatus.REFUNDED
        self.refunded_at = now
        self.version += 1
        self.events.append(
            events.OrderRefunded(
                **self._about(now),
                price=self.price,
                discount=self.discount,
                paid=self.paid,
                coupon_id=self.coupon_id,
                cause=cause,
                refunded_at=now,
            )
        )

    def confirm(self, by_user: str, now: datetime) -> None:
        if not self.is_party(by_user):
            raise NotFound("order")
        if by_user != self.buyer_id:
            raise OrderNotConfirmable("only the buyer can confirm an order.")
        if self.status is not OrderStatus.PAID:
            raise OrderNotConfirmable(f"the order is {self.status}, not PAID.")
        self._complete(completed_at=now, now=now, automatically=False)

    def is_due_for_completion(self, now: datetime) -> bool:
        due = self.auto_complete_at
        return self.status is OrderStatus.PAID and due is not None and now >= due

    def complete_if_due(self, now: datetime) -> bool:
        """Completes a PAID order 72 hours after its delivery. It counts as completed when
        the 72 hours ran out, not when a job noticed, so settlement does not depend on when
        the job happened to run. A disputed order is never due."""
        due = self.auto_complete_at
        if not self.is_due_for_completion(now) or due is None:
            return False
        self._complete(completed_at=due, now=now, automatically=True)
        return True

    def settle(self, settlement_id: str, now: datetime) -> None:
        if self.status is not OrderStatus.COMPLETED:
            raise ValueError(f"order {self.id} is {self.status}; only COMPLETED orders settle")
        self.status = OrderStatus.SETTLED
        self.settlement_id = settlement_id
        self.settled_at = now
        self.version += 1
        self.events.append(
            events.OrderSettled(
                **self._about(now),
                settlement_id=settlement_id,
                completed_at=self.completed_at,
                settled_at=now,
            )
        )

    def _complete(self, *, completed_at: datetime, now: datetime, automatically: bool) -> None:
        self.status = OrderStatus.COMPLETED
        self.completed_at = completed_at
        self.version += 1
        self.events.append(
            events.OrderCompleted(
                **self._about(now),
                price=self.price,
                automatically=automatically,
                completed_at=completed_at,
            )
        )
