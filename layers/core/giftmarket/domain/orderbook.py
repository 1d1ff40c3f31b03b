"""The order book of each product: sell bids (asks) and buy bids, and how they match."""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar, Self

from giftmarket.domain import events
from giftmarket.domain.errors import BidNotOpen, CrossesBook, NotFound
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.validation import require_points
from giftmarket.domain.vouchers import Voucher, VoucherRules


class BidStatus(StrEnum):
    OPEN = "OPEN"
    MATCHED = "MATCHED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"  # asks only: the voucher got too close to its last valid day


class _OpenBid(ABC):
    """What asks and buy bids share: an OPEN bid is cancelled by its owner or matched once.

    Subclasses say whose bid it is and which events record its end."""

    kind: ClassVar[str]  # "sell bid" / "buy bid", as errors name it
    id: str
    status: BidStatus
    updated_at: datetime
    version: int
    events: list[DomainEvent]

    @property
    @abstractmethod
    def owner_id(self) -> str: ...

    @abstractmethod
    def _cancelled(self, now: datetime) -> DomainEvent: ...

    @abstractmethod
    def _matched(self, order_id: str, now: datetime) -> DomainEvent: ...

    def ensure_open(self) -> None:
        if self.status is not BidStatus.OPEN:
            raise BidNotOpen(f"the {self.kind} is {self.status}.")

    def ensure_cancellable_by(self, user_id: str) -> None:
        if user_id != self.owner_id:
            raise NotFound(self.kind)
        self.ensure_open()

    def cancel(self, by_user: str, now: datetime) -> None:
        self.ensure_cancellable_by(by_user)
        self._close(BidStatus.CANCELLED, now)
        self.events.append(self._cancelled(now))

    def match(self, order_id: str, now: datetime) -> None:
        self.ensure_open()
        self._close(BidStatus.MATCHED, now)
        self.events.append(self._matched(order_id, now))

    def _close(self, status: BidStatus, now: datetime) -> None:
        self.status = status
        self.updated_at = now
        self.version += 1


@dataclass(eq=False, kw_only=True)
class SellBid(_OpenBid):
    kind = "sell bid"
    id: str
    product_id: str
    seller_id: str
    price: int
    image_id: str
    # The voucher's facts; None only on asks listed before vouchers had them.
    barcode_last4: str | None
    expires_on: date | None
    status: BidStatus
    created_at: datetime
    updated_at: datetime
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def place(
        cls,
        *,
        sell_bid_id: str,
        product_id: str,
        seller_id: str,
        price: int,
        image_id: str,
        voucher: Voucher,
        now: datetime,
    ) -> Self:
        ask = cls(
            id=sell_bid_id,
            product_id=product_id,
            seller_id=seller_id,
            price=require_points(price, "price"),
            image_id=image_id,
            barcode_last4=voucher.barcode_last4,
            expires_on=voucher.expires_on,
            status=BidStatus.OPEN,
            created_at=now,
            updated_at=now,
            version=1,
        )
        ask.events.append(
            events.SellBidPlaced(
                aggregate_id=ask.id,
                version=ask.version,
                occurred_at=now,
                sell_bid_id=ask.id,
                product_id=product_id,
                seller_id=seller_id,
                price=ask.price,
                image_id=image_id,
                barcode_last4=ask.barcode_last4,
                expires_on=ask.expires_on,
            )
        )
        return ask

    def ensure_takeable(self, rules: VoucherRules, now: datetime) -> None:
        """Buy-now never takes a voucher inside the expiry margin (the repository's query
        already skips them; this holds whatever it returned)."""
        self.ensure_open()
        if not rules.is_takeable(self.expires_on, now):
            raise BidNotOpen("the sell bid's voucher expires too soon to be bought.")

    def expire_if_due(self, rules: VoucherRules, now: datetime) -> bool:
        """An open ask that buy-now may no longer take becomes EXPIRED; its image then
        follows the cancelled-ask retention, counted from now."""
        if self.status is not BidStatus.OPEN or rules.is_takeable(self.expires_on, now):
            return False
        self._close(BidStatus.EXPIRED, now)
        self.events.append(
            events.SellBidExpired(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                sell_bid_id=self.id,
                product_id=self.product_id,
                seller_id=self.seller_id,
                price=self.price,
                image_id=self.image_id,
                expires_on=self.expires_on,
            )
        )
        return True

    @property
    def owner_id(self) -> str:
        return self.seller_id

    def _cancelled(self, now: datetime) -> DomainEvent:
        return events.SellBidCancelled(
            aggregate_id=self.id,
            version=self.version,
            occurred_at=now,
            sell_bid_id=self.id,
            product_id=self.product_id,
            seller_id=self.seller_id,
            price=self.price,
            image_id=self.image_id,
        )

    def _matched(self, order_id: str, now: datetime) -> DomainEvent:
        return events.SellBidMatched(
            aggregate_id=self.id,
            version=self.version,
            occurred_at=now,
            sell_bid_id=self.id,
            product_id=self.product_id,
            seller_id=self.seller_id,
            price=self.price,
            order_id=order_id,
        )


