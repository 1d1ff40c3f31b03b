"""Admin rights are granted by an operator and recorded; credential idempotency records
written before keyed fingerprints are removed.

Before this revision, the idempotency records of signup and login held the bearer token in
their response body and an unkeyed SHA-256 of a body holding the plaintext password. They
are deleted here: a retry of such a request within its 24 hours signs in again instead of
replaying (signup answers 409 email_taken, as any second signup would). Records of other
routes hold nothing secret and are kept until they expire, so their retries still replay.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREDENTIAL_PATHS = ("/api/auth/signup", "/api/auth/login")


def upgrade() -> None:
    op.create_table(
        "admin_rights_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "user_id",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=26),
            nullable=False,
        ),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("action", sa.String(length=8, collation="ascii_bin"), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.CheckConstraint(
            "action IN ('grant', 'revoke')", name=op.f("ck_admin_rights_changes_action")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_admin_rights_changes_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_rights_changes")),
    )
    op.create_index(
        op.f("ix_admin_rights_changes_user_id"), "admin_rights_changes", ["user_id"], unique=False
    )
    records = sa.table("idempotency_records", sa.column("request_path", sa.String))
    op.execute(records.delete().where(records.c.request_path.in_(CREDENTIAL_PATHS)))


def downgrade() -> None:
    # The index goes with the table (MariaDB keeps it for the foreign key until then).
    op.drop_table("admin_rights_changes")
