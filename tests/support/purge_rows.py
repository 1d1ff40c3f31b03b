"""Rows for the purge's tests, written straight into the primary in one INSERT ... SELECT
each (10^5 rows take a second or two): outbox rows and idempotency records of a batch of
their own, told apart by a tag.

Outbox ids are "00" + tag + a counter: below every real ULID, so no test that reads the
outbox "after the last id it saw" ever meets them. `remove` deletes whatever of a tag is
left (the rows the purge must keep), so no relay later tries to publish them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Engine, func, select, text

from giftmarket.adapters import tables
from giftmarket.adapters.repositories import to_db_time

MAX_ROWS = 10**5
# 0..99999 without a recursive CTE (MySQL caps their depth at 1000 by default).
_NUMBERS = (
    "WITH d AS (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3"
    " UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7"
    " UNION ALL SELECT 8 UNION ALL SELECT 9),"
    " s AS (SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n AS n"
    " FROM d a, d b, d c, d e, d f)"
)


def outbox_prefix(tag: str) -> str:
    assert tag.isalnum() and len(tag) <= 12, tag
    return f"00{tag.upper()}"


def insert_outbox(
    conn: Connection,
    tag: str,
    count: int,
    *,
    occurred_at: datetime,
    published_at: datetime | None,
    first: int = 0,
) -> None:
    """`count` outbox rows of `tag`, numbered from `first`, published at `published_at`
    (None: not yet), each with a payload of about 300 bytes, like a real event's."""
    assert 0 <= first and first + count <= MAX_ROWS
    prefix = outbox_prefix(tag)
    conn.execute(
        text(
            f"INSERT INTO outbox (id, aggregate_type, aggregate_id, aggregate_version,"
            f" event_type, message_group, payload, occurred_at, published_at) {_NUMBERS}"
            f" SELECT CONCAT(:prefix, LPAD(n, {26 - len(prefix)}, '0')), 'order',"
            " CONCAT('purge-', n), 1, 'OrderPaid', CONCAT('order:purge-', n),"
            " JSON_OBJECT('order_id', CONCAT('purge-', n), 'price', 5000,"
            " 'note', REPEAT('x', 240)), :occurred_at, :published_at"
            " FROM s WHERE n >= :first AND n < :end"
        ),
        {
            "prefix": prefix,
            "occurred_at": to_db_time(occurred_at),
            "published_at": None if published_at is None else to_db_time(published_at),
            "first": first,
            "end": first + count,
        },
    )


def insert_idempotency(
    conn: Connection, tag: str, count: int, *, expires_at: datetime, first: int = 0
) -> None:
    """`count` idempotency records in scope `tag` that expire at `expires_at`."""
    assert 0 <= first and first + count <= MAX_ROWS
    conn.execute(
        text(
            "INSERT INTO idempotency_records (scope, idempotency_key, request_method,"
            " request_path, request_hash, response_status, response_headers, response_body,"
            f" created_at, expires_at) {_NUMBERS}"
            " SELECT :scope, CONCAT('key-', n), 'POST', '/api/points/charge', REPEAT('a', 64),"
            " 200, JSON_OBJECT('content-type', 'application/json'),"
            " CONCAT('{\"available_points\": ', n, '}'), :expires_at - INTERVAL 1 DAY,"
            " :expires_at FROM s WHERE n >= :first AND n < :end"
        ),
        {
            "scope": tag,
            "expires_at": to_db_time(expires_at),
            "first": first,
            "end": first + count,
        },
    )


def left(engine: Engine, tag: str) -> tuple[int, int]:
    """(outbox rows, idempotency records) of `tag` still in the database."""
    o, r = tables.outbox, tables.idempotency_records
    with engine.connect() as conn:
        rows = conn.execute(
            select(func.count()).where(o.c.id.startswith(outbox_prefix(tag)))
        ).scalar_one()
        records = conn.execute(select(func.count()).where(r.c.scope == tag)).scalar_one()
    return int(rows), int(records)


def remove(engine: Engine, tag: str) -> None:
    o, r = tables.outbox, tables.idempotency_records
    with engine.begin() as conn:
        conn.execute(o.delete().where(o.c.id.startswith(outbox_prefix(tag))))
        conn.execute(r.delete().where(r.c.scope == tag))
