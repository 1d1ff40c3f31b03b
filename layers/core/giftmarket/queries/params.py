"""What the queries are asked for and page by: their parameters' types, entity ids, the
product-list cursors and how answers write times, shared by the routes and by both readers
of every query (Redis and SQL).

Apart from the query modules (`queries.products`, `queries.account`, `queries.trades`) so
that the query API's routes can be declared without importing SQLAlchemy (a cold start's
cost; a query module is imported by the first request that needs it).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args

from giftmarket.domain.ids import is_ulid

Answer = dict[str, Any]
ProductSort = Literal["popular", "latest", "price"]
RankingBy = Literal["likes", "orders"]
HistoryState = Literal["bidding", "in_progress", "done"]

PRODUCT_SORTS: tuple[str, ...] = get_args(ProductSort)

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_MAX_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999999) - _EPOCH) // _MICROSECOND
_MAX_INT64 = 2**63 - 1


def is_entity_id(value: str) -> bool:
    """Ids are ULIDs; anything else cannot name a row."""
    return is_ulid(value)


def iso(value: datetime | None) -> str | None:
    """A naive UTC time from the database as ISO-8601 with its offset ("...+00:00"), as the
    outbox events (and so the read models) carry them."""
    return None if value is None else value.replace(tzinfo=UTC).isoformat()


def day(value: date) -> str:
    return value.isoformat()


# -- cursors ---------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """A cursor this API did not issue (or one issued for another sort order)."""


@dataclass(frozen=True)
class ProductCursor:
    """Where a page of /api/products ended: the last row's sort key and id.

    The key is like_count for `popular`, created_at in microseconds since the epoch for
    `latest`, lowest_ask (None when the product has no open ask) for `price`.
    """

    sort: ProductSort
    key: int | None
    product_id: str


def encode_cursor(cursor: ProductCursor) -> str:
    raw = json.dumps([cursor.sort, cursor.key, cursor.product_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_cursor(text: str) -> ProductCursor:
    """The cursor `encode_cursor` made, or InvalidCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("The cursor is not one this API issued.") from exc
    if not (isinstance(data, list) and len(data) == 3):
        raise InvalidCursor("The cursor is not one this API issued.")
    sort, key, product_id = data
    if sort not in PRODUCT_SORTS:
        raise InvalidCursor("The cursor is not one this API issued.")
    if not (isinstance(product_id, str) and is_entity_id(product_id)):
        raise InvalidCursor("The cursor is not one this API issued.")
    if not _valid_key(sort, key):
        raise InvalidCursor("The cursor is not one this API issued.")
    return ProductCursor(sort, key, product_id)


def list_member(cursor: ProductCursor) -> str:
    """The Redis product-list member a cursor stands for (see `adapters/lua/apply.lua`):
    bytes that sort like the page, so one cursor pages either store."""
    if cursor.sort == "popular":
        assert cursor.key is not None
        return f"{2**31 - 1 - cursor.key:010d}{cursor.product_id}"
    if cursor.sort == "latest":
        assert cursor.key is not None
        return f"{cursor.key:018d}{cursor.product_id}"
    if cursor.key is None:
        return f"1{cursor.product_id}"
    return f"0{cursor.key:019d}{cursor.product_id}"


def product_page(sort: ProductSort, rows: Sequence[tuple[Answer, int]], limit: int) -> Answer:
    """A page of /api/products from up to `limit + 1` (summary, created micros) rows."""
    items = [summary for summary, _ in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last, created = rows[limit - 1]
        key = {"popular": last["like_count"], "latest": created, "price": last["lowest_ask"]}
        next_cursor = encode_cursor(ProductCursor(sort, key[sort], last["product_id"]))
    return {"items": items, "next_cursor": next_cursor}


def _valid_key(sort: str, key: object) -> bool:
    if key is None:
        return sort == "price"
    if isinstance(key, bool) or not isinstance(key, int):
        return False
    bound = {"popular": 2**31 - 1, "latest": _MAX_MICROS, "price": _MAX_INT64}[sort]
    return 0 <= key <= bound
