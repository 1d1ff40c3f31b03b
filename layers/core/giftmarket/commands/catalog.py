"""Products (admin), likes, image upload slots, and admin-issued coupons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from giftmarket.commands.context import CommandContext, acting_user, found
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon, CouponKind
from giftmarket.domain.images import Image


@dataclass(frozen=True)
class RegisterProduct(Command[str]):
    admin_id: str
    name: str
    brand: str
    category: str
    face_value: int


def register_product(uow: UnitOfWork, command: RegisterProduct, ctx: CommandContext) -> str:
    acting_user(uow, command.admin_id).ensure_admin()
    product = Product.register(
        product_id=ctx.ids(),
        name=command.name,
        brand=command.brand,
        category=command.category,
        face_value=command.face_value,
        now=ctx.clock(),
    )
    uow.products.add(product)
    return product.id


@dataclass(frozen=True)
class SetLike(Command[None]):
    user_id: str
    product_id: str
    liked: bool


def set_like(uow: UnitOfWork, command: SetLike, ctx: CommandContext) -> None:
    """Like or unlike; doing either twice is the same as once."""
    acting_user(uow, command.user_id)
    product = found(uow.products.get(command.product_id, lock=True), "product")
    now = ctx.clock()
    was_liked = uow.products.is_liked(product.id, command.user_id)
    if command.liked and product.like(command.user_id, was_liked, now):
        uow.products.add_like(product.id, command.user_id, now)
    elif not command.liked and product.unlike(command.user_id, was_liked, now):
        uow.products.remove_like(product.id, command.user_id)


@dataclass(frozen=True)
class UploadSlot:
    image_id: str
    upload_url: str


@dataclass(frozen=True)
class RequestImageUpload(Command[UploadSlot]):
    owner_id: str
    content_type: str


def request_image_upload(
    uow: UnitOfWork, command: RequestImageUpload, ctx: CommandContext
) -> UploadSlot:
    acting_user(uow, command.owner_id)
    image = Image.request(
        image_id=ctx.ids(),
        owner_id=command.owner_id,
        content_type=command.content_type,
        now=ctx.clock(),
    )
    uow.images.add(image)
    return UploadSlot(image.id, ctx.images.presign_upload(image.s3_key, image.content_type))


@dataclass(frozen=True)
class IssueCoupon(Command[str]):
    admin_id: str
    user_id: str
    name: str
    discount_amount: int
    expires_at: datetime


def issue_coupon(uow: UnitOfWork, command: IssueCoupon, ctx: CommandContext) -> str:
    acting_user(uow, command.admin_id).ensure_admin()
    found(uow.users.get(command.user_id), "user")
    coupon = Coupon.issue(
        coupon_id=ctx.ids(),
        user_id=command.user_id,
        name=command.name,
        discount_amount=command.discount_amount,
        expires_at=command.expires_at,
        kind=CouponKind.ADMIN,
        now=ctx.clock(),
    )
    uow.coupons.add(coupon)
    return coupon.id
