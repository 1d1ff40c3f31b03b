"""The session's schema reset really empties the database (it once silently did not)."""

from __future__ import annotations

from sqlalchemy import func, select

from giftmarket.adapters import tables
from giftmarket.adapters.db import Database
from giftmarket_local.migrations import reset
from giftmarket_local.stack import Stack


def test_reset_leaves_every_table_empty(stack: Stack, database: Database) -> None:
    stack.primary.sql(
        "INSERT INTO giftmarket.products (id, name, brand, category, face_value, created_at)"
        " VALUES ('01RESETPROBE0000000000000A', 'probe', 'b', 'c', 1, NOW(6))"
    )
    reset(stack.config)
    with database.writer.connect() as conn:
        for table in tables.metadata.sorted_tables:
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0, table
