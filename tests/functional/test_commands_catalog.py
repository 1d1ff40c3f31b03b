"""Products, likes, image upload slots and the coupons admins issue. Every command handler runs the
way the command API runs it, on the in-memory fakes (tests/support/market.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.support.market import (
    Market,
)

from giftmarket.commands import catalog
from giftmarket.commands.context import Unauthenticated
from giftmarket.domain.coupons import CouponKind, CouponStatus
from giftmarket.domain.errors import (
    DomainError,
    Forbidden,
    ImageUnusable,
    InvalidAmount,
    InvalidField,
    NotFound,
)
from giftmarket.domain.images import ImageStatus

# --- products and likes --------------------------------------------------------------------


def test_admin_registers_a_product(market: Market) -> None:
    command = catalog.RegisterProduct(market.admin(), " Latte ", "Starbucks", "coffee", 5500)
    product_id, committed = market.commit(catalog.register_product, command)
    product = market.product(product_id)
    assert (product.name, product.brand, product.category, product.face_value) == (
        "Latte",
        "Starbucks",
        "coffee",
        5500,
    )
    assert (product.like_count, product.created_at) == (0, market.clock())
    assert market.written(committed) == {("ProductRegistered", product_id, 1)}


def test_non_admin_cannot_register_product(market: Market) -> None:
    command = catalog.RegisterProduct(market.signed_up(), "Latte", "Starbucks", "coffee", 5500)
    market.refused(catalog.register_product, command, Forbidden)


def test_register_product_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = catalog.RegisterProduct("01HZZZZZZZZZZZZZZZZZZZZZZZ", "Latte", "S", "coffee", 5500)
    market.refused(catalog.register_product, command, Unauthenticated)


def test_register_product_with_a_zero_face_value_is_invalid_amount(market: Market) -> None:
    command = catalog.RegisterProduct(market.admin(), "Latte", "Starbucks", "coffee", 0)
    market.refused(catalog.register_product, command, InvalidAmount)


def test_like_counts_once_and_writes_product_liked(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    assert market.product(product_id).like_count == 1
    assert market.written(committed) == {("ProductLiked", product_id, 2)}
    assert market.store.likes == {(product_id, user_id): market.clock()}


def test_liking_twice_is_the_same_as_once(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    market.run(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    product = market.product(product_id)
    assert (product.like_count, product.version) == (1, 2)
    assert committed.outbox_ids == ()


def test_likes_of_two_users_both_count(market: Market) -> None:
    product_id = market.new_product()
    for user_id in (market.signed_up(), market.signed_up()):
        market.run(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    assert market.product(product_id).like_count == 2


def test_unlike_removes_the_like_and_writes_product_unliked(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    market.run(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, False))
    assert market.product(product_id).like_count == 0
    assert market.store.likes == {}
    assert market.written(committed) == {("ProductUnliked", product_id, 3)}


def test_unliking_a_product_not_liked_changes_nothing(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, False))
    assert (market.product(product_id).like_count, committed.outbox_ids) == (0, ())


def test_like_of_an_unknown_product_is_not_found(market: Market) -> None:
    command = catalog.SetLike(market.signed_up(), "01HZZZZZZZZZZZZZZZZZZZZZZZ", True)
    assert market.refused(catalog.set_like, command, NotFound).resource == "product"


def test_like_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = catalog.SetLike("01HZZZZZZZZZZZZZZZZZZZZZZZ", market.new_product(), True)
    market.refused(catalog.set_like, command, Unauthenticated)


# --- image upload slots --------------------------------------------------------------------


def test_image_upload_gives_a_presigned_put_url_for_the_owners_key(market: Market) -> None:
    owner_id = market.signed_up()
    command = catalog.RequestImageUpload(owner_id, "image/png")
    slot, committed = market.commit(catalog.request_image_upload, command)
    key = f"images/{owner_id}/{slot.image_id}"
    assert slot.upload_url == f"https://fake-s3/put/{key}?ct=image/png"
    image = market.image(slot.image_id)
    assert (image.owner_id, image.s3_key, image.status) == (owner_id, key, ImageStatus.PENDING)
    assert market.written(committed) == {("ImageRequested", slot.image_id, 1)}


def test_image_upload_normalizes_the_content_type(market: Market) -> None:
    command = catalog.RequestImageUpload(market.signed_up(), " Image/JPEG; charset=binary")
    slot = market.run(catalog.request_image_upload, command)
    assert slot.upload_url.endswith("?ct=image/jpeg")
    assert market.image(slot.image_id).content_type == "image/jpeg"


@pytest.mark.parametrize("content_type", ["application/pdf", "image/gif", ""])
def test_image_upload_of_a_type_that_is_not_png_jpeg_or_webp_is_image_unusable(
    market: Market, content_type: str
) -> None:
    command = catalog.RequestImageUpload(market.signed_up(), content_type)
    market.refused(catalog.request_image_upload, command, ImageUnusable)


def test_image_upload_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = catalog.RequestImageUpload("01HZZZZZZZZZZZZZZZZZZZZZZZ", "image/png")
    market.refused(catalog.request_image_upload, command, Unauthenticated)


# --- admin coupons -------------------------------------------------------------------------


def test_admin_issues_a_coupon_to_a_user(market: Market) -> None:
    user_id = market.signed_up()
    expires_at = datetime(2025, 4, 1, 15, 0, 0, 1, tzinfo=UTC)
    command = catalog.IssueCoupon(market.admin(), user_id, "Spring", 1500, expires_at)
    coupon_id, committed = market.commit(catalog.issue_coupon, command)
    coupon = market.coupon(coupon_id)
    assert (coupon.user_id, coupon.name, coupon.discount_amount) == (user_id, "Spring", 1500)
    assert (coupon.status, coupon.kind, coupon.expires_at) == (
        CouponStatus.AVAILABLE,
        CouponKind.ADMIN,
        expires_at,
    )
    assert market.written(committed) == {("CouponIssued", coupon_id, 1)}


def test_non_admin_cannot_issue_coupons(market: Market) -> None:
    user_id = market.signed_up()
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(user_id, user_id, "Free money", 1000, expires_at)
    market.refused(catalog.issue_coupon, command, Forbidden)


def test_coupon_for_an_unknown_user_is_not_found(market: Market) -> None:
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(
        market.admin(), "01HZZZZZZZZZZZZZZZZZZZZZZZ", "Spring", 1000, expires_at
    )
    assert market.refused(catalog.issue_coupon, command, NotFound).resource == "user"


def test_coupon_with_an_expiry_without_time_zone_is_invalid_field(market: Market) -> None:
    command = catalog.IssueCoupon(
        market.admin(), market.signed_up(), "Spring", 1000, datetime(2025, 4, 1)
    )
    market.refused(catalog.issue_coupon, command, InvalidField)


@pytest.mark.parametrize(
    ("name", "discount", "error"),
    [
        ("Spring", 0, InvalidAmount),
        ("Spring", 10**9 + 1, InvalidAmount),
        ("x" * 101, 10, InvalidField),
    ],
)
def test_coupon_with_a_bad_amount_or_name_is_refused(
    market: Market, name: str, discount: int, error: type[DomainError]
) -> None:
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(market.admin(), market.signed_up(), name, discount, expires_at)
    market.refused(catalog.issue_coupon, command, error)


def test_coupon_issued_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(
        "01HZZZZZZZZZZZZZZZZZZZZZZZ", market.signed_up(), "Spring", 1000, expires_at
    )
    market.refused(catalog.issue_coupon, command, Unauthenticated)
