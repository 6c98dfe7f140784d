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

Rows that already break them cannot stay as they are (a row breaking a check
could not be advanced by the fire path), and the upgrade must still bring any
database to head. So each is repaired as little as possible and paused: an
empty name becomes ``unnamed-<id>``, an empty source ``unknown``, a longer one
its first 50 characters; the pause's reason says what was changed, so an
operator reviews it before resuming (``paused_by`` is ``scout-tasks db
upgrade``; a schedule already paused keeps its pause, the note appended).
The rows repaired are named in a warning.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "name_length": "char_length(name) >= 1",
    "source_length": "char_length(source) BETWEEN 1 AND 50",
}

_REPAIR = """
WITH notes AS (
    SELECT id,
           concat_ws('; ',
               CASE WHEN char_length(name) < 1 THEN 'name was empty, now unnamed-' || id END,
               CASE WHEN char_length(source) < 1 THEN 'source was empty, now unknown'
                    WHEN char_length(source) > 50
                    THEN 'source was ' || char_length(source) || ' characters, cut to 50'
               END) AS note
    FROM scout_schedules
    WHERE char_length(name) < 1 OR char_length(source) NOT BETWEEN 1 AND 50
)
UPDATE scout_schedules s
SET name = CASE WHEN char_length(s.name) < 1 THEN 'unnamed-' || s.id ELSE s.name END,
    source = CASE WHEN char_length(s.source) < 1 THEN 'unknown' ELSE left(s.source, 50) END,
    enabled = false,
    paused_reason = left(
        COALESCE(s.paused_reason || ' / ', '')
        || 'db upgrade 0009: ' || n.note || '; check it, then resume', 500),
    paused_at = COALESCE(s.paused_at, now()),
    paused_by = CASE WHEN s.paused_reason IS NULL THEN 'scout-tasks db upgrade'
                     ELSE s.paused_by END
FROM notes n
WHERE s.id = n.id
RETURNING s.id, n.note
"""


def upgrade() -> None:
    repaired = op.get_bind().execute(sa.text(_REPAIR)).all()
    for row in repaired:
        # On stderr, not a logger: `scout-tasks db upgrade` configures none, and
        # an operator must see which schedules were paused.
        print(f"warning: schedule {row.id} repaired and paused: {row.note}", file=sys.stderr)
    for name, condition in CHECKS.items():
        op.create_check_constraint(op.f(f"ck_scout_schedules_{name}"), "scout_schedules", condition)


def downgrade() -> None:
    for name in CHECKS:
        op.drop_constraint(op.f(f"ck_scout_schedules_{name}"), "scout_schedules", type_="check")
