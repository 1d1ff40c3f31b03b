"""Business rule violations, each with a stable machine-readable `code`.

Errors carry no HTTP status: the HTTP layer maps them by class, in one place.
"""

from typing import ClassVar


class DomainError(Exception):
    code: ClassVar[str]
    default_detail: ClassVar[str] = "The request breaks a business rule."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class InsufficientPoints(DomainError):
    code = "insufficient_points"
    default_detail = "Not enough points."


class NoMatchingBid(DomainError):
    code = "no_matching_bid"
    default_detail = "No open bid matches that price."


class CrossesBook(DomainError):
    code = "crosses_book"
    default_detail = "The bid would cross the order book; buy or sell now instead."


class CouponUnavailable(DomainError):
    code = "coupon_unavailable"
    default_detail = "The coupon cannot be used."


class BidNotOpen(DomainError):
    code = "bid_not_open"
    default_detail = "The bid is no longer open."


class EmailTaken(DomainError):
    code = "email_taken"
    default_detail = "That email is already registered."


class ImageUnusable(DomainError):
    code = "image_unusable"
    default_detail = "The image cannot be used."


class OrderNotConfirmable(DomainError):
    code = "order_not_confirmable"
    default_detail = "The order cannot be confirmed."


class VoucherDuplicate(DomainError):
    code = "voucher_duplicate"
    default_detail = "This voucher is already listed or sold."


class VoucherExpiring(DomainError):
    code = "voucher_expiring"
    default_detail = "The voucher expires too soon to be sold."


class NotDelivered(DomainError):
    code = "not_delivered"
    default_detail = "The voucher has not been delivered: the order is still being inspected."


class OrderNotDisputable(DomainError):
    code = "order_not_disputable"
    default_detail = "The order cannot be disputed."


class OrderNotPending(DomainError):
    code = "order_not_pending"
    default_detail = "The order is not waiting for that decision."


class NotFound(DomainError):
    """Raised for missing objects and for other users' objects alike, so that the
    existence of someone else's order, bid or image is never revealed."""

    code = "not_found"

    def __init__(self, resource: str, detail: str | None = None) -> None:
        self.resource = resource
        super().__init__(detail or f"{resource} not found.")


class Forbidden(DomainError):
    code = "forbidden"
    default_detail = "Only administrators may do that."


class InvalidField(DomainError):
    """A value the API should already have refused; the domain re-checks defensively."""

    code = "invalid_field"

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__(detail)


class InvalidAmount(InvalidField):
    code = "invalid_amount"
