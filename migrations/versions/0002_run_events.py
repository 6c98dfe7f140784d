"""The lifecycle events ledger: one row per event_id the worker has recorded.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No foreign key to scout_runs: events for unknown runs are recorded too
    # (see scout_tasks/tables.py).
    op.create_table(
        "scout_run_events",
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_scout_run_events")),
    )
    op.create_index("ix_scout_run_events_run_id", "scout_run_events", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_scout_run_events_run_id", table_name="scout_run_events")
    op.drop_table("scout_run_events")
