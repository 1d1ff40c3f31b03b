"""Social sign-in (PRODUCT.md, "Social sign-in"): the (provider, subject) each account signs
in with, and accounts without a password or an email.

A social-only account has no password hash, and has an email only when its provider verified
one. MySQL 8.4 makes a column nullable in place (a table rebuild, online: reads and writes go
on meanwhile); the new table is empty.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("users", "email", existing_type=sa.String(254), nullable=True)
    op.alter_column("users", "password_hash", existing_type=sa.String(255), nullable=True)
    op.create_table(
        "user_identities",
        sa.Column("provider", sa.String(32, collation="ascii_bin"), nullable=False),
        sa.Column("subject", sa.String(255, collation="ascii_bin"), nullable=False),
        sa.Column(
            "user_id", mysql.CHAR(charset="ascii", collation="ascii_bin", length=26), nullable=False
        ),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_identities_user_id_users")
        ),
        sa.PrimaryKeyConstraint("provider", "subject", name=op.f("pk_user_identities")),
    )
    op.create_index(op.f("ix_user_identities_user_id"), "user_identities", ["user_id"])


def downgrade() -> None:
    # Below 0005 every account has an email and a password hash. Social-only accounts keep
    # their balances and history with stand-ins: an address under the reserved `.invalid`
    # domain (unique, as the account's id is) and a hash that no password verifies. Which
    # provider account signs in to which account is lost with the table.
    op.execute(
        "UPDATE users SET email = CONCAT('social-', LOWER(id), '@giftmarket.invalid')"
        " WHERE email IS NULL"
    )
    op.execute("UPDATE users SET password_hash = '!' WHERE password_hash IS NULL")
    op.drop_table("user_identities")  # its index goes with it (the foreign key needs it)
    op.alter_column("users", "password_hash", existing_type=sa.String(255), nullable=False)
    op.alter_column("users", "email", existing_type=sa.String(254), nullable=False)
