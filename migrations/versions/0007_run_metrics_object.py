"""Runs: ``metrics`` is a JSON object or NULL, enforced by the database.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

A ``metrics`` written by plain SQL as an array, a string or a number broke
the lifecycle's updates (``||`` appended to the array, ``jsonb_set`` refused a
scalar). Existing rows are repaired first, losing nothing: a JSON ``null``
becomes SQL NULL, any other non-object is kept under ``{"value": ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPAIR = """
UPDATE scout_runs
SET metrics = CASE WHEN jsonb_typeof(metrics) = 'null' THEN NULL
                   ELSE jsonb_build_object('value', metrics) END
WHERE jsonb_typeof(metrics) <> 'object'
"""


def upgrade() -> None:
    op.execute(REPAIR)
    op.create_check_constraint(
        op.f("ck_scout_runs_metrics_object"),
        "scout_runs",
        "metrics IS NULL OR jsonb_typeof(metrics) = 'object'",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_scout_runs_metrics_object"), "scout_runs", type_="check")
