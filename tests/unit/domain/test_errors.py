import pytest

from giftmarket.domain import errors

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (errors.InsufficientPoints, "insufficient_points"),
        (errors.NoMatchingBid, "no_matching_bid"),
        (errors.CrossesBook, "crosses_book"),
        (errors.CouponUnavailable, "coupon_unavailable"),
        (errors.BidNotOpen, "bid_not_open"),
        (errors.EmailTaken, "email_taken"),
        (errors.ImageUnusable, "image_unusable"),
        (errors.OrderNotConfirmable, "order_not_confirmable"),
        (errors.Forbidden, "forbidden"),
    ],
)
def test_each_business_error_has_its_stable_code_and_a_default_detail(
    error_class: type[errors.DomainError], code: str
) -> None:
    error = error_class()

    assert error.code == code
    assert error.detail
    assert isinstance(error, errors.DomainError)


def test_detail_given_by_the_raiser_replaces_the_default() -> None:
    error = errors.BidNotOpen("the buy bid is MATCHED.")

    assert error.detail == "the buy bid is MATCHED."
    assert str(error) == "the buy bid is MATCHED."


def test_not_found_names_the_resource_without_saying_whose_it_is() -> None:
    error = errors.NotFound("order")

    assert error.code == "not_found"
    assert error.resource == "order"
    assert error.detail == "order not found."


def test_invalid_amount_is_an_invalid_field_with_its_own_code() -> None:
    error = errors.InvalidAmount("price", "price must be positive.")

    assert isinstance(error, errors.InvalidField)
    assert (error.code, error.field) == ("invalid_amount", "price")
    assert errors.InvalidField("name", "too long").code == "invalid_field"
