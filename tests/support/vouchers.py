"""Voucher facts for the requests that list vouchers, and for rows a test writes straight
into the database (what is measured is buying, not listing) as `PlaceSellBid` would have
left them: the ask's last 4 digits and expiry, and the voucher's row in the registry."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert
from tests.support.fakes import fresh_barcode, valid_until

from giftmarket.adapters import tables
from giftmarket.domain.ids import new_id
from giftmarket.domain.images import s3_key_for

SEEDED_KID = "seeded"  # no deployment's key: these digests are made up


def voucher_facts(days: int = 30) -> dict[str, str]:
    """The voucher facts a sell bid's or sell-now's JSON body sends: a barcode no test used,
    valid `days` days after today in Korea."""
    expires_on = valid_until(datetime.now(UTC), days)
    return {"barcode": fresh_barcode(), "expires_on": expires_on.isoformat()}


def seeded_voucher(
    ask_id: str, now: datetime, days: int = 30
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The voucher of a seeded ask, as `PlaceSellBid` leaves it: the ask's columns
    (barcode_last4, expires_on: valid `days` days after `now`'s date in Korea; `now` naive
    is UTC, as the tables keep it) and its voucher_registry row. Its digest is made up from
    the ask's id, so every seeded voucher is another one, and no barcode is drawn."""
    digest = hashlib.sha256(ask_id.encode()).hexdigest()
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    expires_on = valid_until(aware, days)
    columns = {"barcode_last4": f"{int(digest[:8], 16) % 10_000:04d}", "expires_on": expires_on}
    registry = {
        "kid": SEEDED_KID,
        "digest": digest,
        "sell_bid_id": ask_id,
        "order_id": None,
        "expires_on": expires_on,
        "registered_at": now,
    }
    return columns, registry


def seeded_ask(
    *,
    seller: str,
    product: str,
    price: int,
    now: datetime,
    listed_at: datetime | None = None,
    size_bytes: int = 1024,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An open ask's rows as placing it leaves them, for a load or benchmark that writes
    them straight into the tables (what it measures is buying or cleaning up, not
    listing): its attached image, the ask with its voucher's columns, and the voucher's
    registry row. Listed at `listed_at` (default `now`), valid 30 days after `now`."""
    image_id, ask_id = new_id(), new_id()
    listed = listed_at or now
    voucher, registered = seeded_voucher(ask_id, now)
    image = {
        "id": image_id,
        "owner_id": seller,
        "s3_key": s3_key_for(seller, image_id),
        "content_type": "image/png",
        "status": "ATTACHED",
        "size_bytes": size_bytes,
        "version": 2,  # uploaded, then attached
        "created_at": listed,
        "attached_at": listed,
    }
    ask = {
        "id": ask_id,
        "product_id": product,
        "seller_id": seller,
        "price": price,
        "image_id": image_id,
        **voucher,
        "status": "OPEN",
        "created_at": listed,
        "updated_at": listed,
    }
    return image, ask, registered


def write_asks(conn: Connection, asks: Sequence[tuple[dict[str, Any], ...]]) -> None:
    """`seeded_ask`s' rows, a multi-row INSERT per table, in the order their keys need."""
    images, sell_bids, registry = (list(rows) for rows in zip(*asks, strict=True))
    conn.execute(insert(tables.images), images)
    conn.execute(insert(tables.sell_bids), sell_bids)
    conn.execute(insert(tables.voucher_registry), registry)


def write_random_asks(
    conn: Connection,
    rng: random.Random,
    *,
    sellers: Sequence[str],
    products: Sequence[str],
    count: int,
    now: datetime,
    chunk: int = 2000,
) -> None:
    """`count` open asks, each of a seller and a product drawn from those given, priced
    4,000 to 5,000: a market to buy from."""
    for start in range(0, count, chunk):
        asks = [
            seeded_ask(
                seller=rng.choice(sellers),
                product=rng.choice(products),
                price=rng.randint(4000, 5000),
                now=now,
            )
            for _ in range(start, min(count, start + chunk))
        ]
        write_asks(conn, asks)
