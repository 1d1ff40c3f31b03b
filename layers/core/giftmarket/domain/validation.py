"""Defensive checks of values that enter the domain."""

from datetime import datetime

from giftmarket.domain.errors import InvalidAmount, InvalidField

MAX_POINTS = 10**9
"""The largest amount or price a single request may carry."""


def storable(text: str) -> bool:
    """Whether the database can keep `text`: valid Unicode (no lone surrogates), no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def require_points(value: int, field: str) -> int:
    # bool is an int subclass; True must not pass as one point.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POINTS:
        raise InvalidAmount(field, f"{field} must be a whole number from 1 to {MAX_POINTS}.")
    return value


def require_text(value: str, field: str, max_length: int) -> str:
    text = value.strip()
    if not 1 <= len(text) <= max_length:
        raise InvalidField(field, f"{field} must be 1 to {max_length} characters.")
    return text


def require_aware(instant: datetime, field: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InvalidField(field, f"{field} must carry a time zone.")
    return instant
