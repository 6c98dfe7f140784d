"""A schedule's jitter: the fixed offset d in [0, J) its slots fire after.

With ``jitter_seconds`` J > 0 a schedule's run for slot s is created at
s + d, so a herd of schedules on one slot spreads over J seconds while each
keeps its cadence. d is derived from the schedule's id alone, the same way in
Python (previews, tests, planning) and in SQL (the claim and the beat's
wake-up), so every host agrees without storing it: the first 32 bits of the
MD5 of the id's text, modulo J in milliseconds. MD5 mixes, so ids that are not
random (made by hand, time-ordered) still spread.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

# The same d in SQL, in milliseconds, for a row with columns ``id`` and
# ``jitter_seconds`` (prefix them through ``sql_ms``). GREATEST(..., 1) makes
# J = 0 give 0 without a CASE.
_SQL_MS = (
    "((('x' || substr(md5({p}id::text), 1, 8))::bit(32)::bigint"
    " % greatest({p}jitter_seconds * 1000, 1)))"
)


def sql_ms(alias: str = "") -> str:
    """d in milliseconds as a SQL expression over ``alias.id`` and ``alias.jitter_seconds``."""
    return _SQL_MS.format(p=f"{alias}." if alias else "")


def sql_interval(alias: str = "") -> str:
    """d as a SQL interval."""
    return f"({sql_ms(alias)} * interval '1 millisecond')"


def offset_ms(schedule_id: uuid.UUID, jitter_seconds: int) -> int:
    """d in milliseconds: 0 when J is 0, else in [0, J * 1000)."""
    if jitter_seconds <= 0:
        return 0
    digest = hashlib.md5(str(schedule_id).encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % (jitter_seconds * 1000)


def offset(schedule_id: uuid.UUID, jitter_seconds: int) -> timedelta:
    """d as a timedelta."""
    return timedelta(milliseconds=offset_ms(schedule_id, jitter_seconds))
