"""Use cases that change several aggregates at once.

Each service checks every rule before it changes anything, so a refused call leaves all the
aggregates it was given exactly as they were. The application layer loads the aggregates
under row locks, calls one service, then persists the aggregates, the returned ledger
transaction's postings and the recorded events in one database transaction.
"""

from collections.abc import Iterable, Sequence
from datetime import date, datetime

from giftmarket.domain import ledger
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.errors import NoMatchingBid
from giftmarket.domain.ids import IdGenerator
from giftmarket.domain.images import Image
from giftmarket.domain.ledger import LedgerTransaction
from giftmarket.domain.orderbook import (
    BuyBid,
    SellBid,
    ensure_ask_does_not_cross,
    ensure_bid_does_not_cross,
)
from giftmarket.domain.orders import DisputeDecision, Order, OrderVia
from giftmarket.domain.settlement import (
    SettledSale,
    Settlement,
    business_day_bounds,
    settleable,
)
from giftmarket.domain.users import User
from giftmarket.domain.validation import require_points
from giftmarket.domain.vouchers import InspectionMode, Voucher, VoucherRules


def charge(user: User, amount: int, ids: IdGenerator, now: datetime) -> LedgerTransaction:
    require_points(amount, "amount")
    transaction = ledger.charge(ids(), user.id, amount, now)
    user.apply(transaction)
    return transaction


def place_buy_bid(
    buyer: User,
    product_id: str,
    price: int,
    lowest_ask_price: int | None,
    ids: IdGenerator,
    now: datetime,
) -> tuple[BuyBid, LedgerTransaction]:
    require_points(price, "price")
    ensure_bid_does_not_cross(price, lowest_ask_price)
    bid_id = ids()
    escrow = ledger.escrow_buy_bid(ids(), buyer.id, bid_id, price, now)
    buyer.ensure_can_apply(escrow)

    bid = BuyBid.place(
        buy_bid_id=bid_id, product_id=product_id, buyer_id=buyer.id, price=price, now=now
    )
    buyer.apply(escrow)
    return bid, escrow


def cancel_buy_bid(buyer: User, bid: BuyBid, ids: IdGenerator, now: datetime) -> LedgerTransaction:
    bid.ensure_cancellable_by(buyer.id)
    release = ledger.release_buy_bid_escrow(ids(), buyer.id, bid.id, bid.price, now)
    buyer.ensure_can_apply(release)

    bid.cancel(buyer.id, now)
    buyer.apply(release)
    return release


def place_sell_bid(
    seller_id: str,
    product_id: str,
    price: int,
    image: Image,
    image_size: int | None,
    image_content_type: str | None,
    voucher: Voucher,
    highest_bid_price: int | None,
    ids: IdGenerator,
    now: datetime,
) -> SellBid:
    """The voucher was declared (`Voucher.declared`) and registered by the caller; a
    duplicate never gets here."""
    require_points(price, "price")
    image.ensure_attachable(seller_id, image_size, image_content_type)
    ensure_ask_does_not_cross(price, highest_bid_price)

    ask = SellBid.place(
        sell_bid_id=ids(),
        product_id=product_id,
        seller_id=seller_id,
        price=price,
        image_id=image.id,
        voucher=voucher,
        now=now,
    )
    image.attach(
        by_user=seller_id,
        object_size=image_size,
        object_content_type=image_content_type,
        now=now,
        sell_bid_id=ask.id,
    )
    return ask


def cancel_sell_bid(seller_id: str, ask: SellBid, now: datetime) -> None:
    """The ask's image stays ATTACHED; the image cleanup deletes it after its retention."""
    ask.cancel(seller_id, now)


