"""What a load run must not have broken, checked once the users are gone.

Through the API, on any stage: every 2xx buy-now's order is shown to its buyer (read with
the buy-now's consistency token), and no user's points are negative. On the local stack's
primary as well (the whole database, not only this run's rows): no ask and no buy bid filled
twice, no coupon used by two orders in force, the ledger summing to zero and every user's
balances equal to their postings, no negative balance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from tests.load.scenario import Call, Reply, Send, balance_problem, order_shown_to_buyer

from giftmarket.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _in_parallel(
    work: Callable[[dict[str, Any]], str | None], entries: Sequence[dict[str, Any]]
) -> list[str]:
    """`work` on every entry, 8 at a time; the problems found."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return [problem for problem in pool.map(work, entries) if problem]


def api_checks(send: Send, journal: Sequence[dict[str, Any]]) -> list[Check]:
    orders = [e for e in journal if e.get("kind") == "order"]
    users = [e for e in journal if e.get("kind") == "user"]

    def order_visible(entry: dict[str, Any]) -> str | None:
        order_id = str(entry["order_id"])
        call = Call(
            "GET", f"/api/orders/{order_id}", token=entry["token"], consistency=entry["consistency"]
        )
        reply = send(call)
        if reply.status != 200:
            return f"{order_id}: HTTP {reply.status} {reply.code or ''}".strip()
        problem = order_shown_to_buyer(order_id, entry.get("user_id"))(reply.body)
        return f"{order_id}: {problem}" if problem else None

    def points_not_negative(entry: dict[str, Any]) -> str | None:
        reply: Reply = send(Call("GET", "/api/me", token=entry["token"]))
        if reply.status != 200:
            return f"{entry['user_id']}: HTTP {reply.status}"
        problem = balance_problem(reply.body)
        return f"{entry['user_id']}: {problem}" if problem else None

    missing = _in_parallel(order_visible, orders)
    negative = _in_parallel(points_not_negative, users)
    return [
        # Without a trade the checks below hold vacuously: a run that traded nothing fails.
        Check("the market traded (2xx buy-nows)", bool(orders), str(len(orders))),
        Check(
            "every 2xx buy-now's order is shown to its buyer",
            not missing,
            f"{len(orders) - len(missing)} of {len(orders)} shown"
            + (f"; e.g. {'; '.join(missing[:3])}" if missing else ""),
        ),
        Check(
            "no user's points negative (GET /api/me)",
            not negative,
            f"{len(users) - len(negative)} of {len(users)} users read"
            + (f"; e.g. {'; '.join(negative[:3])}" if negative else ""),
        ),
    ]


# Each query counts the rows that would break the rule: zero passes.
_STACK_RULES: tuple[tuple[str, str], ...] = (
    (
        "no ask sold twice",
        "SELECT COUNT(*) FROM (SELECT sell_bid_id FROM orders WHERE sell_bid_id IS NOT NULL"
        " GROUP BY sell_bid_id HAVING COUNT(*) > 1) twice",
    ),
    (
        "every matched ask has its order, every order's ask is matched",
        "SELECT (SELECT COUNT(*) FROM sell_bids s WHERE s.status = 'MATCHED' AND NOT EXISTS"
        " (SELECT 1 FROM orders o WHERE o.sell_bid_id = s.id))"
        " + (SELECT COUNT(*) FROM orders o JOIN sell_bids s ON s.id = o.sell_bid_id"
        " WHERE s.status <> 'MATCHED')",
    ),
    (
        "no buy bid filled twice",
        "SELECT COUNT(*) FROM (SELECT buy_bid_id FROM orders WHERE buy_bid_id IS NOT NULL"
        " GROUP BY buy_bid_id HAVING COUNT(*) > 1) twice",
    ),
    (
        "no coupon on two orders in force",
        "SELECT COUNT(*) FROM (SELECT coupon_id FROM orders WHERE coupon_id IS NOT NULL"
        " AND status <> 'REFUNDED' GROUP BY coupon_id HAVING COUNT(*) > 1) twice",
    ),
    ("the ledger sums to zero", "SELECT ABS(COALESCE(SUM(amount), 0)) FROM ledger_entries"),
    (
        "every user's balances equal their postings",
        "SELECT COUNT(*) FROM users u LEFT JOIN (SELECT account_owner,"
        " SUM(CASE WHEN bucket = 'available' THEN amount ELSE 0 END) AS available,"
        " SUM(CASE WHEN bucket = 'escrowed' THEN amount ELSE 0 END) AS escrowed,"
        " SUM(CASE WHEN bucket = 'pending' THEN amount ELSE 0 END) AS pending"
        " FROM ledger_entries GROUP BY account_owner) l ON l.account_owner = u.id"
        " WHERE u.available_points <> COALESCE(l.available, 0)"
        " OR u.escrowed_points <> COALESCE(l.escrowed, 0)"
        " OR u.pending_points <> COALESCE(l.pending, 0)",
    ),
    (
        "no negative balance on the primary",
        "SELECT COUNT(*) FROM users WHERE available_points < 0 OR escrowed_points < 0"
        " OR pending_points < 0",
    ),
)


def stack_checks(settings: Settings) -> list[Check]:
    """The rules above on the local stack's primary, all read in one snapshot."""
    from giftmarket.adapters.db import Database

    database = Database.from_settings(settings)
    try:
        with database.writer.connect() as pooled:
            # AUTOCOMMIT, so the snapshot below is the one transaction (the engine would
            # otherwise start its own, READ COMMITTED).
            conn = pooled.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            results = [
                (name, int(conn.execute(text(sql)).scalar_one())) for name, sql in _STACK_RULES
            ]
            conn.exec_driver_sql("COMMIT")
    except SQLAlchemyError as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return [Check("the local stack's primary answers", False, reason)]
    finally:
        database.dispose()
    return [
        Check(name, breaking == 0, "ok" if breaking == 0 else f"{breaking} breaking")
        for name, breaking in results
    ]
