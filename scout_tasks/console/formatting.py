"""How the console writes times, durations, ids and statuses: pure functions, ``now`` an argument.

Relative times are for scanning ("in 14 min", "3 h ago"); the absolute time
in the schedule's zone sits beside them and the UTC instant one hover away,
so an operator never has to convert a zone in their head.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from scout_tasks import cron

_UNITS = (
    (timedelta(days=365), "y"),
    (timedelta(days=1), "d"),
    (timedelta(hours=1), "h"),
    (timedelta(minutes=1), "min"),
    (timedelta(seconds=1), "s"),
)


def _span(delta: timedelta) -> str:
    """The largest unit that fits, and the next one down when it adds something."""
    seconds = int(delta.total_seconds())
    for index, (unit, name) in enumerate(_UNITS):
        size = int(unit.total_seconds())
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            text = f"{whole} {name}"
            # "1 h 20 min" reads better than "1 h"; past a day, whole units suffice.
            if whole < 10 and index + 1 < len(_UNITS) and name in {"h", "min"}:
                smaller, smaller_name = _UNITS[index + 1]
                part = rest // int(smaller.total_seconds())
                if part and smaller_name != "s":
                    text += f" {part} {smaller_name}"
            return text
    return "0 s"


def relative(moment: datetime | None, now: datetime) -> str:
    """``in 14 min``, ``3 h ago``, ``just now``; an empty string for no time."""
    if moment is None:
        return ""
    delta = moment - now
    if abs(delta) < timedelta(seconds=5):
        return "just now"
    if delta > timedelta(0):
        return f"in {_span(delta)}"
    return f"{_span(-delta)} ago"


def utc_iso(moment: datetime | None) -> str:
    """The instant in UTC, ISO 8601 with a ``Z``: the hover text and ``datetime`` attribute."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_title(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if moment is not None else ""


def in_zone(moment: datetime | None, zone: str, now: datetime | None = None) -> str:
    """The wall time in ``zone`` with its abbreviation: ``Tue 1 Dec 09:00 CET``.

    The year shows only when it is not ``now``'s; an unknown zone falls back to UTC.
    """
    if moment is None:
        return ""
    local = _local(moment, zone)
    year = "" if now is not None and local.year == now.astimezone(local.tzinfo).year else " %Y"
    text = local.strftime(f"%a {local.day} %b{year} %H:%M")
    return f"{text} {_zone_label(local)}"


def clock(moment: datetime | None, zone: str = "UTC", *, labelled: bool = False) -> str:
    """The wall-clock time with seconds in ``zone`` (``02:59:06``), for timelines.

    ``labelled`` adds the zone (``02:59:06 EST``): a timeline beside pages in
    other zones (the run's own page is in UTC) must say which clock it reads.
    """
    if moment is None:
        return ""
    local = _local(moment, zone)
    text = local.strftime("%H:%M:%S")
    return f"{text} {_zone_label(local)}" if labelled else text


def _local(moment: datetime, zone: str) -> datetime:
    """``moment`` on ``zone``'s wall clock; an unknown zone falls back to UTC."""
    try:
        return moment.astimezone(cron.get_zone(zone))
    except (ValueError, LookupError):
        return moment.astimezone(UTC)


def _zone_label(local: datetime) -> str:
    name = local.tzname() or ""
    # Zones without an abbreviation report "+0530"-style names; show them as offsets.
    if name and (name[0] in "+-" or name.isdigit()):
        return f"UTC{name[:3]}:{name[3:]}" if len(name) == 5 else f"UTC{name}"
    return name


def duration(start: datetime | None, end: datetime | None) -> str:
    """How long a run took (``1 min 20 s``), or ``""`` when it has not both ends."""
    if start is None or end is None or end < start:
        return ""
    seconds = int((end - start).total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def short_id(value: uuid.UUID | str | None) -> str:
    """The first eight hex digits: enough to tell runs apart on one page."""
    return "" if value is None else str(value)[:8]


def schedule_state(schedule: dict[str, Any]) -> str:
    """``enabled``, ``paused`` (disabled with a reason) or ``disabled``."""
    if schedule.get("enabled"):
        return "enabled"
    return "paused" if schedule.get("paused_reason") else "disabled"


def count(value: int, capped_at: int | None = None) -> str:
    """``1,234``; ``10,000+`` when the count stopped at its cap."""
    if capped_at is not None and value >= capped_at:
        return f"{capped_at:,}+"
    return f"{value:,}"


def breakable(text: str) -> Markup:
    """``text`` escaped, allowed to wrap after each ``/`` (``America/<wbr>New_York``)."""
    return Markup("/<wbr>").join(escape(part) for part in str(text).split("/"))


def plain(value: Any) -> str:
    """A history value as the JSON it was stored as: ``true``, ``null``, ``"text"`` bare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def progress(metrics: Any, *, short: bool = False) -> str:
    """The agent's latest ``scout.progress`` as a line: ``62 % · validate · validated 310 of 500``.

    ``metrics`` is whatever the run row holds (plain SQL may write anything);
    ``""`` when it holds no usable progress. ``short`` leaves out the message.
    """
    latest = metrics.get("progress") if isinstance(metrics, dict) else None
    if not isinstance(latest, dict):
        return ""
    percent = _number(latest.get("progress"))
    parts = [f"{percent} %" if percent is not None else ""]
    for key in ("stage",) if short else ("stage", "message"):
        value = latest.get(key)
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
    return " · ".join(p for p in parts if p)


def progress_at(metrics: Any) -> datetime | None:
    """When the latest progress was recorded (``metrics.progress.at``), if that is an instant."""
    latest = metrics.get("progress") if isinstance(metrics, dict) else None
    return _iso_instant(latest.get("at") if isinstance(latest, dict) else None)


def _iso_instant(value: Any) -> datetime | None:
    """ISO 8601 text as an aware instant (UTC when it names no offset), else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# The counters a scout.completed reports, in the order an agent works through them.
COUNTERS = (
    ("total_fetched", "fetched"),
    ("validated", "validated"),
    ("validation_failed", "failed validation"),
    ("duplicates_removed", "duplicates removed"),
    ("submitted", "submitted"),
)


def counters(metrics: Any) -> str:
    """A completed run's counters: ``120 fetched · 90 validated · ... · 86 submitted``."""
    if not isinstance(metrics, dict):
        return ""
    shown = []
    for key, label in COUNTERS:
        value = _number(metrics.get(key))
        if value is not None:
            shown.append(f"{value} {label}")
    return " · ".join(shown)


def instant(field: str, value: Any) -> datetime | None:
    """A history value of a ``*_at`` field as the instant it names, else None.

    The history stores timestamps as JSON text (``2026-12-01T07:46:21.792901+00:00``);
    the page shows them as every other time on it, in the schedule's zone.
    """
    if not field.endswith("_at") or not isinstance(value, str) or "T" not in value:
        return None
    return _iso_instant(value)


FILTERS = {
    "plain": plain,
    "breakable": breakable,
    "clock": clock,
    "relative": relative,
    "utc_iso": utc_iso,
    "utc_title": utc_title,
    "in_zone": in_zone,
    "short_id": short_id,
    "count": count,
}
GLOBALS = {
    "duration": duration,
    "schedule_state": schedule_state,
    "progress": progress,
    "progress_at": progress_at,
    "counters": counters,
    "instant": instant,
}
