"""Event payloads: frozen, typed values and the one function that makes them wire bytes.

The shapes are pinned by docs/contract.md; consumers must tolerate extra keys, so
inbound models ignore unknown fields and outbound ones never drop known ones.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

TRIGGER = "scout.trigger"
CANCELLED = "scout.cancelled"
STARTED = "scout.started"
PROGRESS = "scout.progress"
COMPLETED = "scout.completed"
FAILED = "scout.failed"
LIFECYCLE_EVENTS = (STARTED, PROGRESS, COMPLETED, FAILED)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the contract's examples write it."""
    if dt is None:
        return None
    text = dt.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


_HEAD = {"event_id": 0, "event_type": 1, "timestamp": 2}


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: uuid.UUID
    timestamp: datetime

    def to_payload(self) -> dict[str, Any]:
        """The JSON object for the wire, keys in contract order."""
        out: dict[str, Any] = {}
        for name in self._wire_order():
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = iso(value)
            elif isinstance(value, uuid.UUID):
                value = str(value)
            out[name] = value
        return out

    @classmethod
    @functools.cache
    def _wire_order(cls) -> tuple[str, ...]:
        # The common keys lead, as in the contract's example; computed once per class
        # because a burst builds thousands of payloads.
        return tuple(sorted(cls.model_fields, key=lambda n: _HEAD.get(n, len(_HEAD))))


class TriggerEvent(_Event):
    event_type: Literal["scout.trigger"] = TRIGGER
    run_id: uuid.UUID
    source: str
    max_strategies: int
    trigger_type: Literal["scheduled", "manual", "event"]
    triggered_by: str | None
    schedule_id: uuid.UUID | None = None
    scheduled_for: datetime | None = None


class CancelledEvent(_Event):
    event_type: Literal["scout.cancelled"] = CANCELLED
    run_id: uuid.UUID


def trigger_body(
    *,
    event_id: str,
    timestamp: str,
    run_id: str,
    source: str,
    max_strategies: int,
    trigger_type: str,
    triggered_by: str | None,
    schedule_id: str | None,
    scheduled_for: str | None,
) -> bytes:
    """A ``scout.trigger``'s wire bytes from values already in wire form.

    The same bytes as ``encode(TriggerEvent(...).to_payload())`` (a test holds
    them equal) for the hot path of a burst, where a model per run costs more
    than the rest of the run's Python: ids are text, instants ISO strings.
    """
    return encode(
        {
            "event_id": event_id,
            "event_type": TRIGGER,
            "timestamp": timestamp,
            "run_id": run_id,
            "source": source,
            "max_strategies": max_strategies,
            "trigger_type": trigger_type,
            "triggered_by": triggered_by,
            "schedule_id": schedule_id,
            "scheduled_for": scheduled_for,
        }
    )


def encode(payload: dict[str, Any]) -> bytes:
    """Wire bytes for a payload (compact JSON, UTF-8)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
