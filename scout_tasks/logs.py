"""Log lines as events: the stable action name and the ids involved, on every line.

Call sites pass ``extra={"action": ..., "run_id": ...}``; this filter appends
those fields as ``key=value`` so they reach whatever handler Celery, uvicorn
or the CLI installed, without a custom format string.
"""

from __future__ import annotations

import logging

CONTEXT_KEYS = (
    "action",
    "schedule_id",
    "run_id",
    "event_id",
    "slot",
    "task",
    "count",
    "runs",
    "reason",
)


class ContextFilter(logging.Filter):
    """Append the record's context fields to its message (once per record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_scout_context", False):
            return True
        record._scout_context = True
        parts = [f"{key}={getattr(record, key)}" for key in CONTEXT_KEYS if hasattr(record, key)]
        if parts:
            suffix = " [" + " ".join(parts) + "]"
            if record.args:
                # The message is %-formatted later; values must not take part.
                suffix = suffix.replace("%", "%%")
            record.msg = f"{record.msg}{suffix}"
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the context filter to every handler of ``logger`` (default: root)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
