"""SCOUT_LOG_FORMAT: the JSON formatter and where it is installed."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from scout_tasks import logs
from scout_tasks.errors import ConfigurationError
from scout_tasks.settings import load_settings


@pytest.fixture
def stream_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_ids_become_top_level_fields(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = stream_logger
    logs.install(logger, fmt="json")
    run_id, schedule_id = uuid.uuid4(), uuid.uuid4()
    slot = datetime(2025, 12, 15, 12, 0, tzinfo=UTC)
    logger.info(
        "fired %d runs",
        3,
        extra={"action": "fire", "run_id": run_id, "schedule_id": str(schedule_id), "slot": slot},
    )
    (line,) = _lines(stream)
    assert line["level"] == "INFO"
    assert line["message"] == "fired 3 runs"
    assert line["logger"] == logger.name
    assert line["action"] == "fire"
    assert line["run_id"] == str(run_id)
    assert line["schedule_id"] == str(schedule_id)
    assert line["slot"] == "2025-12-15T12:00:00+00:00"
    assert datetime.fromisoformat(str(line["time"])).tzinfo is not None
    # The human suffix is not appended in JSON mode.
    assert "[" not in str(line["message"])


def test_exception_is_serialised(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = stream_logger
    logs.install(logger, fmt="json")
    try:
        raise ValueError('boom "quoted"\nsecond line')
    except ValueError:
        logger.exception("publish failed", extra={"event_id": "e-1"})
    (line,) = _lines(stream)
    assert line["level"] == "ERROR"
    assert line["event_id"] == "e-1"
    assert "Traceback" in str(line["exception"])
    assert 'ValueError: boom "quoted"' in str(line["exception"])


def test_values_json_cannot_encode_do_not_lose_the_line(
    stream_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = stream_logger
    logs.install(logger, fmt="json")

    class Opaque:
        def __str__(self) -> str:
            return "<opaque>"

    logger.warning(
        "odd extras %s", {1, 2}, extra={"runs": {3}, "reason": Opaque(), "count": b"\xff"}
    )
    (line,) = _lines(stream)
    assert line["level"] == "WARNING"
    assert line["reason"] == "<opaque>"
    assert "3" in str(line["runs"])
    assert "count" in line


def test_message_with_percent_and_no_args(
    stream_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = stream_logger
    logs.install(logger, fmt="json")
    logger.info("100% done", extra={"action": "x%sy"})
    (line,) = _lines(stream)
    assert line["message"] == "100% done"
    assert line["action"] == "x%sy"


def test_human_format_keeps_the_suffix(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = stream_logger
    logs.install(logger, fmt="human")
    logger.info("fired", extra={"run_id": "r-1", "action": "fire"})
    assert stream.getvalue().strip() == "fired [action=fire run_id=r-1]"


def test_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCOUT_LOG_FORMAT", raising=False)
    assert load_settings().log_format == "human"
    monkeypatch.setenv("SCOUT_LOG_FORMAT", "json")
    assert logs.log_format() == "json"
    monkeypatch.setenv("SCOUT_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError, match="SCOUT_LOG_FORMAT"):
        load_settings()
    # Logging set-up itself never fails on it; the one-line error comes from
    # whatever reads the settings next.
    assert logs.log_format() == "human"


def test_uvicorn_config_json_covers_uvicorn_and_root() -> None:
    config = logs.uvicorn_log_config("json")
    root = logging.getLogger()
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level)
        for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    }
    logging.config.dictConfig(config)
    try:
        stream = io.StringIO()
        for name in ("uvicorn.error", "uvicorn.access", "scout_tasks.api"):
            logger = logging.getLogger(name)
            target = logger if logger.handlers else logging.getLogger("uvicorn")
            if name == "scout_tasks.api":
                target = logging.getLogger()
            for handler in target.handlers:
                assert isinstance(handler.formatter, logs.JsonFormatter), name
                handler.setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/readyz", "1.1", 200
        )
        logging.getLogger("scout_tasks.api").warning("x", extra={"run_id": "r"})
        lines = _lines(stream)
        assert lines[0]["message"] == '127.0.0.1:1 - "GET /readyz HTTP/1.1" 200'
        assert lines[1]["run_id"] == "r"
    finally:
        for name, (handlers, level) in saved.items():
            logger = logging.getLogger(name) if name else root
            logger.handlers[:] = handlers
            logger.setLevel(level)


def test_uvicorn_config_human_is_uvicorns_own() -> None:
    from uvicorn.config import LOGGING_CONFIG

    assert logs.uvicorn_log_config("human") == LOGGING_CONFIG