def buy_now(
    buyer: User,
    seller: User,
    ask: SellBid,
    coupon: Coupon | None,
    rules: VoucherRules,
    ids: IdGenerator,
    now: datetime,
) -> tuple[Order, LedgerTransaction]:
    """Buys `ask` (the one `orderbook.best_ask` names) at the ask's price, not the buyer's
    limit. The order is INSPECTING under manual inspection, else delivered (PAID)."""
    ask.ensure_takeable(rules, now)
    if ask.seller_id == buyer.id:
        raise NoMatchingBid("you cannot buy your own sell bid.")
    _require_owner(seller, ask.seller_id)
    discount = coupon.discount_for(buyer.id, now, ask.price) if coupon else 0
    order_id = ids()
    payment = ledger.buy_now_payment(ids(), order_id, buyer.id, seller.id, ask.price, discount, now)
    buyer.ensure_can_apply(payment)
    seller.ensure_can_apply(payment)

    ask.match(order_id, now)
    if coupon is not None:
        coupon.redeem(by_user=buyer.id, now=now, price=ask.price, order_id=order_id)
    order = Order.place(
        order_id=order_id,
        product_id=ask.product_id,
        buyer_id=buyer.id,
        seller_id=seller.id,
        price=ask.price,
        discount=discount,
        via=OrderVia.BUY_NOW,
        image_id=ask.image_id,
        barcode_last4=ask.barcode_last4,
        expires_on=ask.expires_on,
        inspect=rules.inspection is InspectionMode.MANUAL,
        now=now,
        sell_bid_id=ask.id,
        coupon_id=coupon.id if coupon else None,
    )
    buyer.apply(payment)
    seller.apply(payment)
    return order, payment


def sell_now(
    seller: User,
    buyer: User,
    bid: BuyBid,
    image: Image,
    image_size: int | None,
    image_content_type: str | None,
    voucher: Voucher,
    rules: VoucherRules,
    ids: IdGenerator,
    now: datetime,
) -> tuple[Order, LedgerTransaction]:
    """Sells into `bid` (the one `orderbook.best_bid` names) at the bid's price, paid from
    its escrow. The voucher was declared and registered by the caller."""
    bid.ensure_open()
    if bid.buyer_id == seller.id:
        raise NoMatchingBid("you cannot sell into your own buy bid.")
    _require_owner(buyer, bid.buyer_id)
    image.ensure_attachable(seller.id, image_size, image_content_type)
    order_id = ids()
    payment = ledger.sell_now_payment(ids(), order_id, buyer.id, seller.id, bid.price, now)
    buyer.ensure_can_apply(payment)
    seller.ensure_can_apply(payment)

    bid.match(order_id, now)
    image.attach(
        by_user=seller.id,
        object_size=image_size,
        object_content_type=image_content_type,
        now=now,
        order_id=order_id,
    )
    order = Order.place(
        order_id=order_id,
        product_id=bid.product_id,
        buyer_id=buyer.id,
        seller_id=seller.id,
        price=bid.price,
        discount=0,
        via=OrderVia.SELL_NOW,
        image_id=image.id,
        barcode_last4=voucher.barcode_last4,
        expires_on=voucher.expires_on,
        inspect=rules.inspection is InspectionMode.MANUAL,
        now=now,
        buy_bid_id=bid.id,
    )
    buyer.apply(payment)
    seller.apply(payment)
    return order, payment


def decide_inspection(
    order: Order,
    buyer: User,
    seller: User,
    coupon: Coupon | None,
    *,
    by_admin: str,
    passed: bool,
    reason: str | None,
    ids: IdGenerator,
    now: datetime,
) -> LedgerTransaction | None:
    """pass: delivered (PAID); fail: REFUNDED, with the refund's ledger transaction."""
    if passed:
        order.pass_inspection(by_admin, now)
        return None
    # The state first: a decided order's seller may lack the pending points a refund takes,
    # and that must not answer insufficient_points instead of order_not_pending.
    order.ensure_inspecting()
    refund_transaction = _refund_transaction(order, buyer, seller, coupon, ids, now)
    order.fail_inspection(by_admin, reason or "", now)
    return _refunded(order, buyer, seller, coupon, refund_transaction, now)


