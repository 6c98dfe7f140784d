"""Inbound lifecycle events: the limits that keep one message from weighing on anything."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from scout_tasks.inbound import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_STAGE_METRICS_BYTES,
    FailedEvent,
    MalformedEvent,
    ProgressEvent,
    StartedEvent,
    parse_event,
)
from scout_tasks.lifecycle_queues import (
    DEAD_MAX_LENGTH,
    DELIVERY_LIMIT,
    LifecycleQueues,
    dead_queue_arguments,
    main_queue_arguments,
)

RUN_ID = "5d2c8a71-1f3b-4e6a-8c9d-7e4f2a1b0c33"


def body(event_type: str, **fields: Any) -> bytes:
    return json.dumps(
        {"event_id": str(uuid.uuid4()), "event_type": event_type, "run_id": RUN_ID, **fields}
    ).encode()


def test_a_body_over_256_kib_is_refused_before_it_is_parsed() -> None:
    # Not even JSON: refused for its size, so it was never parsed.
    with pytest.raises(MalformedEvent, match=f"over the {MAX_BODY_BYTES}-byte limit"):
        parse_event(b"x" * (MAX_BODY_BYTES + 1), "scout.progress", None)
    at_limit = body("scout.started")
    at_limit += b" " * (MAX_BODY_BYTES - len(at_limit))
    assert isinstance(parse_event(at_limit, "scout.started", None), StartedEvent)


def test_free_text_is_cut_to_its_documented_length() -> None:
    event = parse_event(
        body("scout.failed", error_message="e" * 10_000, stage="s" * 500), "scout.failed", None
    )
    assert isinstance(event, FailedEvent)
    assert len(event.error_message) == MAX_MESSAGE_CHARS == 4000
    assert event.error_message.endswith("…")
    assert event.stage is not None and len(event.stage) == MAX_NAME_CHARS == 200
    started = parse_event(body("scout.started", source="x" * 201), "scout.started", None)
    assert isinstance(started, StartedEvent) and started.source == "x" * 199 + "…"
    exact = parse_event(body("scout.started", source="x" * 200), "scout.started", None)
    assert isinstance(exact, StartedEvent) and exact.source == "x" * 200


def test_bulky_stage_metrics_are_dropped_with_a_note_and_the_event_kept() -> None:
    small = {"checked": 12}
    event = parse_event(
        body("scout.progress", stage="fetch", progress=40, stage_metrics=small),
        "scout.progress",
        None,
    )
    assert isinstance(event, ProgressEvent)
    assert event.as_metrics() == {
        "stage": "fetch",
        "progress": 40,
        "message": None,
        "stage_metrics": small,
    }
    bulky = {"blob": "x" * MAX_STAGE_METRICS_BYTES}
    event = parse_event(
        body("scout.progress", stage="fetch", progress=40, stage_metrics=bulky),
        "scout.progress",
        None,
    )
    assert isinstance(event, ProgressEvent)
    metrics = event.as_metrics()
    assert metrics["stage_metrics"] is None
    assert metrics["note"].startswith(f"stage_metrics dropped: {MAX_STAGE_METRICS_BYTES + 11}")


def test_deeply_nested_stage_metrics_are_refused_naming_the_field() -> None:
    nested: Any = 1
    for _ in range(MAX_DEPTH + 1):
        nested = {"a": nested}
    with pytest.raises(MalformedEvent, match=r"stage_metrics.*nested deeper"):
        parse_event(
            body("scout.progress", stage="s", progress=1, stage_metrics=nested),
            "scout.progress",
            None,
        )


def test_json_nested_beyond_the_parser_is_malformed_not_a_crash() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(MalformedEvent):
        parse_event(deep, "scout.started", None)
    deep_in_ignored_key = (
        b'{"event_id": "'
        + str(uuid.uuid4()).encode()
        + b'", "run_id": "'
        + RUN_ID.encode()
        + b'", "x": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}"
    )
    with pytest.raises(MalformedEvent):
        parse_event(deep_in_ignored_key, "scout.started", None)


def test_a_huge_routing_key_or_event_type_is_cut_in_the_reason() -> None:
    with pytest.raises(MalformedEvent) as exc:
        parse_event(b"{}", "k" * 10_000, None)
    assert len(str(exc.value)) < 300
    with pytest.raises(MalformedEvent) as exc:
        parse_event(body("t" * 100_000), "scout.started", None)
    assert len(str(exc.value)) < 400


def test_queue_names_and_arguments_on_rabbitmq() -> None:
    names = LifecycleQueues.for_task_queue("scout-tasks")
    assert (names.queue, names.dead_queue, names.dead_exchange) == (
        "scout-tasks.lifecycle.v2",
        "scout-tasks.lifecycle.v2.dead",
        "scout-tasks.lifecycle.v2.dlx",
    )
    assert names.legacy() == ("scout-tasks.lifecycle", "scout-tasks.lifecycle.dead")
    assert main_queue_arguments(names) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": "scout-tasks.lifecycle.v2.dlx",
    }
    assert dead_queue_arguments(names) == {
        "x-max-length": DEAD_MAX_LENGTH,
        "x-max-length-bytes": 64 * 1024 * 1024,
        "x-overflow": "drop-head",
    }


def test_queue_names_without_dead_lettering_are_the_classic_ones() -> None:
    names = LifecycleQueues.for_task_queue("scout-tasks", dead_lettering=False)
    assert (names.queue, names.dead_queue) == (
        "scout-tasks.lifecycle",
        "scout-tasks.lifecycle.dead",
    )
    assert names.legacy() == ()
    assert main_queue_arguments(names) == {} == dead_queue_arguments(names)
