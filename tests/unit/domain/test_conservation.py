"""Random walks through the marketplace, checking the money invariants after every step."""

import random
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest
from tests.unit.domain.factories import voucher

from giftmarket.domain import ledger, marketplace
from giftmarket.domain.coupons import Coupon, CouponKind
from giftmarket.domain.errors import DomainError, NoMatchingBid
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.images import MAX_IMAGE_BYTES, Image, ImageStatus
from giftmarket.domain.ledger import CHARGES, COUPON_SUBSIDY, FEES, LedgerTransaction
from giftmarket.domain.orderbook import BidStatus, BuyBid, SellBid, best_ask, best_bid
from giftmarket.domain.orders import Order, OrderStatus
from giftmarket.domain.settlement import Settlement, default_business_date, settleable
from giftmarket.domain.users import Balances, User
from giftmarket.domain.vouchers import Voucher, VoucherRules

pytestmark = pytest.mark.unit

PRODUCTS = ("latte", "cake")
FEE_BPS = 500
STEPS = 600
RULES = VoucherRules()  # automatic inspection: every order is delivered when placed


class Aggregate(Protocol):
    events: list[DomainEvent]


class Market:
    """Plays the application layer: keeps every aggregate, commits what services return."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
        self.id_counter = 0
        self.users = [
            User.sign_up(
                user_id=f"user{number}",
                email=f"user{number}@example.com",
                nickname=f"user{number}",
                password_hash="hash",
                admin_emails=(),
                now=self.now,
            )
            for number in range(5)
        ]
        self.asks: list[SellBid] = []
        self.bids: list[BuyBid] = []
        self.orders: list[Order] = []
        self.coupons: list[Coupon] = []
        self.images: list[Image] = []
        self.uploads: dict[str, tuple[int | None, str | None]] = {}
        self.settlements: list[Settlement] = []
        self.transactions: list[LedgerTransaction] = []
        self.committed_events: list[DomainEvent] = []
        self.outcomes: Counter[str] = Counter()

    def ids(self) -> str:
        self.id_counter += 1
        return f"ID{self.id_counter:08d}"

    # --- the application layer's view of the book ----------------------------------------

    def open_asks(self, product: str) -> list[SellBid]:
        return [a for a in self.asks if a.product_id == product and a.status is BidStatus.OPEN]

    def open_bids(self, product: str) -> list[BuyBid]:
        return [b for b in self.bids if b.product_id == product and b.status is BidStatus.OPEN]

    def user(self, user_id: str) -> User:
        return next(user for user in self.users if user.id == user_id)

    def image_for(self, seller: User) -> Image | None:
        """Mostly the seller's own unused upload, sometimes anyone's image."""
        own = [
            i for i in self.images if i.owner_id == seller.id and i.status is ImageStatus.PENDING
        ]
        if own and self.rng.random() < 0.9:
            return self.rng.choice(own)
        return self.rng.choice(self.images) if self.images else None

    # Bids sit low and asks high, as in a real book, so that not every order crosses.
    def bid_price(self) -> int:
        return self.rng.choice([1, 19, 999, 3_000, 4_500])

    def ask_price(self) -> int:
        return self.rng.choice([19, 4_500, 5_000, 10_001, 25_000])

    def coupon_for(self, buyer: User) -> Coupon | None:
        usable = [c for c in self.coupons if c.user_id == buyer.id and c.is_usable(self.now)]
        roll = self.rng.random()
        if roll < 0.4 or not self.coupons:
            return None
        if roll < 0.8 and usable:
            return self.rng.choice(usable)
        return self.rng.choice(self.coupons)

    def voucher(self) -> Voucher:
        # Some vouchers run out while time passes, so buy-now has to leave them alone.
        barcode = f"{self.id_counter:013d}"
        return voucher(self.now, barcode, days=self.rng.choice([3, 5, 30]))

    # --- operations -------------------------------------------------------------------------

    def request_image(self) -> None:
        image = Image.request(
            image_id=self.ids(),
            owner_id=self.rng.choice(self.users).id,
            content_type="image/png",
            now=self.now,
        )
        self.images.append(image)
        roll = self.rng.random()
        if roll < 0.05:
            self.uploads[image.id] = (None, None)
        elif roll < 0.10:
            self.uploads[image.id] = (MAX_IMAGE_BYTES + 1, "image/png")
        elif roll < 0.13:
            self.uploads[image.id] = (1_000, "image/gif")
        else:
            self.uploads[image.id] = (self.rng.randint(1, MAX_IMAGE_BYTES), "image/jpeg")

    def charge(self) -> None:
        user = self.rng.choice(self.users)
        amount = self.rng.choice([-5, 0, 10**9 + 1, 1, 5_000, 5_000, 20_000, 20_000, 50_000])
        self.transactions.append(marketplace.charge(user, amount, self.ids, self.now))

    def place_buy_bid(self) -> None:
        buyer, product = self.rng.choice(self.users), self.rng.choice(PRODUCTS)
        lowest_ask = min((a.price for a in self.open_asks(product)), default=None)
        bid, escrow = marketplace.place_buy_bid(
            buyer, product, self.bid_price(), lowest_ask, self.ids, self.now
        )
        self.bids.append(bid)
        self.transactions.append(escrow)

    def cancel_buy_bid(self) -> None:
        if not self.bids:
            return
        bid = self.rng.choice(self.bids)
        canceller = (
            self.user(bid.buyer_id) if self.rng.random() < 0.8 else self.rng.choice(self.users)
        )
        self.transactions.append(marketplace.cancel_buy_bid(canceller, bid, self.ids, self.now))

    def place_sell_bid(self) -> None:
        seller, product = self.rng.choice(self.users), self.rng.choice(PRODUCTS)
        image = self.image_for(seller)
        if image is None:
            return
        size, content_type = self.uploads[image.id]
        highest_bid = max((b.price for b in self.open_bids(product)), default=None)
        ask = marketplace.place_sell_bid(
            seller.id,
            product,
            self.ask_price(),
            image,
            size,
            content_type,
            self.voucher(),
            highest_bid,
            self.ids,
            self.now,
        )
        self.asks.append(ask)

    def cancel_sell_bid(self) -> None:
        if not self.asks:
            return
        ask = self.rng.choice(self.asks)
        canceller = ask.seller_id if self.rng.random() < 0.8 else self.rng.choice(self.users).id
        marketplace.cancel_sell_bid(canceller, ask, self.now)

    def buy_now(self) -> None:
        buyer, product = self.rng.choice(self.users), self.rng.choice(PRODUCTS)
        max_price = self.rng.choice([999, 5_000, 10**9])
        takeable_from = RULES.takeable_from(self.now)
        ask = best_ask(self.open_asks(product), buyer.id, max_price, takeable_from)
        if ask is None:  # as the buy-now command answers when `take_best` finds none
            raise NoMatchingBid(f"no open sell bid at or below {max_price}.")
        coupon = self.coupon_for(buyer)
        order, payment = marketplace.buy_now(
            buyer, self.user(ask.seller_id), ask, coupon, RULES, self.ids, self.now
        )
        self.orders.append(order)
        self.transactions.append(payment)

    def sell_now(self) -> None:
        seller, product = self.rng.choice(self.users), self.rng.choice(PRODUCTS)
        min_price = self.rng.choice([1, 19, 3_000])
        bid = best_bid(self.open_bids(product), seller.id, min_price)
        if bid is None:  # as the sell-now command answers when `take_best` finds none
            raise NoMatchingBid(f"no open buy bid at or above {min_price}.")
        image = self.image_for(seller)
        if image is None:
            return
        size, content_type = self.uploads[image.id]
        order, payment = marketplace.sell_now(
            seller,
            self.user(bid.buyer_id),
            bid,
            image,
            size,
            content_type,
            self.voucher(),
            RULES,
            self.ids,
            self.now,
        )
        self.orders.append(order)
        self.transactions.append(payment)

    def issue_coupon(self) -> None:
        coupon = Coupon.issue(
            coupon_id=self.ids(),
            user_id=self.rng.choice(self.users).id,
            name="random",
            discount_amount=self.rng.choice([1, 500, 3_000, 50_000]),
            expires_at=self.now + timedelta(hours=self.rng.randint(-24, 24 * 5)),
            kind=CouponKind.ADMIN,
            now=self.now,
        )
        self.coupons.append(coupon)

    def confirm(self) -> None:
        if not self.orders:
            return
        order = self.rng.choice(self.orders)
        confirmer = self.rng.choice([order.buyer_id, order.buyer_id, order.seller_id, "stranger"])
        order.confirm(confirmer, self.now)

    def let_time_pass(self) -> None:
        self.now += timedelta(minutes=self.rng.randint(1, 60 * 36))

    def settle(self) -> None:
        business_date = default_business_date(self.now)
        marketplace.complete_due_orders(self.orders, self.now)
        due: dict[str, list[Order]] = defaultdict(list)
        for order in self.orders:
            if settleable(order, business_date):
                due[order.seller_id].append(order)
        for seller_id, orders in due.items():
            settlement, payout = marketplace.settle_seller(
                self.user(seller_id), orders, FEE_BPS, business_date, self.ids, self.now
            )
            self.settlements.append(settlement)
            self.transactions.append(payout)

    # --- bookkeeping ------------------------------------------------------------------------

    def aggregates(self) -> list[Aggregate]:
        return [
            *self.users,
            *self.asks,
            *self.bids,
            *self.orders,
            *self.coupons,
            *self.images,
            *self.settlements,
        ]

    def state(self) -> list[dict[str, object]]:
        # Every field but `events` holds an immutable value, so a shallow copy is a snapshot.
        return [
            vars(aggregate) | {"events": tuple(aggregate.events)} for aggregate in self.aggregates()
        ]

    def commit(self) -> None:
        for aggregate in self.aggregates():
            self.committed_events.extend(aggregate.events)
            aggregate.events.clear()

    def step(self, operation: Callable[[], None]) -> None:
        before, transactions_before = self.state(), len(self.transactions)
        try:
            operation()
        except DomainError as refused:
            self.outcomes[f"{operation.__name__} refused: {refused.code}"] += 1
            assert self.state() == before, f"{operation.__name__} changed state and then failed"
            assert len(self.transactions) == transactions_before
        else:
            self.outcomes[operation.__name__] += 1
            self.commit()

    def run(self, steps: int) -> None:
        operations = [
            (self.request_image, 12),
            (self.charge, 10),
            (self.place_buy_bid, 12),
            (self.cancel_buy_bid, 4),
            (self.place_sell_bid, 12),
            (self.cancel_sell_bid, 3),
            (self.buy_now, 12),
            (self.sell_now, 10),
            (self.issue_coupon, 4),
            (self.confirm, 5),
            (self.let_time_pass, 6),
            (self.settle, 3),
        ]
        functions, weights = zip(*operations, strict=True)
        for _ in range(steps):
            self.step(self.rng.choices(functions, weights)[0])
            assert_money_is_conserved(self)


def assert_money_is_conserved(market: Market) -> None:
    totals = ledger.balances(market.transactions)
    assert sum(totals.values()) == 0

    for user in market.users:
        from_ledger = Balances(
            totals.get(ledger.available(user.id), 0),
            totals.get(ledger.escrowed(user.id), 0),
            totals.get(ledger.pending(user.id), 0),
        )
        assert user.balances == from_ledger, user.id
        assert min(user.balances) >= 0, user.id
        open_bids = [b for b in market.bids if b.buyer_id == user.id and b.status is BidStatus.OPEN]
        assert user.escrowed_points == sum(bid.price for bid in open_bids), user.id
        unsettled = [
            o
            for o in market.orders
            if o.seller_id == user.id and o.status is not OrderStatus.SETTLED
        ]
        assert user.pending_points == sum(order.price for order in unsettled), user.id

    users_hold = sum(sum(user.balances) for user in market.users)
    charged = -totals.get(CHARGES, 0)
    fees = totals.get(FEES, 0)
    subsidised = -totals.get(COUPON_SUBSIDY, 0)
    assert charged == users_hold + fees - subsidised
    assert fees == sum(settlement.fee for settlement in market.settlements)
    assert subsidised == sum(order.discount for order in market.orders)


@pytest.mark.parametrize("seed", range(8))
def test_random_trading_conserves_money_and_never_overdraws(seed: int) -> None:
    market = Market(seed)

    market.run(STEPS)

    # The walk must actually have traded, refused and settled, or it proved little.
    for outcome in ("buy_now", "sell_now", "place_buy_bid", "cancel_buy_bid", "settle"):
        assert market.outcomes[outcome] > 0, (outcome, market.outcomes)
    assert any("refused" in outcome for outcome in market.outcomes)
    assert market.settlements, market.outcomes
    assert any(order.discount for order in market.orders), "no coupon was ever used"


@pytest.mark.parametrize("seed", range(3))
def test_random_trading_records_consecutive_versions(seed: int) -> None:
    market = Market(seed)

    market.run(STEPS)

    versions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in market.committed_events:
        versions[event.aggregate_type, event.aggregate_id].append(event.version)
    for aggregate, seen in versions.items():
        assert seen == sorted(seen), aggregate
        assert sorted(set(seen)) == list(range(1, len(set(seen)) + 1)), aggregate
