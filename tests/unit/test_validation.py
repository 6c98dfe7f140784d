"""The one set of write rules (docs/contract.md, "Validation"): every bound, and the field named."""

from __future__ import annotations

from typing import Any

import pytest

from scout_tasks import validation
from scout_tasks.errors import InvalidInput
from scout_tasks.validation import ScheduleCreate, ScheduleUpdate, TriggerRequest

VALID: dict[str, Any] = {
    "name": "Daily Scout Run",
    "cron_expression": "0 12 * * *",
    "source": "stratninja",
    "max_strategies": 10,
}


def create(**changes: Any) -> ScheduleCreate:
    return validation.parse(ScheduleCreate, {**VALID, **changes})


def refused(model: type[Any], data: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        validation.parse(model, data)
    return info.value


# --- ScheduleCreate ------------------------------------------------------------------


def test_defaults() -> None:
    schedule = create()
    assert schedule.model_dump() == {
        **VALID,
        "timezone": "UTC",
        "enabled": True,
        "misfire_policy": "coalesce",
        "misfire_grace_seconds": 60,
        "overlap_policy": "allow",
        "description": "",
        "jitter_seconds": 0,
    }


def test_every_field_given() -> None:
    data = {
        **VALID,
        "timezone": "Pacific/Chatham",
        "enabled": False,
        "misfire_policy": "catch_up",
        "misfire_grace_seconds": 0,
        "overlap_policy": "skip",
        "description": "Nightly run for the EU desk",
        "jitter_seconds": 3600,
    }
    assert validation.parse(ScheduleCreate, data).model_dump() == data


def test_cron_expression_is_normalised() -> None:
    assert create(cron_expression=" 0  9 * jan mon ").cron_expression == "0 9 * JAN MON"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "x"),
        ("name", "x" * 255),
        # Characters, not bytes: 255 four-byte characters fit.
        ("name", "\U0001f680" * 255),
        ("name", "Ежедневный прогон スカウト 🚀"),
        ("name", "Robert'); DROP TABLE scout_schedules;--"),
        ("name", "50% off _all_ [runs] \\ 'quoted' \"double\""),
        ("source", "s"),
        ("source", "s" * 50),
        ("source", "stratninja' OR '1'='1"),
        ("max_strategies", 1),
        ("max_strategies", 1000),
        ("timezone", "America/New_York"),
        ("timezone", "Australia/Lord_Howe"),
        ("misfire_grace_seconds", 0),
    ],
)
def test_accepted_verbatim(field: str, value: Any) -> None:
    assert getattr(create(**{field: value}), field) == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", " "),
        ("name", " \t\n "),
        ("name", "x" * 256),
        ("name", "\U0001f680" * 256),
        ("name", "x" * 10_000),
        ("name", "nul\x00inside"),
        ("name", "\x00"),
        ("name", 42),
        ("name", None),
        ("source", ""),
        ("source", "   "),
        ("source", "s" * 51),
        ("source", "strat\x00ninja"),
        ("source", ["stratninja"]),
        ("max_strategies", 0),
        ("max_strategies", 1001),
        ("max_strategies", -1),
        ("max_strategies", "5"),
        ("max_strategies", True),
        ("max_strategies", False),
        ("max_strategies", 1.5),
        ("max_strategies", None),
        ("max_strategies", 10**30),
        ("cron_expression", "0 0 30 2 *"),
        ("cron_expression", "60 * * * *"),
        ("cron_expression", "@reboot"),
        ("cron_expression", "@DAILY"),
        ("cron_expression", "0 0 31 4-4/1 *"),
        ("cron_expression", "5/10 * * * *"),
        ("cron_expression", ""),
        ("cron_expression", "0 0 * * *\x00"),
        ("cron_expression", 5),
        ("timezone", "Mars/Olympus_Mons"),
        ("timezone", ""),
        ("timezone", "../etc/passwd"),
        ("timezone", "America/New_York\x00"),
        ("enabled", "yes"),
        ("enabled", 1),
        ("misfire_policy", "later"),
        ("misfire_policy", "COALESCE"),
        ("misfire_policy", ""),
        ("misfire_policy", None),
        ("overlap_policy", "queue"),
        ("overlap_policy", "Skip"),
        ("overlap_policy", None),
        ("misfire_grace_seconds", -1),
        ("misfire_grace_seconds", "60"),
    ],
)
def test_create_refuses_and_names_the_field(field: str, value: Any) -> None:
    error = refused(ScheduleCreate, {**VALID, field: value})
    assert error.field == field
    assert str(error).startswith(f"{field}: ")


