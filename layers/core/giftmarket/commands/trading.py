"""The order book: placing and cancelling bids, buying and selling now, confirming orders.

Locks are always taken in the same order — the bid or ask being traded, then the users in
id order, then the coupon or image, and last the voucher's registry rows — so two trades can
wait for each other but never deadlock. Placing a bid locks the product row first, which
serialises placements per product: two bids placed at once cannot leave the book crossed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from giftmarket.commands.context import CommandContext, acting_user, found
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import StoredObject, UnitOfWork
from giftmarket.domain import marketplace
from giftmarket.domain.errors import CouponUnavailable, NoMatchingBid
from giftmarket.domain.images import s3_key_for
from giftmarket.domain.orderbook import BidStatus
from giftmarket.domain.validation import require_points
from giftmarket.domain.vouchers import Voucher, require_barcode


@dataclass(frozen=True)
class PlacedBid:
    bid_id: str
    status: BidStatus


@dataclass(frozen=True)
class PlaceSellBid(Command[PlacedBid]):
    seller_id: str
    product_id: str
    price: int
    image_id: str
    barcode: str = field(repr=False)
    expires_on: date


def _declared_voucher(ctx: CommandContext, barcode: str, expires_on: date) -> Voucher:
    # Checked, and hashed, before any row is locked.
    require_barcode(barcode)
    return Voucher.declared(
        barcode=barcode,
        expires_on=expires_on,
        fingerprints=ctx.barcodes.fingerprints(barcode),
        rules=ctx.vouchers,
        now=ctx.clock(),
    )


def _describe_image(ctx: CommandContext, owner_id: str, image_id: str) -> StoredObject | None:
    # The S3 HEAD happens before any row lock is taken: no lock is held across a network call.
    # Another user's image has another key, so it is simply not found here.
    return ctx.images.describe(s3_key_for(owner_id, image_id))


def place_sell_bid(uow: UnitOfWork, command: PlaceSellBid, ctx: CommandContext) -> PlacedBid:
    voucher = _declared_voucher(ctx, command.barcode, command.expires_on)
    stored = _describe_image(ctx, command.seller_id, command.image_id)
    acting_user(uow, command.seller_id)
    product = found(uow.products.get(command.product_id, lock=True), "product")
    image = found(uow.images.get(command.image_id, lock=True), "image")
    ask = marketplace.place_sell_bid(
        seller_id=command.seller_id,
        product_id=product.id,
        price=command.price,
        image=image,
        image_size=stored.size if stored else None,
        image_content_type=stored.content_type if stored else None,
        voucher=voucher,
        highest_bid_price=uow.buy_bids.highest_open_price(product.id),
        ids=ctx.ids,
        now=ctx.clock(),
    )
    uow.sell_bids.add(ask)
    uow.vouchers.register(voucher, now=ask.created_at, sell_bid_id=ask.id)
    return PlacedBid(ask.id, ask.status)


@dataclass(frozen=True)
class CancelSellBid(Command[None]):
    seller_id: str
    sell_bid_id: str


def cancel_sell_bid(uow: UnitOfWork, command: CancelSellBid, ctx: CommandContext) -> None:
    ask = found(uow.sell_bids.get(command.sell_bid_id, lock=True), "sell bid")
    marketplace.cancel_sell_bid(command.seller_id, ask, ctx.clock())
    # The ask's row before the registry's, the order a listing takes them in: its UPDATE
    # share-locks the product (the foreign key), and released first, a relisting holding
    # the product would wait on the released registry row while this waited on the
    # product (a deadlock the cancel lost again and again).
    uow.flush()
    uow.vouchers.release(ask.id)  # the voucher may be listed again


@dataclass(frozen=True)
class PlaceBuyBid(Command[PlacedBid]):
    buyer_id: str
    product_id: str
    price: int


def place_buy_bid(uow: UnitOfWork, command: PlaceBuyBid, ctx: CommandContext) -> PlacedBid:
    product = found(uow.products.get(command.product_id, lock=True), "product")
    buyer = acting_user(uow, command.buyer_id, lock=True)
    bid, escrow = marketplace.place_buy_bid(
        buyer=buyer,
        product_id=product.id,
        price=command.price,
        lowest_ask_price=uow.sell_bids.lowest_open_price(product.id),
        ids=ctx.ids,
        now=ctx.clock(),
    )
    uow.buy_bids.add(bid)
    uow.ledger.record(escrow)
    return PlacedBid(bid.id, bid.status)


@dataclass(frozen=True)
class CancelBuyBid(Command[None]):
    buyer_id: str
    buy_bid_id: str


def cancel_buy_bid(uow: UnitOfWork, command: CancelBuyBid, ctx: CommandContext) -> None:
    bid = found(uow.buy_bids.get(command.buy_bid_id, lock=True), "buy bid")
    bid.ensure_cancellable_by(command.buyer_id)
    buyer = acting_user(uow, command.buyer_id, lock=True)
    release = marketplace.cancel_buy_bid(buyer, bid, ctx.ids, ctx.clock())
    uow.ledger.record(release)


@dataclass(frozen=True)
class Purchase:
    order_id: str
    price: int
    discount: int
    paid: int
    status: str


@dataclass(frozen=True)
class BuyNow(Command[Purchase]):
    buyer_id: str
    product_id: str
    price: int
    coupon_id: str | None = None


def buy_now(uow: UnitOfWork, command: BuyNow, ctx: CommandContext) -> Purchase:
    require_points(command.price, "price")
    now = ctx.clock()
    takeable_from = ctx.vouchers.takeable_from(now)
    ask = uow.sell_bids.take_best(
        command.product_id, command.price, command.buyer_id, takeable_from
    )
    if ask is None:
        found(uow.products.get(command.product_id), "product")
        raise NoMatchingBid(f"no open sell bid at or below {command.price}.")
    users = uow.users.lock_many([command.buyer_id, ask.seller_id])
    buyer = users.get(command.buyer_id) or acting_user(uow, command.buyer_id)
    coupon = None
    if command.coupon_id is not None:
        coupon = uow.coupons.get(command.coupon_id, lock=True)
        if coupon is None:
            raise CouponUnavailable()
    order, payment = marketplace.buy_now(
        buyer=buyer,
        seller=users[ask.seller_id],
        ask=ask,
        coupon=coupon,
        rules=ctx.vouchers,
        ids=ctx.ids,
        now=now,
    )
    uow.orders.add(order)
    uow.ledger.record(payment)
    return Purchase(order.id, order.price, order.discount, order.paid, order.status)


@dataclass(frozen=True)
class Sale:
    order_id: str
    price: int
    status: str


@dataclass(frozen=True)
class SellNow(Command[Sale]):
    seller_id: str
    product_id: str
    price: int
    image_id: str
    barcode: str = field(repr=False)
    expires_on: date


def sell_now(uow: UnitOfWork, command: SellNow, ctx: CommandContext) -> Sale:
    require_points(command.price, "price")
    voucher = _declared_voucher(ctx, command.barcode, command.expires_on)
    stored = _describe_image(ctx, command.seller_id, command.image_id)
    bid = uow.buy_bids.take_best(command.product_id, command.price, command.seller_id)
    if bid is None:
        found(uow.products.get(command.product_id), "product")
        raise NoMatchingBid(f"no open buy bid at or above {command.price}.")
    users = uow.users.lock_many([command.seller_id, bid.buyer_id])
    seller = users.get(command.seller_id) or acting_user(uow, command.seller_id)
    image = found(uow.images.get(command.image_id, lock=True), "image")
    order, payment = marketplace.sell_now(
        seller=seller,
        buyer=users[bid.buyer_id],
        bid=bid,
        image=image,
        image_size=stored.size if stored else None,
        image_content_type=stored.content_type if stored else None,
        voucher=voucher,
        rules=ctx.vouchers,
        ids=ctx.ids,
        now=ctx.clock(),
    )
    uow.orders.add(order)
    uow.vouchers.register(voucher, now=order.created_at, order_id=order.id)
    uow.ledger.record(payment)
    return Sale(order.id, order.price, order.status)


@dataclass(frozen=True)
class ConfirmOrder(Command[str]):
    buyer_id: str
    order_id: str


def confirm_order(uow: UnitOfWork, command: ConfirmOrder, ctx: CommandContext) -> str:
    order = found(uow.orders.get(command.order_id, lock=True), "order")
    order.confirm(command.buyer_id, ctx.clock())
    return order.status
