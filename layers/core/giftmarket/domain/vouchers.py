"""Vouchers (PRODUCT.md, "Vouchers: facts, inspection (검수) and disputes"): what a seller
declares about the gifticon they list, and the rules it must meet.

A barcode never enters the domain's state: a listing keeps its last 4 digits and its
fingerprints, one keyed hash (HMAC-SHA256) per key the deployment knows, each named by the
key's `kid`. The barcode registry stores every fingerprint under a unique key, so a voucher
listed under an old key is still found by a listing made after the key was rotated, and two
listings of one barcode racing each other collide in the database whatever the code does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from giftmarket.domain.errors import InvalidField, VoucherExpiring
from giftmarket.domain.settlement import business_date_of

BARCODE = re.compile(r"[0-9]{8,32}")


class InspectionMode(StrEnum):
    AUTO = "auto"  # the automatic checks pass at match time: delivered at once
    MANUAL = "manual"  # an admin passes or fails every order before delivery


@dataclass(frozen=True)
class Fingerprint:
    kid: str
    digest: str  # hex HMAC-SHA256 of the barcode under the key `kid`


@dataclass(frozen=True)
class VoucherRules:
    """MIN_VOUCHER_VALIDITY_DAYS, ASK_EXPIRY_MARGIN_DAYS and INSPECTION_MODE."""

    min_validity_days: int = 3
    ask_expiry_margin_days: int = 1
    inspection: InspectionMode = InspectionMode.AUTO

    def __post_init__(self) -> None:
        if self.ask_expiry_margin_days < 1:
            raise ValueError("ask_expiry_margin_days must be at least 1: never the last day")
        if self.min_validity_days < self.ask_expiry_margin_days:
            raise ValueError("a voucher must be listable for longer than the expiry margin")

    def ensure_listable(self, expires_on: date, now: datetime) -> None:
        earliest = business_date_of(now) + timedelta(days=self.min_validity_days)
        if expires_on < earliest:
            raise VoucherExpiring(
                f"the voucher must be valid until {earliest.isoformat()} or later "
                f"({self.min_validity_days} days from today in Korea) to be sold."
            )

    def takeable_from(self, now: datetime) -> date:
        """Buy-now takes only asks whose voucher is valid on this day or later."""
        return business_date_of(now) + timedelta(days=self.ask_expiry_margin_days)

    def is_takeable(self, expires_on: date | None, now: datetime) -> bool:
        return expires_on is not None and expires_on >= self.takeable_from(now)


def require_barcode(barcode: str) -> str:
    if not isinstance(barcode, str) or not BARCODE.fullmatch(barcode):
        raise InvalidField("barcode", "barcode must be 8 to 32 digits.")
    return barcode


@dataclass(frozen=True)
class Voucher:
    """A voucher as a listing keeps it: no barcode, only its last digits and fingerprints."""

    barcode_last4: str
    expires_on: date
    fingerprints: tuple[Fingerprint, ...]

    @classmethod
    def declared(
        cls,
        *,
        barcode: str,
        expires_on: date,
        fingerprints: tuple[Fingerprint, ...],
        rules: VoucherRules,
        now: datetime,
    ) -> Voucher:
        """The voucher a seller declares, checked: a well-formed barcode, valid long enough.
        `fingerprints` are the barcode's, one per known key (the registry's concern)."""
        require_barcode(barcode)
        if not fingerprints:
            raise ValueError("a voucher needs at least one fingerprint")
        rules.ensure_listable(expires_on, now)
        return cls(barcode_last4=barcode[-4:], expires_on=expires_on, fingerprints=fingerprints)
