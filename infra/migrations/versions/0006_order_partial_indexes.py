"""Orders found by status through partial indexes: generated columns that hold a value only
in the statuses an index serves (`awaiting`/`awaiting_since` for the orders someone must
act on, `settleable_at` for the daily settlement) or that keep their value across the
changes it does not care about (`purchase_state`, `sale_state` for the histories). A
change of status then rewrites only the entries of the indexes it concerns: settling an
order moves it in two indexes instead of five (issue 18).

The expressions are the ones `giftmarket.adapters.tables` builds (a unit test compares
them). On MySQL 8.4 adding a virtual column is instant and each index is built online; the
new indexes are built before the old ones go, so every query and foreign key keeps one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 23:59:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENERATED: dict[str, tuple[sa.types.TypeEngine[Any], str]] = {
    "awaiting": (
        sa.String(16),
        "CASE status WHEN 'INSPECTING' THEN status WHEN 'PAID' THEN status"
        " WHEN 'DISPUTED' THEN status END",
    ),
    "awaiting_since": (
        mysql.DATETIME(fsp=6),
        "CASE status WHEN 'INSPECTING' THEN created_at WHEN 'PAID' THEN delivered_at"
        " WHEN 'DISPUTED' THEN dispute_opened_at END",
    ),
    "settleable_at": (mysql.DATETIME(fsp=6), "CASE status WHEN 'COMPLETED' THEN completed_at END"),
    "purchase_state": (
        sa.String(16),
        "CASE status WHEN 'INSPECTING' THEN 'in_progress' WHEN 'PAID' THEN 'in_progress'"
        " WHEN 'DISPUTED' THEN 'in_progress' WHEN 'COMPLETED' THEN 'done'"
        " WHEN 'SETTLED' THEN 'done' WHEN 'REFUNDED' THEN 'done' END",
    ),
    "sale_state": (
        sa.String(16),
        "CASE status WHEN 'INSPECTING' THEN 'in_progress' WHEN 'PAID' THEN 'in_progress'"
        " WHEN 'DISPUTED' THEN 'in_progress' WHEN 'COMPLETED' THEN 'in_progress'"
        " WHEN 'SETTLED' THEN 'done' WHEN 'REFUNDED' THEN 'done' END",
    ),
}
NEW_INDEXES = (
    ("awaiting", "awaiting_since"),
    ("seller_id", "settleable_at"),
    ("buyer_id", "purchase_state", "created_at"),
    ("seller_id", "sale_state", "created_at"),
)
OLD_INDEXES = (
    ("buyer_id", "status", "created_at"),
    ("seller_id", "status", "completed_at"),
    ("status", "created_at"),
    ("status", "completed_at"),
    ("status", "delivered_at"),
)


def _name(columns: tuple[str, ...]) -> str:
    return "ix_orders_" + "_".join(columns)


def upgrade() -> None:
    for name, (type_, expression) in GENERATED.items():
        op.add_column("orders", sa.Column(name, type_, sa.Computed(expression, persisted=False)))
    for columns in NEW_INDEXES:
        op.create_index(op.f(_name(columns)), "orders", list(columns))
    for columns in OLD_INDEXES:
        op.drop_index(op.f(_name(columns)), table_name="orders")


def downgrade() -> None:
    for columns in OLD_INDEXES:
        op.create_index(op.f(_name(columns)), "orders", list(columns))
    for columns in NEW_INDEXES:
        op.drop_index(op.f(_name(columns)), table_name="orders")
    for name in reversed(GENERATED):
        op.drop_column("orders", name)
