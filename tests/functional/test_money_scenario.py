"""Money conservation across a randomized market (issue 16, "Done when"): thousands of seeded
operations mixing charges, asks, bids, buy-now with and without coupons, sell-now, cancels,
confirmations, inspections in both modes, disputes, refunds, rejections, the expiry job and
settlement (with its auto-complete) while the clock moves on by minutes and days. After every
step the ledger sums to zero, every balance equals its postings, charges = balances + fees −
subsidies, no voucher is live twice and no coupon pays for two orders in force. A refused
operation changes nothing, and a reused barcode is refused exactly when it is still blocked.
On the in-memory fakes (tests/support/market.py)."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from tests.support.fakes import fresh_barcode, valid_until
from tests.support.market import money_is_conserved, new_market

from giftmarket.commands import accounts, catalog, orders, trading
from giftmarket.domain import ledger
from giftmarket.domain.coupons import CouponStatus
from giftmarket.domain.errors import DomainError, VoucherDuplicate
from giftmarket.domain.orderbook import BidStatus
from giftmarket.domain.orders import DisputeDecision, InspectionResult, OrderStatus
from giftmarket.domain.settlement import KST
from giftmarket.domain.users import Balances
from giftmarket.domain.vouchers import InspectionMode, VoucherRules
from giftmarket.jobs.expiry import expire_asks
from giftmarket.jobs.settlement import settle_business_date

SEEDS = (1, 2, 3, 4, 5, 6)
STEPS = 1_000  # per seed: 6_000 operations in all
USERS = 10
FEE_BPS = 500


class Scenario:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.market = new_market(vouchers=VoucherRules())
        self.admin = self.market.admin()
        self.users = [self.market.signed_up() for _ in range(USERS)]
        self.products = [self.market.new_product() for _ in range(3)]
        self.barcode_of_ask: dict[str, str] = {}
        self.barcode_of_order: dict[str, str] = {}
        self.coupons: dict[str, list[str]] = {user: [] for user in self.users}
        self.done: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.refusal: DomainError | None = None
        self._checked_ledger = 0
        self._sums: dict[ledger.Account, int] = {}

    # --- what is committed --------------------------------------------------------------

    def rows(self, table: str) -> list[Any]:
        return list(self.market.store.rows[table].values())

    def balances(self, user_id: str) -> Balances:
        return self.market.store.rows["users"][user_id].balances  # type: ignore[no-any-return]

    def blocked(self, barcode: str) -> bool:
        """On an open ask, or in any order (a refunded voucher stays blocked)."""
        asks = self.market.store.rows["sell_bids"]
        return (
            any(
                asks[ask_id].status is BidStatus.OPEN
                for ask_id, code in self.barcode_of_ask.items()
                if code == barcode
            )
            or barcode in self.barcode_of_order.values()
        )

    # --- running an operation -----------------------------------------------------------

    def attempt(self, name: str, handler: Callable[..., Any], command: Any) -> Any | None:
        store = self.market.store
        before = (store.commits, len(store.ledger), len(store.outbox), len(store.vouchers))
        full = store.state() if self.rng.random() < 0.05 else None
        self.refusal = None
        try:
            result = self.market.run(handler, command)
        except DomainError as refusal:
            self.refusal = refusal
            after = (store.commits, len(store.ledger), len(store.outbox), len(store.vouchers))
            assert after == before, f"refused {name} wrote something"
            assert full is None or store.state() == full, f"refused {name} changed a row"
            self.refused[f"{name}:{type(refusal).__name__}"] += 1
            return None
        self.done[name] += 1
        return result

    def barcode(self) -> str:
        used = list(self.barcode_of_ask.values()) + list(self.barcode_of_order.values())
        if used and self.rng.random() < 0.3:
            return self.rng.choice(used)
        return fresh_barcode()

    def voucher_facts(self) -> tuple[str, date]:
        days = self.rng.choice([2, 3, 3, 4, 5, 8, 15, 40])  # 2: refused as expiring
        return self.barcode(), valid_until(self.market.clock(), days)

    # --- the operations -----------------------------------------------------------------

    def charge(self) -> None:
        amount = self.rng.choice([1_000, 5_000, 20_000, 50_000])
        self.attempt("charge", accounts.charge_points, accounts.ChargePoints(self.user(), amount))

    def coupon(self) -> None:
        user = self.user()
        expires_at = self.market.clock() + timedelta(hours=self.rng.choice([-1, 2, 48, 400]))
        discount = self.rng.choice([500, 1_000, 3_000, 30_000])
        command = catalog.IssueCoupon(self.admin, user, "Promo", discount, expires_at)
        coupon_id = self.attempt("coupon", catalog.issue_coupon, command)
        if coupon_id is not None:
            self.coupons[user].append(coupon_id)

    def ask(self) -> None:
        seller = self.user()
        image_id = self.market.uploaded_image(seller)
        barcode, expires_on = self.voucher_facts()
        blocked = self.blocked(barcode)
        command = trading.PlaceSellBid(
            seller, self.product(), self.price(), image_id, barcode, expires_on
        )
        placed = self.attempt("ask", trading.place_sell_bid, command)
        if placed is None:
            assert blocked or not isinstance(self.refusal, VoucherDuplicate)
            return
        assert not blocked, "a blocked voucher was listed"
        self.barcode_of_ask[placed.bid_id] = barcode

    def sell_now(self) -> None:
        seller = self.user()
        image_id = self.market.uploaded_image(seller)
        barcode, expires_on = self.voucher_facts()
        blocked = self.blocked(barcode)
        product_id, price = self.product(), self.price()
        bids = [b for b in self.rows("buy_bids") if b.status is BidStatus.OPEN]
        if bids and self.rng.random() < 0.8:  # mostly at a price someone bids
            bid = self.rng.choice(bids)
            product_id, price = bid.product_id, bid.price - self.rng.choice([0, 0, 250])
        before = {user: self.balances(user) for user in self.users}
        command = trading.SellNow(seller, product_id, price, image_id, barcode, expires_on)
        sale = self.attempt("sell_now", trading.sell_now, command)
        if sale is None:
            assert blocked or not isinstance(self.refusal, VoucherDuplicate)
            return
        assert not blocked, "a blocked voucher was sold"
        self.barcode_of_order[sale.order_id] = barcode
        order = self.market.store.rows["orders"][sale.order_id]
        assert (
            self.balances(order.buyer_id).escrowed == before[order.buyer_id].escrowed - sale.price
        )
        assert self.balances(seller).pending == before[seller].pending + sale.price

    def bid(self) -> None:
        command = trading.PlaceBuyBid(self.user(), self.product(), self.price())
        self.attempt("bid", trading.place_buy_bid, command)

    def buy_now(self) -> None:
        buyer = self.user()
        coupon_id = None
        if self.coupons[buyer] and self.rng.random() < 0.8:
            coupons = self.market.store.rows["coupons"]
            mine = self.coupons[buyer]
            usable = [c for c in mine if coupons[c].status is CouponStatus.AVAILABLE]
            coupon_id = self.rng.choice(usable if usable and self.rng.random() < 0.8 else mine)
        product_id, price = self.product(), self.price()
        asks = [a for a in self.rows("sell_bids") if a.status is BidStatus.OPEN]
        if asks and self.rng.random() < 0.8:  # mostly at a price something is on sale for
            ask = self.rng.choice(asks)
            product_id, price = ask.product_id, ask.price + self.rng.choice([0, 0, 500])
        before = {user: self.balances(user) for user in self.users}
        command = trading.BuyNow(buyer, product_id, price, coupon_id)
        purchase = self.attempt("buy_now", trading.buy_now, command)
        if purchase is None:
            return
        order = self.market.store.rows["orders"][purchase.order_id]
        assert order.expires_on >= self.market.ctx.vouchers.takeable_from(self.market.clock())
        self.barcode_of_order[order.id] = self.barcode_of_ask[order.sell_bid_id]
        assert self.balances(buyer).available == before[buyer].available - purchase.paid
        seller = order.seller_id
        assert self.balances(seller).pending == before[seller].pending + purchase.price
        expected = OrderStatus.INSPECTING if self.manual else OrderStatus.PAID
        assert order.status is expected

    def cancel_ask(self) -> None:
        asks = [a for a in self.rows("sell_bids") if a.status is BidStatus.OPEN] or self.rows(
            "sell_bids"
        )
        if not asks:
            return
        ask = self.rng.choice(asks)
        owner = ask.seller_id if self.rng.random() < 0.9 else self.user()
        self.attempt("cancel_ask", trading.cancel_sell_bid, trading.CancelSellBid(owner, ask.id))

    def cancel_bid(self) -> None:
        bids = [b for b in self.rows("buy_bids") if b.status is BidStatus.OPEN] or self.rows(
            "buy_bids"
        )
        if not bids:
            return
        bid = self.rng.choice(bids)
        owner = bid.buyer_id if self.rng.random() < 0.9 else self.user()
        self.attempt("cancel_bid", trading.cancel_buy_bid, trading.CancelBuyBid(owner, bid.id))

    def order_in(self, *statuses: OrderStatus) -> Any | None:
        all_orders = self.rows("orders")
        wanted = [o for o in all_orders if o.status in statuses]
        pool = wanted if wanted and self.rng.random() < 0.85 else all_orders
        return self.rng.choice(pool) if pool else None

    def confirm(self) -> None:
        order = self.order_in(OrderStatus.PAID)
        if order is not None:
            command = trading.ConfirmOrder(order.buyer_id, order.id)
            self.attempt("confirm", trading.confirm_order, command)

    def inspect(self) -> None:
        order = self.order_in(OrderStatus.INSPECTING)
        if order is None:
            return
        result = self.rng.choice(list(InspectionResult))
        command = orders.DecideInspection(self.admin, order.id, result, "checked")
        self.refund_checked("inspect", orders.decide_inspection, command, order.id)

    def dispute(self) -> None:
        order = self.order_in(OrderStatus.PAID)
        if order is not None:
            buyer = order.buyer_id if self.rng.random() < 0.9 else order.seller_id
            command = orders.OpenDispute(buyer, order.id, "the code was already used")
            self.attempt("dispute", orders.open_dispute, command)

    def resolve(self) -> None:
        order = self.order_in(OrderStatus.DISPUTED)
        if order is None:
            return
        decision = self.rng.choice(list(DisputeDecision))
        command = orders.ResolveDispute(self.admin, order.id, decision, "decided")
        self.refund_checked("resolve", orders.resolve_dispute, command, order.id)

    def refund_checked(
        self, name: str, handler: Callable[..., Any], command: Any, order_id: str
    ) -> None:
        before = self.market.store.rows["orders"][order_id]
        buyer, seller = before.buyer_id, before.seller_id
        balances = {buyer: self.balances(buyer), seller: self.balances(seller)}
        if self.attempt(name, handler, command) is None:
            return
        after = self.market.store.rows["orders"][order_id]
        if after.status is not OrderStatus.REFUNDED:
            assert (self.balances(buyer), self.balances(seller)) == tuple(balances.values())
            return
        assert self.balances(buyer).available == balances[buyer].available + before.paid
        assert self.balances(seller).pending == balances[seller].pending - before.price
        if before.coupon_id is not None:
            coupon = self.market.store.rows["coupons"][before.coupon_id]
            assert (coupon.status, coupon.order_id) == (CouponStatus.AVAILABLE, None)

    def expire(self) -> None:
        expire_asks(self.market.executor(), now=self.market.clock())
        takeable_from = self.market.ctx.vouchers.takeable_from(self.market.clock())
        assert all(
            a.expires_on >= takeable_from
            for a in self.rows("sell_bids")
            if a.status is BidStatus.OPEN
        )
        self.done["expire"] += 1

    def settle(self) -> None:
        now = self.market.clock()
        day = now.astimezone(KST).date() - timedelta(days=1)
        executor = self.market.executor()
        settle_business_date(executor, business_date=day, now=now, fee_bps=FEE_BPS)
        self.done["settle"] += 1

    def tick(self) -> None:
        minutes = self.rng.choice([1, 30, 240, 60 * 20, 60 * 50])
        self.market.clock.advance(timedelta(minutes=minutes))

    def switch_inspection(self) -> None:
        mode = self.rng.choice(list(InspectionMode))
        rules = VoucherRules(inspection=mode)
        self.market.ctx = dataclasses.replace(self.market.ctx, vouchers=rules)

    @property
    def manual(self) -> bool:
        return self.market.ctx.vouchers.inspection is InspectionMode.MANUAL

    # --- choices ------------------------------------------------------------------------

    def user(self) -> str:
        return self.rng.choice(self.users)

    def product(self) -> str:
        return self.rng.choice(self.products)

    def price(self) -> int:
        return self.rng.randrange(1_000, 12_000, 250)

    def step(self) -> None:
        operations: list[tuple[Callable[[], None], int]] = [
            (self.charge, 8),
            (self.coupon, 6),
            (self.ask, 16),
            (self.bid, 8),
            (self.buy_now, 14),
            (self.sell_now, 8),
            (self.cancel_ask, 3),
            (self.cancel_bid, 3),
            (self.confirm, 5),
            (self.inspect, 6),
            (self.dispute, 5),
            (self.resolve, 5),
            (self.expire, 2),
            (self.settle, 2),
            (self.tick, 10),
            (self.switch_inspection, 1),
        ]
        actions, weights = zip(*operations, strict=True)
        self.rng.choices(actions, weights)[0]()

    # --- the invariants -----------------------------------------------------------------

    def check(self) -> None:
        store = self.market.store
        for transaction in store.ledger[self._checked_ledger :]:
            assert sum(p.amount for p in transaction.postings) == 0
            for posting in transaction.postings:
                self._sums[posting.account] = self._sums.get(posting.account, 0) + posting.amount
        self._checked_ledger = len(store.ledger)
        assert sum(self._sums.values()) == 0
        users = store.rows["users"].values()
        for user in users:
            assert user.balances == (
                self._sums.get(ledger.available(user.id), 0),
                self._sums.get(ledger.escrowed(user.id), 0),
                self._sums.get(ledger.pending(user.id), 0),
            ), f"user {user.id}'s balances disagree with the ledger"
            assert min(user.balances) >= 0
        held = sum(sum(user.balances) for user in users)
        fees, subsidies = self._sums.get(ledger.FEES, 0), -self._sums.get(ledger.COUPON_SUBSIDY, 0)
        assert -self._sums.get(ledger.CHARGES, 0) == held + fees - subsidies
        self.check_vouchers()
        self.check_coupons()

    def check_vouchers(self) -> None:
        asks = self.market.store.rows["sell_bids"]
        live = [
            code
            for ask_id, code in self.barcode_of_ask.items()
            if asks[ask_id].status is BidStatus.OPEN
        ]
        live += list(self.barcode_of_order.values())  # refunded ones stay blocked too
        twice = [code for code, n in Counter(live).items() if n > 1]
        assert not twice, f"vouchers live twice: {twice}"
        for order in self.market.store.rows["orders"].values():
            if order.status is OrderStatus.SETTLED:
                assert order.refunded_at is None
                assert order.dispute_decision in (None, DisputeDecision.REJECT)

    def check_coupons(self) -> None:
        in_force = Counter(
            o.coupon_id
            for o in self.market.store.rows["orders"].values()
            if o.coupon_id is not None and o.status is not OrderStatus.REFUNDED
        )
        assert all(n == 1 for n in in_force.values()), "a coupon pays for two orders in force"
        for coupon in self.market.store.rows["coupons"].values():
            assert (coupon.status is CouponStatus.USED) == (coupon.id in in_force)
            if coupon.status is CouponStatus.USED:
                assert self.market.store.rows["orders"][coupon.order_id].coupon_id == coupon.id


@pytest.mark.parametrize("seed", SEEDS)
def test_money_is_conserved_across_a_randomized_market(seed: int) -> None:
    scenario = Scenario(seed)
    scenario.check()

    for _ in range(STEPS):
        scenario.step()
        scenario.check()

    # Wind down: everything still delivered completes and settles, nothing is lost.
    scenario.market.clock.advance(timedelta(days=5))
    scenario.settle()
    scenario.check()
    money_is_conserved(scenario.market)

    # The scenario went everywhere it should, and was refused where it should be.
    done, refused = scenario.done, scenario.refused
    for name in ("ask", "buy_now", "sell_now", "confirm", "inspect", "dispute", "resolve"):
        assert done[name] > 0, f"no {name} succeeded: {dict(done)}"
    assert refused["ask:VoucherDuplicate"] + refused["sell_now:VoucherDuplicate"] > 0
    assert refused["ask:VoucherExpiring"] > 0
    statuses = Counter(o.status for o in scenario.rows("orders"))
    for status in (OrderStatus.SETTLED, OrderStatus.REFUNDED):
        assert statuses[status] > 0, f"no order {status}: {dict(statuses)}"
    assert any(a.status is BidStatus.EXPIRED for a in scenario.rows("sell_bids"))
    assert scenario.market.store.rows["settlements"]
    assert any(o.coupon_id and o.status is OrderStatus.REFUNDED for o in scenario.rows("orders"))


def test_the_scenario_catches_a_broken_refund() -> None:
    """The checks can fail: a refund that forgets the seller's side breaks them."""
    scenario = Scenario(99)
    market = scenario.market
    market.ctx = dataclasses.replace(
        market.ctx, vouchers=VoucherRules(inspection=InspectionMode.MANUAL)
    )
    product_id, seller_id = scenario.products[0], scenario.users[0]
    buyer_id = scenario.users[1]
    market.run(accounts.charge_points, accounts.ChargePoints(buyer_id, 5_000))
    market.open_ask(product_id, 4_000, seller_id)
    order_id = market.bought(product_id, buyer_id, 4_000).order_id
    market.inspected(order_id, InspectionResult.FAIL, "used")
    scenario.check()

    seller = market.store.rows["users"][seller_id]
    market.store.rows["users"][seller_id] = dataclasses.replace(
        seller, pending_points=seller.pending_points + 4_000
    )

    with pytest.raises(AssertionError):
        scenario.check()