def resolve_dispute(
    order: Order,
    buyer: User,
    seller: User,
    coupon: Coupon | None,
    *,
    by_admin: str,
    decision: DisputeDecision,
    note: str | None,
    ids: IdGenerator,
    now: datetime,
) -> LedgerTransaction | None:
    """refund: REFUNDED, with the refund's ledger transaction; reject: COMPLETED."""
    if decision is DisputeDecision.REJECT:
        order.resolve_dispute(by_admin, decision, note, now)
        return None
    order.ensure_disputed()  # before the refund's checks, as in decide_inspection
    refund_transaction = _refund_transaction(order, buyer, seller, coupon, ids, now)
    order.resolve_dispute(by_admin, decision, note, now)
    return _refunded(order, buyer, seller, coupon, refund_transaction, now)


def _refund_transaction(
    order: Order,
    buyer: User,
    seller: User,
    coupon: Coupon | None,
    ids: IdGenerator,
    now: datetime,
) -> LedgerTransaction:
    """The refund of `order`, checked against everything it touches before anything
    changes. The voucher's barcode stays registered: a refunded voucher stays blocked."""
    _require_owner(buyer, order.buyer_id)
    _require_owner(seller, order.seller_id)
    if (coupon is None) != (order.coupon_id is None) or (
        coupon is not None and coupon.id != order.coupon_id
    ):
        raise ValueError(f"order {order.id} was paid with coupon {order.coupon_id}")
    transaction = ledger.refund(
        ids(), order.id, buyer.id, seller.id, order.price, order.discount, now
    )
    buyer.ensure_can_apply(transaction)
    seller.ensure_can_apply(transaction)
    return transaction


def _refunded(
    order: Order,
    buyer: User,
    seller: User,
    coupon: Coupon | None,
    transaction: LedgerTransaction,
    now: datetime,
) -> LedgerTransaction:
    if coupon is not None:
        coupon.restore(order_id=order.id, now=now)
    buyer.apply(transaction)
    seller.apply(transaction)
    return transaction


def complete_due_orders(orders: Iterable[Order], now: datetime) -> list[Order]:
    return [order for order in orders if order.complete_if_due(now)]


def settle_seller(
    seller: User,
    orders: Sequence[Order],
    fee_bps: int,
    business_date: date,
    ids: IdGenerator,
    now: datetime,
) -> tuple[Settlement, LedgerTransaction]:
    """Settles the given orders (all of them the seller's and settleable for the date) into
    one settlement: pending falls by gross, available grows by net, platform fees by fee."""
    for order in orders:
        if not settleable(order, business_date):
            raise ValueError(f"order {order.id} is not {seller.id}'s to settle for {business_date}")
    settlement, payout = pay_out_seller(seller, orders, fee_bps, business_date, ids, now)
    for order in orders:
        order.settle(settlement.id, now)
    return settlement, payout


def pay_out_seller(
    seller: User,
    orders: Sequence[SettledSale],
    fee_bps: int,
    business_date: date,
    ids: IdGenerator,
    now: datetime,
) -> tuple[Settlement, LedgerTransaction]:
    """`settle_seller` but for the orders themselves, which the caller marks SETTLED by the
    returned settlement (the daily job does it set-based, `OrderRepository.mark_settled`):
    the settlement, its payout, and the seller's balances moved by it."""
    if not orders:
        raise ValueError("a settlement needs at least one order")
    if len({order.id for order in orders}) != len(orders):
        raise ValueError("an order appears twice in one settlement")
    _, day_end = business_day_bounds(business_date)
    for order in orders:
        if (
            order.seller_id != seller.id
            or order.completed_at is None
            or order.completed_at >= day_end
        ):
            raise ValueError(f"order {order.id} is not {seller.id}'s to settle for {business_date}")
    settlement = Settlement.of_orders(
        settlement_id=ids(),
        seller_id=seller.id,
        business_date=business_date,
        orders=orders,
        fee_bps=fee_bps,
        now=now,
    )
    payout = ledger.settlement_payout(
        ids(), settlement.id, seller.id, settlement.gross, settlement.fee, now
    )
    seller.apply(payout)
    return settlement, payout


def _require_owner(user: User, owner_id: str) -> None:
    if user.id != owner_id:
        raise ValueError(f"user {user.id} is not the bid's owner {owner_id}")