@dataclass(eq=False, kw_only=True)
class BuyBid(_OpenBid):
    kind = "buy bid"
    id: str
    product_id: str
    buyer_id: str
    price: int
    status: BidStatus
    created_at: datetime
    updated_at: datetime
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def place(
        cls, *, buy_bid_id: str, product_id: str, buyer_id: str, price: int, now: datetime
    ) -> Self:
        bid = cls(
            id=buy_bid_id,
            product_id=product_id,
            buyer_id=buyer_id,
            price=require_points(price, "price"),
            status=BidStatus.OPEN,
            created_at=now,
            updated_at=now,
            version=1,
        )
        bid.events.append(
            events.BuyBidPlaced(
                aggregate_id=bid.id,
                version=bid.version,
                occurred_at=now,
                buy_bid_id=bid.id,
                product_id=product_id,
                buyer_id=buyer_id,
                price=bid.price,
            )
        )
        return bid

    @property
    def owner_id(self) -> str:
        return self.buyer_id

    def _cancelled(self, now: datetime) -> DomainEvent:
        return events.BuyBidCancelled(
            aggregate_id=self.id,
            version=self.version,
            occurred_at=now,
            buy_bid_id=self.id,
            product_id=self.product_id,
            buyer_id=self.buyer_id,
            price=self.price,
        )

    def _matched(self, order_id: str, now: datetime) -> DomainEvent:
        return events.BuyBidMatched(
            aggregate_id=self.id,
            version=self.version,
            occurred_at=now,
            buy_bid_id=self.id,
            product_id=self.product_id,
            buyer_id=self.buyer_id,
            price=self.price,
            order_id=order_id,
        )


def best_ask(
    asks: Iterable[SellBid], buyer_id: str, max_price: int, takeable_from: date
) -> SellBid | None:
    """The ask a buy-now at `max_price` takes: open, at or below the price, never the buyer's
    own, its voucher valid on `takeable_from` or later (`VoucherRules.takeable_from`);
    cheapest first, then oldest, then smallest id. None when there is none.

    The rule `SellBidRepository.take_best` applies in SQL; the repository contract test
    checks that both agree."""
    candidates = [
        ask
        for ask in asks
        if ask.status is BidStatus.OPEN
        and ask.price <= max_price
        and ask.seller_id != buyer_id
        and ask.expires_on is not None
        and ask.expires_on >= takeable_from
    ]
    return min(candidates, key=lambda ask: (ask.price, ask.created_at, ask.id), default=None)


def best_bid(bids: Iterable[BuyBid], seller_id: str, min_price: int) -> BuyBid | None:
    """The buy bid a sell-now at `min_price` takes: open, at or above the price, never the
    seller's own; dearest first, then oldest, then smallest id. None when there is none.

    The rule `BuyBidRepository.take_best` applies in SQL; the repository contract test
    checks that both agree."""
    candidates = [
        bid
        for bid in bids
        if bid.status is BidStatus.OPEN and bid.price >= min_price and bid.buyer_id != seller_id
    ]
    return min(candidates, key=lambda bid: (-bid.price, bid.created_at, bid.id), default=None)


def ensure_ask_does_not_cross(price: int, highest_open_bid_price: int | None) -> None:
    if highest_open_bid_price is not None and price <= highest_open_bid_price:
        raise CrossesBook(
            f"a buy bid at {highest_open_bid_price} is open; sell now instead of asking {price}."
        )


def ensure_bid_does_not_cross(price: int, lowest_open_ask_price: int | None) -> None:
    if lowest_open_ask_price is not None and price >= lowest_open_ask_price:
        raise CrossesBook(
            f"a sell bid at {lowest_open_ask_price} is open; buy now instead of bidding {price}."
        )
