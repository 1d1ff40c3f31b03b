"""The outbox loses its (aggregate_type, aggregate_id, aggregate_version) index: no query
of the product reads it (the relay claims by `published_at, id`, the purge by the same),
and every event paid for it twice, on the primary and again on each replica. A daily
settlement of 10^5 orders writes 10^5 events. An operator looking up one aggregate's
events scans the outbox, which the purge keeps to its retention window.

Dropping an index is online on MySQL 8.4 (in place, metadata only).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_outbox_aggregate_type_aggregate_id_aggregate_version"


def upgrade() -> None:
    op.drop_index(op.f(INDEX), table_name="outbox")


def downgrade() -> None:
    op.create_index(op.f(INDEX), "outbox", ["aggregate_type", "aggregate_id", "aggregate_version"])
