"""The write model of PRODUCT.md: users, ledger, catalog, order book, orders, coupons,
settlements, the outbox and idempotency records.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 03:10:44.099115
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_records",
        sa.Column("scope", sa.String(length=64, collation="ascii_bin"), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255, collation="ascii_bin"), nullable=False),
        sa.Column("request_method", sa.String(length=8), nullable=False),
        sa.Column("request_path", sa.String(length=255), nullable=False),
        sa.Column("request_hash", mysql.CHAR(charset="ascii", length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_headers", sa.JSON(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("expires_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("scope", "idempotency_key", name=op.f("pk_idempotency_records")),
    )
    op.create_index(
        op.f("ix_idempotency_records_expires_at"),
        "idempotency_records",
        ["expires_at"],
        unique=False,
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "txn_id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column("account_owner", sa.String(length=32, collation="ascii_bin"), nullable=False),
        sa.Column("bucket", sa.String(length=16, collation="ascii_bin"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("ref_type", sa.String(length=32), nullable=True),
        sa.Column(
            "ref_id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=True
        ),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entries_amount_not_zero")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    op.create_index(
        op.f("ix_ledger_entries_account_owner_bucket"),
        "ledger_entries",
        ["account_owner", "bucket"],
        unique=False,
    )
    op.create_index(
        op.f("ix_ledger_entries_ref_type_ref_id"),
        "ledger_entries",
        ["ref_type", "ref_id"],
        unique=False,
    )
    op.create_index(op.f("ix_ledger_entries_txn_id"), "ledger_entries", ["txn_id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column("aggregate_type", sa.String(length=32), nullable=False),
        sa.Column("aggregate_id", sa.String(length=64, collation="ascii_bin"), nullable=False),
        sa.Column("aggregate_version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("message_group", sa.String(length=128, collation="ascii_bin"), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("published_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.Column("publish_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(
        op.f("ix_outbox_aggregate_type_aggregate_id_aggregate_version"),
        "outbox",
        ["aggregate_type", "aggregate_id", "aggregate_version"],
        unique=False,
    )
    op.create_index(
        op.f("ix_outbox_published_at_id"), "outbox", ["published_at", "id"], unique=False
    )
    op.create_table(
        "products",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("brand", sa.String(length=50), nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("face_value", sa.BigInteger(), nullable=False),
        sa.Column("like_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.CheckConstraint("face_value > 0", name=op.f("ck_products_face_value_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
    )
    op.create_index(
        op.f("ix_products_category_created_at"),
        "products",
        ["category", "created_at"],
        unique=False,
    )
    op.create_index(op.f("ix_products_created_at"), "products", ["created_at"], unique=False)
    op.create_index(op.f("ix_products_like_count"), "products", ["like_count"], unique=False)
    op.create_index(op.f("ix_products_name"), "products", ["name"], unique=False)
    op.create_table(
        "users",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("nickname", sa.String(length=30), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("available_points", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("escrowed_points", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_points", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("updated_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.CheckConstraint(
            "available_points >= 0 AND escrowed_points >= 0 AND pending_points >= 0",
            name=op.f("ck_users_balances_not_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "buy_bids",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column(
            "product_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column(
            "buyer_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("updated_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.CheckConstraint("price > 0", name=op.f("ck_buy_bids_price_positive")),
        sa.ForeignKeyConstraint(
            ["buyer_id"], ["users.id"], name=op.f("fk_buy_bids_buyer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_buy_bids_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buy_bids")),
    )
    op.create_index(
        op.f("ix_buy_bids_buyer_id_status_created_at"),
        "buy_bids",
        ["buyer_id", "status", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_buy_bids_product_id_status_price_created_at"),
        "buy_bids",
        ["product_id", "status", "price", "created_at"],
        unique=False,
    )
    op.create_table(
        "coupons",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column(
            "user_id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("discount_amount", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("issue_key", sa.String(length=64, collation="ascii_bin"), nullable=True),
        sa.Column(
            "order_id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=True
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("used_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.CheckConstraint("discount_amount > 0", name=op.f("ck_coupons_discount_positive")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_coupons_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("issue_key", name=op.f("uq_coupons_issue_key")),
    )
    op.create_index(
        op.f("ix_coupons_user_id_status_expires_at"),
        "coupons",
        ["user_id", "status", "expires_at"],
        unique=False,
    )
    op.create_table(
        "images",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column(
            "owner_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("s3_key", sa.String(length=255, collation="ascii_bin"), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("attached_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.Column("deleted_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_images_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("s3_key", name=op.f("uq_images_s3_key")),
    )
    op.create_index(op.f("ix_images_owner_id"), "images", ["owner_id"], unique=False)
    op.create_index(
        op.f("ix_images_status_created_at"), "images", ["status", "created_at"], unique=False
    )
    op.create_table(
        "product_likes",
        sa.Column(
            "user_id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column(
            "product_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_product_likes_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_product_likes_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "product_id", name=op.f("pk_product_likes")),
    )
    op.create_index(
        op.f("ix_product_likes_product_id"), "product_likes", ["product_id"], unique=False
    )
    op.create_table(
        "settlements",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column(
            "seller_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("order_count", sa.Integer(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.CheckConstraint(
            "net = gross - fee AND fee >= 0 AND gross >= 0",
            name=op.f("ck_settlements_amounts_consistent"),
        ),
        sa.ForeignKeyConstraint(
            ["seller_id"], ["users.id"], name=op.f("fk_settlements_seller_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlements")),
        sa.UniqueConstraint(
            "seller_id", "business_date", name=op.f("uq_settlements_seller_id_business_date")
        ),
    )
    op.create_index(
        op.f("ix_settlements_business_date"), "settlements", ["business_date"], unique=False
    )
    op.create_table(
        "sell_bids",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column(
            "product_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column(
            "seller_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column(
            "image_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("updated_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.CheckConstraint("price > 0", name=op.f("ck_sell_bids_price_positive")),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_sell_bids_image_id_images")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_sell_bids_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["seller_id"], ["users.id"], name=op.f("fk_sell_bids_seller_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sell_bids")),
        sa.UniqueConstraint("image_id", name=op.f("uq_sell_bids_image_id")),
    )
    op.create_index(
        op.f("ix_sell_bids_product_id_status_price_created_at"),
        "sell_bids",
        ["product_id", "status", "price", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_sell_bids_seller_id_status_created_at"),
        "sell_bids",
        ["seller_id", "status", "created_at"],
        unique=False,
    )
    op.create_table(
        "orders",
        sa.Column(
            "id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column(
            "product_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column(
            "buyer_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column(
            "seller_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column(
            "sell_bid_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=True,
        ),
        sa.Column(
            "buy_bid_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=True,
        ),
        sa.Column(
            "coupon_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=True,
        ),
        sa.Column(
            "image_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column(
            "settlement_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=True,
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("completed_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.Column("settled_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.CheckConstraint(
            "price > 0 AND discount >= 0 AND discount <= price AND paid = price - discount",
            name=op.f("ck_orders_amounts_consistent"),
        ),
        sa.ForeignKeyConstraint(
            ["buy_bid_id"], ["buy_bids.id"], name=op.f("fk_orders_buy_bid_id_buy_bids")
        ),
        sa.ForeignKeyConstraint(["buyer_id"], ["users.id"], name=op.f("fk_orders_buyer_id_users")),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_orders_coupon_id_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_orders_image_id_images")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_orders_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["sell_bid_id"], ["sell_bids.id"], name=op.f("fk_orders_sell_bid_id_sell_bids")
        ),
        sa.ForeignKeyConstraint(
            ["seller_id"], ["users.id"], name=op.f("fk_orders_seller_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["settlement_id"], ["settlements.id"], name=op.f("fk_orders_settlement_id_settlements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("buy_bid_id", name=op.f("uq_orders_buy_bid_id")),
        sa.UniqueConstraint("coupon_id", name=op.f("uq_orders_coupon_id")),
        sa.UniqueConstraint("sell_bid_id", name=op.f("uq_orders_sell_bid_id")),
    )
    op.create_index(
        op.f("ix_orders_buyer_id_status_created_at"),
        "orders",
        ["buyer_id", "status", "created_at"],
        unique=False,
    )
    op.create_index(op.f("ix_orders_image_id"), "orders", ["image_id"], unique=False)
    op.create_index(
        op.f("ix_orders_product_id_created_at"),
        "orders",
        ["product_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_orders_seller_id_status_completed_at"),
        "orders",
        ["seller_id", "status", "completed_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_orders_status_completed_at"), "orders", ["status", "completed_at"], unique=False
    )
    op.create_index(
        op.f("ix_orders_status_created_at"), "orders", ["status", "created_at"], unique=False
    )


def downgrade() -> None:
    # Dependents first; dropping a table drops its indexes and foreign keys with it.
    for table in (
        "orders",
        "settlements",
        "coupons",
        "buy_bids",
        "sell_bids",
        "images",
        "product_likes",
        "products",
        "ledger_entries",
        "outbox",
        "idempotency_records",
        "users",
    ):
        op.drop_table(table)
