"""The write model's tables (MySQL 8 / MariaDB 10.11), as SQLAlchemy Core metadata.

Alembic migrations under infra/migrations create exactly this schema; a test compares the
migrated database with this metadata, so the two cannot drift apart.

Conventions: entity ids are 26-character ULIDs (time-ordered, unguessable, ascii); money is
BIGINT points; times are UTC in DATETIME(6); every aggregate row carries a `version`, bumped
on each change, which the outbox events carry so read models can refuse to go backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import JSON, TypeEngine

from giftmarket.domain.orders import PURCHASE_STATE, SALE_STATE, OrderStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def ulid() -> TypeEngine[str]:
    return mysql.CHAR(26, charset="ascii", collation="ascii_bin")


def utc_time() -> TypeEngine[datetime]:
    return mysql.DATETIME(fsp=6)


def points(name: str, **kw: object) -> Column[int]:
    return Column(name, BigInteger, nullable=False, **kw)  # type: ignore[arg-type]


def _case_of_status(cases: Mapping[OrderStatus, str]) -> str:
    """A CASE on orders.status giving each listed status its SQL value, NULL to the rest."""
    whens = " ".join(f"WHEN '{status.value}' THEN {value}" for status, value in cases.items())
    return f"CASE status {whens} END"


def _state_of_status(states: Mapping[OrderStatus, str]) -> str:
    return _case_of_status({status: f"'{state}'" for status, state in states.items()})


def version() -> Column[int]:
    return Column("version", Integer, nullable=False, server_default=text("1"))


users = Table(
    "users",
    metadata,
    Column("id", ulid(), primary_key=True),
    # NULL for a social account whose provider gave no verified email (unique otherwise).
    Column("email", String(254), nullable=True),
    Column("nickname", String(30), nullable=False),
    # NULL for a social-only account, which cannot sign in with a password.
    Column("password_hash", String(255), nullable=True),
    Column("is_admin", Boolean, nullable=False, server_default=text("0")),
    points("available_points", server_default=text("0")),
    points("escrowed_points", server_default=text("0")),
    points("pending_points", server_default=text("0")),
    version(),
    Column("created_at", utc_time(), nullable=False),
    Column("updated_at", utc_time(), nullable=False),
    UniqueConstraint("email"),
    # The database refuses a negative balance even if the application had a bug.
    CheckConstraint(
        "available_points >= 0 AND escrowed_points >= 0 AND pending_points >= 0",
        name="balances_not_negative",
    ),
)

# Social sign-in: the account each (provider, subject) signs in as. `subject` is the
# provider's `sub`, case-sensitive ASCII; nothing of the ID token itself is kept.
user_identities = Table(
    "user_identities",
    metadata,
    Column("provider", String(32, collation="ascii_bin"), nullable=False),
    Column("subject", String(255, collation="ascii_bin"), nullable=False),
    Column("user_id", ulid(), ForeignKey("users.id"), nullable=False),
    Column("created_at", utc_time(), nullable=False),
    PrimaryKeyConstraint("provider", "subject"),
    Index(None, "user_id"),
)

# Double-entry ledger: the postings of one transaction (txn_id) sum to zero. Accounts are
# (owner, bucket): a user id with available/escrowed/pending, or "platform" with
# fees/coupon_subsidy, or "external" with charges (money entering the system).
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("txn_id", ulid(), nullable=False),
    Column("account_owner", String(32, collation="ascii_bin"), nullable=False),
    Column("bucket", String(16, collation="ascii_bin"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("ref_type", String(32), nullable=True),
    Column("ref_id", ulid(), nullable=True),
    Column("created_at", utc_time(), nullable=False),
    CheckConstraint("amount <> 0", name="amount_not_zero"),
    Index(None, "account_owner", "bucket"),
    Index(None, "txn_id"),
    Index(None, "ref_type", "ref_id"),
)

products = Table(
    "products",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("brand", String(50), nullable=False),
    Column("category", String(50), nullable=False),
    points("face_value"),
    Column("like_count", Integer, nullable=False, server_default=text("0")),
    version(),
    Column("created_at", utc_time(), nullable=False),
    CheckConstraint("face_value > 0", name="face_value_positive"),
    Index(None, "category", "created_at"),
    Index(None, "created_at"),
    Index(None, "like_count"),
    Index(None, "name"),
)

product_likes = Table(
    "product_likes",
    metadata,
    Column("user_id", ulid(), ForeignKey("users.id"), nullable=False),
    Column("product_id", ulid(), ForeignKey("products.id"), nullable=False),
    Column("created_at", utc_time(), nullable=False),
    # One like per user and product: liking twice is the same as once.
    PrimaryKeyConstraint("user_id", "product_id"),
    Index(None, "product_id"),
)

images = Table(
    "images",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("owner_id", ulid(), ForeignKey("users.id"), nullable=False),
    Column("s3_key", String(255, collation="ascii_bin"), nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # PENDING, ATTACHED, DELETED
    Column("size_bytes", BigInteger, nullable=True),
    version(),
    Column("created_at", utc_time(), nullable=False),
    Column("attached_at", utc_time(), nullable=True),
    Column("deleted_at", utc_time(), nullable=True),
    UniqueConstraint("s3_key"),
    Index(None, "status", "created_at"),
    Index(None, "owner_id"),
)

sell_bids = Table(
    "sell_bids",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("product_id", ulid(), ForeignKey("products.id"), nullable=False),
    Column("seller_id", ulid(), ForeignKey("users.id"), nullable=False),
    points("price"),
    Column("image_id", ulid(), ForeignKey("images.id"), nullable=False),
    # The voucher (never its barcode: that is only in voucher_registry, keyed-hashed).
    # NULL only on asks listed before vouchers had facts; buy-now never takes those.
    Column("barcode_last4", mysql.CHAR(4, charset="ascii"), nullable=True),
    Column("expires_on", Date, nullable=True),
    Column("status", String(16), nullable=False),  # OPEN, MATCHED, CANCELLED, EXPIRED
    version(),
    Column("created_at", utc_time(), nullable=False),
    Column("updated_at", utc_time(), nullable=False),
    CheckConstraint("price > 0", name="price_positive"),
    UniqueConstraint("image_id"),
    # The order book: lowest open ask first, oldest first among equals.
    Index(None, "product_id", "status", "price", "created_at"),
    Index(None, "seller_id", "status", "created_at"),
    # The daily expiry: the open asks whose voucher expires soonest.
    Index(None, "status", "expires_on"),
)

buy_bids = Table(
    "buy_bids",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("product_id", ulid(), ForeignKey("products.id"), nullable=False),
    Column("buyer_id", ulid(), ForeignKey("users.id"), nullable=False),
    points("price"),
    Column("status", String(16), nullable=False),  # OPEN, MATCHED, CANCELLED
    version(),
    Column("created_at", utc_time(), nullable=False),
    Column("updated_at", utc_time(), nullable=False),
    CheckConstraint("price > 0", name="price_positive"),
    Index(None, "product_id", "status", "price", "created_at"),
    Index(None, "buyer_id", "status", "created_at"),
)

coupons = Table(
    "coupons",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("user_id", ulid(), ForeignKey("users.id"), nullable=False),
    Column("name", String(100), nullable=False),
    points("discount_amount"),
    Column("kind", String(16), nullable=False),  # welcome, admin
    Column("status", String(16), nullable=False),  # AVAILABLE, USED, EXPIRED
    Column("expires_at", utc_time(), nullable=False),
    # Makes issuing idempotent where it must be: e.g. "welcome:<user id>" once per user.
    Column("issue_key", String(64, collation="ascii_bin"), nullable=True),
    Column("order_id", ulid(), nullable=True),
    version(),
    Column("created_at", utc_time(), nullable=False),
    Column("used_at", utc_time(), nullable=True),
    CheckConstraint("discount_amount > 0", name="discount_positive"),
    UniqueConstraint("issue_key"),
    Index(None, "user_id", "status", "expires_at"),
)

settlements = Table(
    "settlements",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("seller_id", ulid(), ForeignKey("users.id"), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("order_count", Integer, nullable=False),
    points("gross"),
    points("fee"),
    points("net"),
    version(),
    Column("created_at", utc_time(), nullable=False),
    # One settlement per seller and business date: a rerun cannot settle twice.
    UniqueConstraint("seller_id", "business_date"),
    CheckConstraint("net = gross - fee AND fee >= 0 AND gross >= 0", name="amounts_consistent"),
    Index(None, "business_date"),
)

_WAITING_SINCE = {
    OrderStatus.INSPECTING: "created_at",
    OrderStatus.PAID: "delivered_at",
    OrderStatus.DISPUTED: "dispute_opened_at",
}
_AWAITING = _case_of_status(dict.fromkeys(_WAITING_SINCE, "status"))
_AWAITING_SINCE = _case_of_status(_WAITING_SINCE)
_SETTLEABLE_AT = _case_of_status({OrderStatus.COMPLETED: "completed_at"})
_PURCHASE_STATE = _state_of_status(PURCHASE_STATE)
_SALE_STATE = _state_of_status(SALE_STATE)

orders = Table(
    "orders",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("product_id", ulid(), ForeignKey("products.id"), nullable=False),
    Column("buyer_id", ulid(), ForeignKey("users.id"), nullable=False),
    Column("seller_id", ulid(), ForeignKey("users.id"), nullable=False),
    # Unique: one ask or bid can be matched into at most one order, whatever the code does.
    Column("sell_bid_id", ulid(), ForeignKey("sell_bids.id"), nullable=True),
    Column("buy_bid_id", ulid(), ForeignKey("buy_bids.id"), nullable=True),
    Column("coupon_id", ulid(), ForeignKey("coupons.id"), nullable=True),
    Column("image_id", ulid(), ForeignKey("images.id"), nullable=False),
    points("price"),
    points("discount", server_default=text("0")),
    points("paid"),
    # INSPECTING, PAID, DISPUTED, COMPLETED, SETTLED, REFUNDED
    Column("status", String(16), nullable=False),
    Column("via", String(16), nullable=False),  # buy_now, sell_now
    Column("barcode_last4", mysql.CHAR(4, charset="ascii"), nullable=True),
    Column("expires_on", Date, nullable=True),
    Column("settlement_id", ulid(), ForeignKey("settlements.id"), nullable=True),
    version(),
    Column("created_at", utc_time(), nullable=False),
    Column("delivered_at", utc_time(), nullable=True),
    Column("completed_at", utc_time(), nullable=True),
    Column("settled_at", utc_time(), nullable=True),
    Column("inspected_by", ulid(), nullable=True),
    Column("inspection_failure", String(500), nullable=True),
    Column("dispute_reason", String(500), nullable=True),
    Column("dispute_opened_at", utc_time(), nullable=True),
    Column("dispute_decision", String(8, collation="ascii_bin"), nullable=True),
    Column("dispute_note", String(500), nullable=True),
    Column("dispute_decided_by", ulid(), nullable=True),
    Column("dispute_decided_at", utc_time(), nullable=True),
    Column("refunded_at", utc_time(), nullable=True),
    # A coupon pays for one order at most, whatever the code does; a refunded order gives
    # it back. So the unique key is (coupon_id, coupon_in_force): 1 until the order is
    # refunded (`refunded_at` is set exactly then), after that NULL, which never collides.
    # (MariaDB refuses an indexed generated column computed from a CHAR column.)
    Column(
        "coupon_in_force",
        mysql.TINYINT(),
        Computed("CASE WHEN refunded_at IS NULL THEN 1 END", persisted=False),
    ),
    CheckConstraint(
        "price > 0 AND discount >= 0 AND discount <= price AND paid = price - discount",
        name="amounts_consistent",
    ),
    UniqueConstraint("sell_bid_id"),
    UniqueConstraint("buy_bid_id"),
    UniqueConstraint("coupon_id", "coupon_in_force"),
    # The indexes that find orders by status are on generated columns that are NULL, or
    # keep their value, in the statuses the index does not serve (partial indexes, in
    # effect), so a change of status rewrites only the entries of the indexes it concerns:
    # settling an order moves it in two of them, not in all five that held `status` (the
    # daily settlement's cost, issue 18). Each column says which statuses it serves.
    #
    # Orders someone must act on, by the instant they started waiting: INSPECTING orders
    # (an admin inspects them, oldest first), PAID ones (the buyer confirms, or they
    # complete 72 hours after delivery), DISPUTED ones (an admin decides, oldest first).
    Column("awaiting", String(16), Computed(_AWAITING, persisted=False)),
    Column("awaiting_since", utc_time(), Computed(_AWAITING_SINCE, persisted=False)),
    # COMPLETED orders, by completion: what the daily settlement pays out, per seller.
    Column("settleable_at", utc_time(), Computed(_SETTLEABLE_AT, persisted=False)),
    # The history state (in_progress, done) each party sees the order in.
    Column("purchase_state", String(16), Computed(_PURCHASE_STATE, persisted=False)),
    Column("sale_state", String(16), Computed(_SALE_STATE, persisted=False)),
    Index(None, "awaiting", "awaiting_since"),
    Index(None, "seller_id", "settleable_at"),
    Index(None, "buyer_id", "purchase_state", "created_at"),
    Index(None, "seller_id", "sale_state", "created_at"),
    Index(None, "product_id", "created_at"),
    Index(None, "image_id"),
)

# Every voucher listed and not released, by the keyed hashes of its barcode: one row per key
# the listing knew (`kid`), so a voucher listed under an old key is still found after a
# rotation. The primary key makes a second listing of one barcode fail in the database.
# A cancelled or expired ask's rows are deleted; a sold voucher's stay, refunded or not.
voucher_registry = Table(
    "voucher_registry",
    metadata,
    Column("kid", String(32, collation="ascii_bin"), nullable=False),
    Column("digest", mysql.CHAR(64, charset="ascii", collation="ascii_bin"), nullable=False),
    Column("sell_bid_id", ulid(), ForeignKey("sell_bids.id"), nullable=True),
    Column("order_id", ulid(), ForeignKey("orders.id"), nullable=True),
    # Which keys may be retired: a key whose vouchers have all expired finds nothing more.
    Column("expires_on", Date, nullable=False),
    Column("registered_at", utc_time(), nullable=False),
    PrimaryKeyConstraint("kid", "digest"),
    CheckConstraint("(sell_bid_id IS NULL) <> (order_id IS NULL)", name="one_listing"),
    Index(None, "sell_bid_id"),
    Index(None, "order_id"),
    Index(None, "kid", "expires_on"),
)

# The transactional outbox: written in the same transaction as the change it describes.
# Ids are ULIDs made by the writer (time-ordered, known before the insert, so a command's
# events go in one multi-row INSERT). Rows are claimed with FOR UPDATE SKIP LOCKED among
# those not yet published; nobody scans "greater than the last id seen", since transactions
# commit out of id order. No index by aggregate: nothing reads one aggregate's events here
# (migration 0007).
outbox = Table(
    "outbox",
    metadata,
    Column("id", ulid(), primary_key=True),
    Column("aggregate_type", String(32), nullable=False),
    Column("aggregate_id", String(64, collation="ascii_bin"), nullable=False),
    Column("aggregate_version", Integer, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("message_group", String(128, collation="ascii_bin"), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("occurred_at", utc_time(), nullable=False),
    Column("published_at", utc_time(), nullable=True),
    Column("publish_attempts", Integer, nullable=False, server_default=text("0")),
    Index(None, "published_at", "id"),
)

# Idempotency-Key records, stored in the same transaction as the effect they guard.
idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("scope", String(64, collation="ascii_bin"), nullable=False),
    Column("idempotency_key", String(255, collation="ascii_bin"), nullable=False),
    Column("request_method", String(8), nullable=False),
    Column("request_path", String(255), nullable=False),
    Column("request_hash", mysql.CHAR(64, charset="ascii"), nullable=False),
    Column("response_status", Integer, nullable=False),
    Column("response_headers", JSON, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("created_at", utc_time(), nullable=False),
    Column("expires_at", utc_time(), nullable=False),
    PrimaryKeyConstraint("scope", "idempotency_key"),
    Index(None, "expires_at"),
)

# Every grant and revoke of admin rights, by whom and when (`giftmarket admin grant|revoke`):
# rights themselves are `users.is_admin`, read from the primary on every admin command.
admin_rights_changes = Table(
    "admin_rights_changes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", ulid(), ForeignKey("users.id"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("action", String(8, collation="ascii_bin"), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("recorded_at", utc_time(), nullable=False),
    CheckConstraint("action IN ('grant', 'revoke')", name="action"),
    Index(None, "user_id"),
)

# Failed sign-ins per subject (an email or a source address, stored only as an HMAC of it) in
# a fixed window from the first failure: the counters' home while Redis cannot be reached.
login_failures = Table(
    "login_failures",
    metadata,
    Column("subject_key", mysql.CHAR(64, charset="ascii", collation="ascii_bin"), primary_key=True),
    Column("window_started_at", utc_time(), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("expires_at", utc_time(), nullable=False),
    Index(None, "expires_at"),
)