def test_never_firing_expression_message_says_so() -> None:
    error = refused(ScheduleCreate, {**VALID, "cron_expression": "0 0 30 2 *"})
    assert "can never fire" in str(error)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        # A one-value range with a step is that value (Debian): April only.
        ("0 0 31 4-4/1 *", "can never fire: no day 31 in APR"),
        ("@reboot", "@reboot means nothing to a scheduler"),
        ("@DAILY", "nicknames are lowercase"),
    ],
)
def test_cron_refusals_name_the_problem(expr: str, problem: str) -> None:
    for model, data in ((ScheduleCreate, {**VALID, "cron_expression": expr}),
                        (ScheduleUpdate, {"cron_expression": expr})):  # fmt: skip
        error = refused(model, data)
        assert error.field == "cron_expression"
        assert problem in str(error)


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("@daily", "@daily"),
        (" @hourly\n", "@hourly"),
        ("@annually", "@annually"),
        ("0 4-4/1 * * *", "0 4-4/1 * * *"),
        ("0 0 * * mon-fri/2", "0 0 * * MON-FRI/2"),
    ],
)
def test_nicknames_are_stored_as_written(written: str, stored: str) -> None:
    assert create(cron_expression=written).cron_expression == stored
    update = validation.parse(ScheduleUpdate, {"cron_expression": written})
    assert update.changes() == {"cron_expression": stored}


def test_blank_name_message() -> None:
    assert "blank" in str(refused(ScheduleCreate, {**VALID, "name": "   "}))


def test_nul_message() -> None:
    assert "NUL" in str(refused(ScheduleCreate, {**VALID, "name": "a\x00b"}))


@pytest.mark.parametrize("missing", ["name", "cron_expression", "source", "max_strategies"])
def test_required_fields(missing: str) -> None:
    data = {k: v for k, v in VALID.items() if k != missing}
    assert refused(ScheduleCreate, data).field == missing


@pytest.mark.parametrize("unknown", ["nmae", "producer", "id", "next_run_at", "last_run_id"])
def test_unknown_fields_are_refused(unknown: str) -> None:
    error = refused(ScheduleCreate, {**VALID, unknown: "x"})
    assert error.field == unknown
    assert "unknown field" in str(error)


def test_body_that_is_not_an_object() -> None:
    assert refused(ScheduleCreate, ["not", "an", "object"]).field == "body"


# --- ScheduleUpdate ------------------------------------------------------------------


def test_update_changes_only_what_is_given() -> None:
    assert validation.parse(ScheduleUpdate, {}).changes() == {}
    update = validation.parse(
        ScheduleUpdate, {"max_strategies": 20, "cron_expression": "0 6 * * mon"}
    )
    assert update.changes() == {"max_strategies": 20, "cron_expression": "0 6 * * MON"}


@pytest.mark.parametrize("field", [*VALID, "timezone", "enabled", "misfire_policy"])
def test_update_explicit_null_is_refused(field: str) -> None:
    update = validation.parse(ScheduleUpdate, {field: None})
    with pytest.raises(InvalidInput) as info:
        update.changes()
    assert info.value.field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "  "),
        ("name", "x" * 256),
        ("name", "x\x00"),
        ("source", "s" * 51),
        ("source", " "),
        ("max_strategies", 0),
        ("max_strategies", 1001),
        ("max_strategies", -1),
        ("max_strategies", "5"),
        ("max_strategies", True),
        ("max_strategies", 1.5),
        ("cron_expression", "0 0 30 2 *"),
        ("cron_expression", "5#2 * * * *"),
        ("cron_expression", "@reboot"),
        ("cron_expression", "0 0 31 4-4/1 *"),
        ("timezone", "Nowhere/Special"),
        ("enabled", "false"),
        ("misfire_policy", "sometimes"),
        ("overlap_policy", "queue"),
        ("id", "1"),
    ],
)
def test_update_refuses_and_names_the_field(field: str, value: Any) -> None:
    assert refused(ScheduleUpdate, {field: value}).field == field


