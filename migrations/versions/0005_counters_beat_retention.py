"""Operations: counters kept beside the work, the beat's heartbeat, an index for retention.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30

- ``scout_counters``: the monotonic counters /metrics serves (scout_tasks/counters.py).
  Started from what the database already knows, so an upgraded deployment's
  counters do not begin at zero: skipped slots from ``scout_schedules.skipped_slots``,
  runs by trigger type, ended runs by status (a sum over what exists today; from
  here on nothing lowers them).
- ``scout_beat``: one row, the leading beat's last tick (scout_tasks/heartbeat.py).
- ``ix_scout_runs_ended``: ended runs by ``completed_at``, what ``runs prune`` and
  ``SCOUT_RUN_RETENTION_DAYS`` read; active runs never enter it.
- ``ix_scout_schedules_last_run_id``: deleting a run sets ``last_run_id`` to NULL
  where it points at it (ON DELETE SET NULL); without the index PostgreSQL scans
  every schedule once per deleted run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Shard 0 takes the initial values (the shard a writer uses is its backend pid's).
SEED_COUNTERS = """
INSERT INTO scout_counters (name, label, shard, value)
SELECT 'scout_skipped_slots_total', '', 0, COALESCE(sum(skipped_slots), 0) FROM scout_schedules
UNION ALL
SELECT 'scout_runs_created_total', trigger_type, 0, count(*) FROM scout_runs GROUP BY trigger_type
UNION ALL
SELECT 'scout_runs_finished_total', status, 0, count(*) FROM scout_runs
 WHERE status IN ('completed', 'failed', 'cancelled') GROUP BY status
"""


def upgrade() -> None:
    op.create_table(
        "scout_counters",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=100), server_default=sa.text("''"), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", "shard", name=op.f("pk_scout_counters")),
    )
    op.execute(SEED_COUNTERS)
    op.create_table(
        "scout_beat",
        sa.Column("id", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("leader", sa.Text(), nullable=False),
        sa.Column("tick_seconds", sa.Float(), nullable=False),
        sa.Column(
            "leader_since",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_tick_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_scout_beat_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scout_beat")),
    )
    op.create_index(
        "ix_scout_runs_ended",
        "scout_runs",
        ["completed_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')"),
    )
    op.create_index(
        "ix_scout_schedules_last_run_id", "scout_schedules", ["last_run_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_scout_schedules_last_run_id", table_name="scout_schedules")
    op.drop_index(
        "ix_scout_runs_ended",
        table_name="scout_runs",
        postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')"),
    )
    op.drop_table("scout_beat")
    op.drop_table("scout_counters")
