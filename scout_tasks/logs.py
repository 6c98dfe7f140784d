"""Log lines as events: the stable action name and the ids involved, on every line.

Call sites pass ``extra={"action": ..., "run_id": ...}``. In the human format
(the default) a filter appends those fields as ``key=value`` so they reach
whatever handler Celery, uvicorn or the CLI installed, without a custom format
string. With ``SCOUT_LOG_FORMAT=json`` every line is one JSON object instead,
with ``time``, ``level``, ``logger``, ``message`` and every ``extra`` field at
the top level, so a log pipeline can filter on ``run_id`` without parsing text.
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

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

# uvicorn repeats the message with ANSI colour codes; Celery's TaskFormatter
# leaves placeholders. Neither belongs in a JSON line.
_NOISE_ATTRS = ("color_message",)


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


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per record: time, level, logger, message, then the extras.

    Values json cannot encode (a set, an arbitrary object) are written as their
    ``str()`` by python-json-logger's default encoder rather than failing the line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # dictConfig passes the `format`/`datefmt` keys of its own; the shape
        # of the line is fixed here whatever the caller asks.
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, *_NOISE_ATTRS],
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # Time first, as every log viewer expects to read it.
        return {"time": log_data.pop("time"), **log_data}


def log_format() -> str:
    """``SCOUT_LOG_FORMAT`` as configured: ``human`` (the default) or ``json``."""
    from scout_tasks.errors import ConfigurationError
    from scout_tasks.settings import load_settings

    try:
        return load_settings().log_format
    except ConfigurationError:
        # The bad setting is reported, in one line, by whatever reads it next;
        # logging must not be the thing that fails first.
        return "human"


def install(logger: logging.Logger | None = None, fmt: str | None = None) -> None:
    """Make every handler of ``logger`` (default: root) write scout-tasks' format.

    Human: the context filter appended to Celery's or uvicorn's own format.
    JSON: the handlers' formatters replaced by :class:`JsonFormatter`; on the
    root logger the multiprocessing logger Celery configures beside it too.
    """
    target = logger or logging.getLogger()
    if (fmt or log_format()) == "json":
        loggers = [target]
        if target is logging.getLogger():
            loggers.append(logging.getLogger("multiprocessing"))
        for each in loggers:
            for handler in each.handlers:
                handler.setFormatter(JsonFormatter())
        return
    for handler in target.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


def install_early(fmt: str | None = None) -> None:
    """In JSON mode, a JSON handler on the root logger before Celery sets up its own.

    The worker warns (running as root, for one) before its logging exists;
    those lines go through the ``warnings`` logger to this handler instead of
    raw text. Celery replaces the handler when it sets up logging.
    """
    if (fmt or log_format()) != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    logging.captureWarnings(True)


def uvicorn_log_config(fmt: str | None = None) -> dict[str, Any]:
    """The ``log_config`` for ``uvicorn.run``: uvicorn's own, or all of it as JSON.

    In JSON mode the root logger gets the same handler, so scout-tasks' own
    records in the API process are JSON lines too.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    if (fmt or log_format()) != "json":
        return config
    json_formatter = {"()": f"{__name__}.JsonFormatter"}
    config["formatters"] = {"default": json_formatter, "access": json_formatter}
    config["root"] = {"handlers": ["default"], "level": "INFO"}
    return config
