"""Schedules: the BEFORE UPDATE row trigger runs only when it has something to do.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

The trigger (0001, pause rules from 0003) stamps ``updated_at`` and keeps
``next_run_at``, ``last_error`` and the paused fields consistent. Entering
PL/pgSQL costs a few microseconds per row, and a burst's advance updates
every fired schedule: measured on 20,000 schedules, it was the largest part
of that statement after the join. A WHEN clause, evaluated without entering
PL/pgSQL, now skips the call exactly when the function would change nothing:

- ``updated_at`` already reads ``now()`` (the fire path sets it itself);
- none of the columns its rules read changed (expression, time zone,
  enabled, whether a pause reason is set);
- ``last_error`` is NULL, or was set by the statement, or ``next_run_at``
  kept its value (the only case left in which the function clears it).

Any other update, a hand-written one above all, runs the function as before.
The function itself is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The negation of "the function is a no-op"; see the docstring. Keep it in step
# with scout_schedules_before_update() (0003) if that function ever changes.
WHEN = """
    NEW.updated_at IS DISTINCT FROM now()
    OR NEW.cron_expression IS DISTINCT FROM OLD.cron_expression
    OR NEW.timezone IS DISTINCT FROM OLD.timezone
    OR NEW.enabled IS DISTINCT FROM OLD.enabled
    OR (NEW.paused_reason IS NULL) <> (OLD.paused_reason IS NULL)
    OR (NEW.last_error IS NOT NULL
        AND NEW.last_error IS NOT DISTINCT FROM OLD.last_error
        AND NEW.next_run_at IS DISTINCT FROM OLD.next_run_at)
"""


def _create(when: str | None) -> str:
    return f"""
DROP TRIGGER scout_schedules_before_update ON scout_schedules;
CREATE TRIGGER scout_schedules_before_update
    BEFORE UPDATE ON scout_schedules
    FOR EACH ROW {f"WHEN ({when})" if when else ""}
    EXECUTE FUNCTION scout_schedules_before_update();
"""


def upgrade() -> None:
    op.execute(_create(WHEN))


def downgrade() -> None:
    op.execute(_create(None))