def test_update_accepts_bounds() -> None:
    update = validation.parse(
        ScheduleUpdate, {"name": "n" * 255, "source": "s" * 50, "max_strategies": 1000}
    )
    assert update.changes() == {"name": "n" * 255, "source": "s" * 50, "max_strategies": 1000}


# --- TriggerRequest ------------------------------------------------------------------


def test_trigger_request() -> None:
    request = validation.parse(TriggerRequest, {"source": "stratninja", "max_strategies": 10})
    assert request.model_dump() == {
        "source": "stratninja",
        "max_strategies": 10,
        "triggered_by": None,
    }
    named = validation.parse(
        TriggerRequest,
        {"source": "stratninja", "max_strategies": 1000, "triggered_by": "ops'; --"},
    )
    assert named.triggered_by == "ops'; --"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_strategies", 0),
        ("max_strategies", 1001),
        ("max_strategies", -1),
        ("max_strategies", "5"),
        ("max_strategies", True),
        ("max_strategies", 1.5),
        ("source", ""),
        ("source", "   "),
        ("source", "s" * 51),
        ("source", "a\x00"),
        ("triggered_by", ""),
        ("triggered_by", "t" * 256),
        # PostgreSQL text cannot hold NUL: refuse it here, naming the field,
        # rather than fail later at the INSERT.
        ("triggered_by", "cron\x00job"),
        ("schedule_id", "00000000-0000-0000-0000-000000000000"),
        ("producer", "x"),
    ],
)
def test_trigger_refuses_and_names_the_field(field: str, value: Any) -> None:
    data = {"source": "stratninja", "max_strategies": 10, field: value}
    assert refused(TriggerRequest, data).field == field


@pytest.mark.parametrize("missing", ["source", "max_strategies"])
def test_trigger_required_fields(missing: str) -> None:
    data = {k: v for k, v in {"source": "s", "max_strategies": 1}.items() if k != missing}
    assert refused(TriggerRequest, data).field == missing


# --- description and jitter_seconds (CONTRACT.md, "Operating schedules") ---------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", ""),
        ("description", "d" * 2000),
        ("description", "\U0001f680" * 2000),
        ("description", "line one\nline two 'quoted' <b>not html</b>"),
        ("jitter_seconds", 0),
        ("jitter_seconds", 1),
        ("jitter_seconds", 3600),
    ],
)
def test_new_fields_accepted_on_create_and_update(field: str, value: Any) -> None:
    assert getattr(create(**{field: value}), field) == value
    assert validation.parse(ScheduleUpdate, {field: value}).changes() == {field: value}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", "d" * 2001),
        ("description", "nul\x00inside"),
        ("description", "tab\tinside"),
        ("description", "crlf\r\ninside"),
        ("description", "escape\x1b[2Jinside"),
        ("description", 5),
        ("description", ["a"]),
        ("jitter_seconds", -1),
        ("jitter_seconds", 3601),
        ("jitter_seconds", 10**30),
        ("jitter_seconds", "60"),
        ("jitter_seconds", 1.5),
        ("jitter_seconds", True),
    ],
)
def test_new_fields_refused_naming_the_field(field: str, value: Any) -> None:
    assert refused(ScheduleCreate, {**VALID, field: value}).field == field
    assert refused(ScheduleUpdate, {field: value}).field == field


@pytest.mark.parametrize("field", ["description", "jitter_seconds"])
def test_new_fields_cannot_be_nulled(field: str) -> None:
    assert refused(ScheduleCreate, {**VALID, field: None}).field == field
    with pytest.raises(InvalidInput) as info:
        validation.parse(ScheduleUpdate, {field: None}).changes()
    assert info.value.field == field


@pytest.mark.parametrize(
    "field", ["paused_reason", "paused_at", "paused_by", "managed_by", "last_error"]
)
def test_fields_written_only_by_scout_tasks_are_not_writable(field: str) -> None:
    assert refused(ScheduleCreate, {**VALID, field: "x"}).field == field
    assert refused(ScheduleUpdate, {field: "x"}).field == field


