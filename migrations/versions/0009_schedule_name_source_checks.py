"""Schedules: the database holds ``name`` and ``source`` to the write rules' lengths.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

The contract's validation (``name`` 1..255 characters, ``source`` 1..50) is
one set of rules for anything that writes a schedule, plain SQL included.
The columns are varchar(255), so an INSERT by hand could store an empty name
or a 60-character source, which then fired (agents received the bad
``source``) and made `schedules export` write a file `apply` refused. The
other bounds (``max_strategies``, ``jitter_seconds``, ``description``) were
already checks; these two join them.

Rows that already break them are not rewritten: an empty name or a long
source has no faithful repair, and a row left breaking a check could not be
advanced by the fire path. The upgrade stops instead, naming the rows, and
writes nothing; fix them with UPDATE and run it again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scout_tasks.errors import ScoutTasksError

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "name_length": "char_length(name) >= 1",
    "source_length": "char_length(source) BETWEEN 1 AND 50",
}

_BREAKING = """
SELECT id, name, char_length(source) AS source_length
FROM scout_schedules
WHERE char_length(name) < 1 OR char_length(source) NOT BETWEEN 1 AND 50
ORDER BY id
LIMIT 6
"""


def upgrade() -> None:
    breaking = op.get_bind().execute(sa.text(_BREAKING)).all()
    if breaking:
        shown = "; ".join(
            f"{row.id} (name {row.name!r}, source {row.source_length} characters)"
            for row in breaking[:5]
        )
        more = " and more" if len(breaking) > 5 else ""
        raise ScoutTasksError(
            "scout_schedules rows break the write rules (name 1..255 characters, "
            f"source 1..50): {shown}{more}; fix them with UPDATE, then upgrade again"
        )
    for name, condition in CHECKS.items():
        op.create_check_constraint(op.f(f"ck_scout_schedules_{name}"), "scout_schedules", condition)


def downgrade() -> None:
    for name in CHECKS:
        op.drop_constraint(op.f(f"ck_scout_schedules_{name}"), "scout_schedules", type_="check")
