"""The ledger's own check of the money: what every reliability test ends with."""

from __future__ import annotations

from sqlalchemy import func, select

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container


def assert_ledger_agrees_with_balances(container: Container) -> None:
    """The whole ledger sums to zero, and every user's balances are their postings' sums."""
    u, e = tables.users, tables.ledger_entries
    with container.database.writer.connect() as conn:
        assert conn.execute(select(func.coalesce(func.sum(e.c.amount), 0))).scalar_one() == 0
        sums: dict[tuple[str, str], int] = {
            (owner, bucket): int(total)
            for owner, bucket, total in conn.execute(
                select(e.c.account_owner, e.c.bucket, func.sum(e.c.amount)).group_by(
                    e.c.account_owner, e.c.bucket
                )
            )
        }
        for user_id, available, escrowed, pending in conn.execute(
            select(u.c.id, u.c.available_points, u.c.escrowed_points, u.c.pending_points)
        ):
            assert (available, escrowed, pending) == (
                sums.get((user_id, "available"), 0),
                sums.get((user_id, "escrowed"), 0),
                sums.get((user_id, "pending"), 0),
            ), user_id
