"""Event payloads on the wire (docs/contract.md, "Events") and secrets kept out of logs."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from scout_tasks import events
from scout_tasks.errors import ConfigurationError
from scout_tasks.events import CancelledEvent, TriggerEvent
from scout_tasks.settings import Settings, load_settings, mask_url

EVENT_ID = uuid.UUID("0b7e3f52-8a5e-4c1e-9d0f-3f1a6c2b9e10")
RUN_ID = uuid.UUID("5d2c8a71-1f3b-4e6a-8c9d-7e4f2a1b0c33")
SCHEDULE_ID = uuid.UUID("9a4e6b12-3c5d-4f7e-8a1b-2c3d4e5f6a77")

CONTRACT_KEYS = [
    "event_id",
    "event_type",
    "timestamp",
    "run_id",
    "source",
    "max_strategies",
    "trigger_type",
    "triggered_by",
    "schedule_id",
    "scheduled_for",
]


def scheduled_event(**changes: object) -> TriggerEvent:
    fields: dict[str, object] = {
        "event_id": EVENT_ID,
        "timestamp": datetime.fromisoformat("2025-12-15T12:00:00.250000+00:00"),
        "run_id": RUN_ID,
        "source": "stratninja",
        "max_strategies": 10,
        "trigger_type": "scheduled",
        "triggered_by": "Daily Scout Run",
        "schedule_id": SCHEDULE_ID,
        "scheduled_for": datetime.fromisoformat("2025-12-15T12:00:00+00:00"),
    }
    return TriggerEvent(**{**fields, **changes})


def test_trigger_payload_is_the_contract() -> None:
    assert scheduled_event().to_payload() == {
        "event_id": "0b7e3f52-8a5e-4c1e-9d0f-3f1a6c2b9e10",
        "event_type": "scout.trigger",
        "timestamp": "2025-12-15T12:00:00.250000Z",
        "run_id": "5d2c8a71-1f3b-4e6a-8c9d-7e4f2a1b0c33",
        "source": "stratninja",
        "max_strategies": 10,
        "trigger_type": "scheduled",
        "triggered_by": "Daily Scout Run",
        "schedule_id": "9a4e6b12-3c5d-4f7e-8a1b-2c3d4e5f6a77",
        "scheduled_for": "2025-12-15T12:00:00Z",
    }


def test_trigger_payload_keys_in_contract_order() -> None:
    assert list(scheduled_event().to_payload()) == CONTRACT_KEYS


def test_manual_trigger_has_null_schedule_fields() -> None:
    payload = TriggerEvent(
        event_id=EVENT_ID,
        timestamp=datetime.fromisoformat("2025-12-15T12:00:00+00:00"),
        run_id=RUN_ID,
        source="stratninja",
        max_strategies=3,
        trigger_type="manual",
        triggered_by="Manual trigger",
    ).to_payload()
    assert list(payload) == CONTRACT_KEYS
    assert payload["schedule_id"] is None
    assert payload["scheduled_for"] is None
    assert payload["trigger_type"] == "manual"
    assert json.loads(events.encode(payload))["schedule_id"] is None


def test_timestamps_are_utc_with_z_whatever_the_input_offset() -> None:
    payload = scheduled_event(
        timestamp=datetime.fromisoformat("2025-12-15T17:30:00+05:30"),
        scheduled_for=datetime.fromisoformat("2024-11-03T01:30:00-04:00"),
    ).to_payload()
    assert payload["timestamp"] == "2025-12-15T12:00:00Z"
    assert payload["scheduled_for"] == "2024-11-03T05:30:00Z"
    for key in ("timestamp", "scheduled_for"):
        assert payload[key].endswith("Z")
        assert "+" not in payload[key]


def test_uuids_are_strings() -> None:
    payload = scheduled_event().to_payload()
    for key in ("event_id", "run_id", "schedule_id"):
        assert isinstance(payload[key], str)
        assert uuid.UUID(payload[key])


def test_encode_is_compact_utf8_json() -> None:
    payload = scheduled_event(triggered_by="Täglicher Lauf 🚀").to_payload()
    wire = events.encode(payload)
    assert isinstance(wire, bytes)
    assert json.loads(wire.decode("utf-8")) == payload
    assert b", " not in wire
    assert b": " not in wire
    assert b"\n" not in wire
    # Non-ASCII goes out as UTF-8, not as \u escapes.
    assert "Täglicher Lauf 🚀".encode() in wire
    assert b"\\u" not in wire
    assert wire.startswith(b'{"event_id":"0b7e3f52-8a5e-4c1e-9d0f-3f1a6c2b9e10","event_type"')


def test_trigger_event_is_frozen() -> None:
    event = scheduled_event()
    with pytest.raises(ValidationError):
        event.max_strategies = 11  # type: ignore[misc]


def test_trigger_type_is_checked() -> None:
    with pytest.raises(ValidationError):
        scheduled_event(trigger_type="cron")


def test_cancelled_payload() -> None:
    payload = CancelledEvent(
        event_id=EVENT_ID,
        timestamp=datetime.fromisoformat("2025-12-15T12:00:00+00:00"),
        run_id=RUN_ID,
    ).to_payload()
    assert payload == {
        "event_id": "0b7e3f52-8a5e-4c1e-9d0f-3f1a6c2b9e10",
        "event_type": "scout.cancelled",
        "timestamp": "2025-12-15T12:00:00Z",
        "run_id": "5d2c8a71-1f3b-4e6a-8c9d-7e4f2a1b0c33",
    }


def test_iso() -> None:
    assert events.iso(None) is None
    assert events.iso(datetime.fromisoformat("2025-01-01T00:00:00-08:00")) == (
        "2025-01-01T08:00:00Z"
    )


def test_event_type_names() -> None:
    assert events.TRIGGER == "scout.trigger"
    assert events.CANCELLED == "scout.cancelled"
    assert events.LIFECYCLE_EVENTS == (
        "scout.started",
        "scout.progress",
        "scout.completed",
        "scout.failed",
    )


# --- settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        (
            "amqp://scout:s3cr%40t@rabbit.internal:5672/scout",
            "amqp://scout:***@rabbit.internal:5672/scout",
        ),
        (
            "postgresql+psycopg2://scout:hunter2@db.internal:5432/scout",
            "postgresql+psycopg2://scout:***@db.internal:5432/scout",
        ),
        (
            "postgresql://scout:p@ss:word@db:5432/scout?sslmode=require",
            "postgresql://scout:***@db:5432/scout?sslmode=require",
        ),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres@127.0.0.1:5432/scout",
        "amqp://rabbit.internal:5672//",
        "amqp://guest@localhost//",
        "memory://",
    ],
)
def test_mask_url_leaves_password_less_urls_alone(url: str) -> None:
    assert mask_url(url) == url


@pytest.mark.parametrize(
    "secret", ["guest", "hunter2", "s3cr%40t", "p@ss:word"], ids=["a", "b", "c", "d"]
)
def test_masked_url_never_contains_the_password(secret: str) -> None:
    url = f"amqp://user:{secret}@host:5672//"
    assert secret not in mask_url(url).removeprefix("amqp://user")


def test_settings_contract_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("SCOUT_")]:
        monkeypatch.delenv(name)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.exchange == "scout"
    assert settings.tick_seconds == 30
    assert settings.api_token is None
    # Unset URLs mean "the `scout-tasks dev` running in this folder", resolved later.
    assert settings.database_url is None
    assert settings.broker_url is None


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("postgres://u@h:5432/db", "postgresql+psycopg2://u@h:5432/db"),
        ("postgresql://u@h:5432/db", "postgresql+psycopg2://u@h:5432/db"),
        ("postgresql+psycopg2://u@h:5432/db", "postgresql+psycopg2://u@h:5432/db"),
    ],
)
def test_settings_normalise_the_database_url(given: str, normalised: str) -> None:
    settings = Settings(database_url=given, _env_file=None)  # type: ignore[call-arg]
    assert settings.database_url_value() == normalised


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database_url", "mysql://u@h/db"),
        ("database_url", "sqlite:///scout.db"),
        ("tick_seconds", 0),
        ("tick_seconds", -5),
        ("tick_seconds", 0.001),
        ("tick_seconds", 0.999),
        ("exchange", ""),
    ],
)
def test_settings_refuse(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{field: value}, _env_file=None)  # type: ignore[arg-type]
    assert info.value.errors()[0]["loc"] == (field,)


def test_a_sub_second_tick_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCOUT_TICK_SECONDS", "0.001")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert str(info.value) == "SCOUT_TICK_SECONDS: Input should be greater than or equal to 1"
    monkeypatch.setenv("SCOUT_TICK_SECONDS", "1")
    assert load_settings().tick_seconds == 1


def test_empty_api_token_is_unset() -> None:
    assert Settings(api_token="", _env_file=None).api_token is None  # type: ignore[call-arg]


# --- the hot path's trigger bytes ---------------------------------------------------

_INSTANTS = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(
    now=_INSTANTS,
    slot=st.none() | _INSTANTS,
    source=st.text(max_size=40),
    name=st.none() | st.text(max_size=40),
    max_strategies=st.integers(min_value=1, max_value=10_000),
    trigger_type=st.sampled_from(["scheduled", "manual", "event"]),
    offset_hours=st.integers(min_value=-12, max_value=14),
)
def test_trigger_body_is_the_models_bytes(
    now: datetime,
    slot: datetime | None,
    source: str,
    name: str | None,
    max_strategies: int,
    trigger_type: str,
    offset_hours: int,
) -> None:
    """The burst's hand-built bytes and the model's are the same, for any values.

    Instants may arrive in any zone (the database hands back UTC, a caller may
    not): both paths write them in UTC with a ``Z``.
    """
    event_id, run_id, schedule_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    zone = timezone_of(offset_hours)
    local_now = now.astimezone(zone)
    model = TriggerEvent(
        event_id=event_id,
        timestamp=local_now,
        run_id=run_id,
        source=source,
        max_strategies=max_strategies,
        trigger_type=trigger_type,  # type: ignore[arg-type]
        triggered_by=name,
        schedule_id=schedule_id if slot else None,
        scheduled_for=slot,
    )
    fast = events.trigger_body(
        event_id=str(event_id),
        timestamp=events.iso(local_now) or "",
        run_id=str(run_id),
        source=source,
        max_strategies=max_strategies,
        trigger_type=trigger_type,
        triggered_by=name,
        schedule_id=str(schedule_id) if slot else None,
        scheduled_for=events.iso(slot),
    )
    assert fast == events.encode(model.to_payload())
    # And it is what an agent reads back as that event.
    assert TriggerEvent.model_validate_json(fast) == model


def timezone_of(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))
