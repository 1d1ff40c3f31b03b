"""Voucher facts for the requests that list vouchers, and for rows a test writes straight
into the database (what is measured is buying, not listing) as `PlaceSellBid` would have
left them: the ask's last 4 digits and expiry, and the voucher's row in the registry."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Any

from tests.support.fakes import fresh_barcode, valid_until

SEEDED_KID = "seeded"  # no deployment's key: these digests are made up, one per barcode


def voucher_facts(days: int = 30) -> dict[str, str]:
    """The voucher facts a sell bid's or sell-now's JSON body sends: a barcode no test used,
    valid `days` days after today in Korea."""
    expires_on = valid_until(datetime.now(UTC), days)
    return {"barcode": fresh_barcode(), "expires_on": expires_on.isoformat()}


def ask_voucher(now: datetime, days: int = 30) -> tuple[str, dict[str, Any]]:
    """A fresh barcode, and the ask's columns for it, valid `days` after `now` in Korea
    (`now` naive is UTC, as the tables keep it)."""
    barcode = fresh_barcode()
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return barcode, {"barcode_last4": barcode[-4:], "expires_on": valid_until(aware, days)}


def registry_row(
    barcode: str,
    expires_on: date,
    registered_at: datetime,
    *,
    sell_bid_id: str | None = None,
    order_id: str | None = None,
) -> dict[str, Any]:
    """voucher_registry's row for a voucher on the ask (or in the order) named."""
    return {
        "kid": SEEDED_KID,
        "digest": hashlib.sha256(barcode.encode()).hexdigest(),
        "sell_bid_id": sell_bid_id,
        "order_id": order_id,
        "expires_on": expires_on,
        "registered_at": registered_at,
    }