# --- pause, run now, actor, paging -----------------------------------------------------


def test_pause_reason_bounds() -> None:
    assert validation.parse(validation.PauseRequest, {"reason": "r"}).reason == "r"
    assert validation.parse(validation.PauseRequest, {"reason": "r" * 500}).reason == "r" * 500


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"reason": None},
        {"reason": ""},
        {"reason": " \t\n"},
        {"reason": "r" * 501},
        {"reason": "a\x00b"},
        {"reason": 5},
        {"reason": ["a"]},
    ],
    ids=repr,
)
def test_pause_reason_refused_naming_reason(data: dict[str, Any]) -> None:
    error = refused(validation.PauseRequest, data)
    assert error.field == "reason"
    assert str(error).startswith("reason: ")


def test_run_now_request() -> None:
    assert validation.parse(validation.RunNowRequest, {}).triggered_by is None
    for bad in ("", " ", "t" * 256, "a\x00"):
        assert refused(validation.RunNowRequest, {"triggered_by": bad}).field == "triggered_by"
    assert refused(validation.RunNowRequest, {"source": "x"}).field == "source"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("alice", "alice"),
        ("  alice@example.com ", "alice@example.com"),
        ("a" * 255, "a" * 255),
        ("Алиса 🚀", "Алиса 🚀"),
    ],
)
def test_actor_accepted(given: str | None, expected: str | None) -> None:
    assert validation.actor(given) == expected


@pytest.mark.parametrize("given", ["a" * 256, "two\nlines", "nul\x00", "tab\there", "del\x7f"])
def test_actor_refused_naming_actor(given: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validation.actor(given)
    assert info.value.field == "actor"


def test_page_bounds() -> None:
    assert validation.page(1, 1) == (1, 1)
    assert validation.page(1_000_000, 1000) == (1_000_000, 1000)
    for page, size, field in [
        (0, 10, "page"),
        (1_000_001, 10, "page"),
        (True, 10, "page"),
        ("2", 10, "page"),
        (1, 0, "page_size"),
        (1, 1001, "page_size"),
        (1, 2.0, "page_size"),
    ]:
        with pytest.raises(InvalidInput) as info:
            validation.page(page, size)
        assert info.value.field == field


# --- control characters and UUID-shaped names ------------------------------------------------

CONTROL = ["nl\nname", "tab\tname", "cr\rname", "esc\x1b[31mname", "del\x7fname", "c1\x85name"]


@pytest.mark.parametrize("value", CONTROL)
@pytest.mark.parametrize("field", ["name", "source"])
def test_control_characters_are_refused_naming_the_field(field: str, value: str) -> None:
    for error in (
        refused(ScheduleCreate, {**VALID, field: value}),
        refused(ScheduleUpdate, {field: value}),
    ):
        assert error.field == field
        assert "control characters" in str(error)


@pytest.mark.parametrize("value", CONTROL)
def test_control_characters_in_a_pause_reason_or_actor_name_are_refused(value: str) -> None:
    error = refused(validation.PauseRequest, {"reason": value})
    assert error.field == "reason" and "control characters" in str(error)
    trig = refused(TriggerRequest, {"source": "s", "max_strategies": 1, "triggered_by": value})
    assert trig.field == "triggered_by"


def test_a_description_keeps_its_newlines_only() -> None:
    assert create(description="one\ntwo").description == "one\ntwo"
    error = refused(ScheduleCreate, {**VALID, "description": "one\ttwo"})
    assert error.field == "description" and "other than newlines" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "0F8FAD5B-D9CB-469F-A165-70867728950E",
        "0f8fad5bd9cb469fa16570867728950e",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
        "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
    ],
)
def test_a_name_that_parses_as_a_uuid_is_refused(value: str) -> None:
    for error in (
        refused(ScheduleCreate, {**VALID, "name": value}),
        refused(ScheduleUpdate, {"name": value}),
    ):
        assert error.field == "name" and "UUID" in str(error)


def test_names_that_merely_contain_a_uuid_or_unicode_are_fine() -> None:
    for name in ("run 0f8fad5b-d9cb-469f-a165-70867728950e", "Café \u202eabc", "🚀"):
        assert create(name=name).name == name
