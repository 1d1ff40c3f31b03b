"""Vouchers: an ask's and an order's voucher facts, the barcode registry, inspection and
disputes (PRODUCT.md, "Vouchers: facts, inspection (검수) and disputes").

Rows written before this revision keep NULL voucher facts: buy-now never takes such an ask
(its expiry is unknown) and the daily expiry job marks it EXPIRED, so its seller lists the
voucher again with its facts. Existing orders were delivered when they were placed, which
`delivered_at` now records.

On MySQL 8.4 every column added here is instant (nullable, or virtual); the unique key over
the virtual `coupon_in_force` and the other indexes are built online.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ulid() -> mysql.CHAR:
    return mysql.CHAR(charset="ascii", collation="ascii_bin", length=26)


def _time() -> mysql.DATETIME:
    return mysql.DATETIME(fsp=6)


def upgrade() -> None:
    op.add_column("sell_bids", sa.Column("barcode_last4", mysql.CHAR(4, charset="ascii")))
    op.add_column("sell_bids", sa.Column("expires_on", sa.Date()))
    op.create_index(op.f("ix_sell_bids_status_expires_on"), "sell_bids", ["status", "expires_on"])

    for column in (
        sa.Column("barcode_last4", mysql.CHAR(4, charset="ascii")),
        sa.Column("expires_on", sa.Date()),
        sa.Column("delivered_at", _time()),
        sa.Column("inspected_by", _ulid()),
        sa.Column("inspection_failure", sa.String(500)),
        sa.Column("dispute_reason", sa.String(500)),
        sa.Column("dispute_opened_at", _time()),
        sa.Column("dispute_decision", sa.String(8, collation="ascii_bin")),
        sa.Column("dispute_note", sa.String(500)),
        sa.Column("dispute_decided_by", _ulid()),
        sa.Column("dispute_decided_at", _time()),
        sa.Column("refunded_at", _time()),
        sa.Column(
            "coupon_in_force",
            mysql.TINYINT(),
            sa.Computed("CASE WHEN refunded_at IS NULL THEN 1 END", persisted=False),
        ),
    ):
        op.add_column("orders", column)
    op.execute("UPDATE orders SET delivered_at = created_at WHERE delivered_at IS NULL")
    op.create_index(op.f("ix_orders_status_delivered_at"), "orders", ["status", "delivered_at"])
    # A refunded order gives its coupon back: the unique key covers the orders in force.
    # It leads with coupon_id, so the foreign key keeps an index when the old key goes.
    op.create_unique_constraint(
        op.f("uq_orders_coupon_id_coupon_in_force"), "orders", ["coupon_id", "coupon_in_force"]
    )
    op.drop_constraint("uq_orders_coupon_id", "orders", type_="unique")

    op.create_table(
        "voucher_registry",
        sa.Column("kid", sa.String(32, collation="ascii_bin"), nullable=False),
        sa.Column("digest", mysql.CHAR(64, charset="ascii", collation="ascii_bin"), nullable=False),
        sa.Column("sell_bid_id", _ulid(), nullable=True),
        sa.Column("order_id", _ulid(), nullable=True),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("registered_at", _time(), nullable=False),
        sa.CheckConstraint(
            "(sell_bid_id IS NULL) <> (order_id IS NULL)",
            name=op.f("ck_voucher_registry_one_listing"),
        ),
        sa.ForeignKeyConstraint(
            ["sell_bid_id"],
            ["sell_bids.id"],
            name=op.f("fk_voucher_registry_sell_bid_id_sell_bids"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_voucher_registry_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("kid", "digest", name=op.f("pk_voucher_registry")),
    )
    op.create_index(op.f("ix_voucher_registry_sell_bid_id"), "voucher_registry", ["sell_bid_id"])
    op.create_index(op.f("ix_voucher_registry_order_id"), "voucher_registry", ["order_id"])
    op.create_index(
        op.f("ix_voucher_registry_kid_expires_on"), "voucher_registry", ["kid", "expires_on"]
    )


def downgrade() -> None:
    op.drop_table("voucher_registry")
    # Refunded orders may share a coupon with a later order: the old unique key would fail.
    # A refund gave the coupon back, so the refunded order lets go of it.
    op.execute("UPDATE orders SET coupon_id = NULL WHERE refunded_at IS NOT NULL")
    op.create_unique_constraint(op.f("uq_orders_coupon_id"), "orders", ["coupon_id"])
    op.drop_constraint("uq_orders_coupon_id_coupon_in_force", "orders", type_="unique")
    op.drop_index(op.f("ix_orders_status_delivered_at"), table_name="orders")
    for name in (
        "coupon_in_force",
        "refunded_at",
        "dispute_decided_at",
        "dispute_decided_by",
        "dispute_note",
        "dispute_decision",
        "dispute_opened_at",
        "dispute_reason",
        "inspection_failure",
        "inspected_by",
        "delivered_at",
        "expires_on",
        "barcode_last4",
    ):
        op.drop_column("orders", name)
    op.drop_index(op.f("ix_sell_bids_status_expires_on"), table_name="sell_bids")
    op.drop_column("sell_bids", "expires_on")
    op.drop_column("sell_bids", "barcode_last4")
