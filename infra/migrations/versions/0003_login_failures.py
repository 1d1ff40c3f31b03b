"""Failed sign-ins per email and per source address: the sign-in abuse counters' table,
used while Redis cannot be reached.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 04:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column(
            "subject_key",
            mysql.CHAR(charset="ascii", collation="ascii_bin", length=64),
            nullable=False,
        ),
        sa.Column("window_started_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("expires_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("subject_key", name=op.f("pk_login_failures")),
    )
    op.create_index(
        op.f("ix_login_failures_expires_at"), "login_failures", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_login_failures_expires_at"), table_name="login_failures")
    op.drop_table("login_failures")
