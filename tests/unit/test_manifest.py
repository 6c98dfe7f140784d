"""Schedules as code, pure: reading a document, the plan, and the export round trip."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from scout_tasks import manifest
from scout_tasks.errors import InvalidInput
from scout_tasks.manifest import CREATE, DELETE, UNCHANGED, UPDATE

ENTRY = {
    "name": "daily",
    "cron_expression": "0 9 * * *",
    "source": "stratninja",
    "max_strategies": 10,
}


def _row(**overrides: Any) -> dict[str, Any]:
    """A stored schedule with every writable field at its default."""
    return {
        "id": uuid.uuid4(),
        "timezone": "UTC",
        "enabled": True,
        "description": "",
        "jitter_seconds": 0,
        "misfire_policy": "coalesce",
        "misfire_grace_seconds": 60,
        "overlap_policy": "allow",
        "managed_by": None,
        **ENTRY,
        **overrides,
    }


def _error(document: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        manifest.parse_document(document)
    return caught.value


@pytest.mark.parametrize(
    ("entries", "field", "words"),
    [
        (
            [ENTRY, {**ENTRY, "name": "b", "cron_expression": "61 * * * *"}],
            "schedules[1].cron_expression",
            "minute",
        ),
        ([{**ENTRY, "colour": "red"}], "schedules[0].colour", "unknown field"),
        ([{**ENTRY, "max_strategies": "10"}], "schedules[0].max_strategies", "integer"),
        ([{**ENTRY, "max_strategies": 1001}], "schedules[0].max_strategies", "1000"),
        ([{**ENTRY, "enabled": "yes"}], "schedules[0].enabled", "boolean"),
        ([{**ENTRY, "timezone": "Mars/Base"}], "schedules[0].timezone", "Mars/Base"),
        ([{**ENTRY, "jitter_seconds": 3601}], "schedules[0].jitter_seconds", "3600"),
        ([{k: v for k, v in ENTRY.items() if k != "source"}], "schedules[0].source", "required"),
        ([ENTRY, ENTRY], "schedules[1].name", "schedules[0]"),
        (["daily"], "schedules[0]", "mapping"),
        ([{**ENTRY, 3: "x"}], "schedules[0].3", "unknown field"),
    ],
)
def test_an_invalid_entry_names_the_entry_and_the_field(
    entries: list[Any], field: str, words: str
) -> None:
    err = _error({"schedules": entries})

    assert err.field == field
    assert words.lower() in str(err).lower()
    assert str(err).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([ENTRY], "schedules"),
        ("schedules", "schedules"),
        ({"schedules": {"name": "x"}}, "schedules"),
        ({"schedules": [], "extra": 1}, "extra"),
    ],
)
def test_a_document_of_the_wrong_shape_is_refused(document: Any, field: str) -> None:
    assert _error(document).field == field


def test_an_empty_document_lists_no_schedules() -> None:
    assert manifest.parse_document({"schedules": None}) == []
    assert manifest.parse_document({}) == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("schedules: [\n  {name: a\n", "line"),
        ("schedules:\n  - name: a\n    name: b\n", "given twice"),
        ("schedules: !!python/object:os.system {}\n", "YAML"),
    ],
)
def test_yaml_syntax_duplicate_keys_and_tags_are_refused(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        manifest.load_yaml(text)

    assert caught.value.field == "file"
    assert words in str(caught.value)


def test_the_plan_creates_updates_leaves_and_prunes_only_what_apply_wrote() -> None:
    current = [
        _row(name="same"),
        _row(name="changed", max_strategies=5, managed_by="apply"),
        _row(name="adopted", description="old"),
        _row(name="gone-managed", managed_by="apply"),
        _row(name="gone-by-hand"),
    ]
    wanted = manifest.parse_document(
        {
            "schedules": [
                {**ENTRY, "name": "new"},
                {**ENTRY, "name": "same"},
                {**ENTRY, "name": "changed"},
                {**ENTRY, "name": "adopted", "description": "new"},
            ]
        }
    )

    steps = manifest.plan(current, wanted, prune=True).steps

    assert [(s.action, s.name) for s in steps] == [
        (CREATE, "new"),
        (UNCHANGED, "same"),
        (UPDATE, "changed"),
        (UPDATE, "adopted"),
        (DELETE, "gone-managed"),
    ]
    assert steps[2].changes == {"max_strategies": (5, 10)}
    assert steps[3].changes == {"description": ("old", "new"), "managed_by": (None, "apply")}
    assert steps[2].line() == "~ changed  max_strategies: 5 -> 10"
    assert steps[3].line() == "~ adopted  description: old -> new, managed_by: null -> apply"
    assert [s.line() for s in (steps[0], steps[1], steps[4])] == [
        "+ new",
        "= same",
        "- gone-managed",
    ]
    assert steps[4].as_dict()["action"] == "delete"


def test_without_prune_nothing_is_deleted() -> None:
    current = [_row(name="gone-managed", managed_by="apply")]

    assert manifest.plan(current, [], prune=False).steps == []


def test_a_left_out_field_means_its_default() -> None:
    current = [_row(description="was set", jitter_seconds=30, managed_by="apply")]
    wanted = manifest.parse_document({"schedules": [ENTRY]})

    (step,) = manifest.plan(current, wanted, prune=False).steps

    assert step.changes == {"description": ("was set", ""), "jitter_seconds": (30, 0)}


def test_an_export_plans_no_change_at_all() -> None:
    current = [
        _row(name="a", enabled=False, timezone="Europe/Riga", jitter_seconds=59),
        _row(name="b: tricky # name", description="line one\nline two", managed_by="apply"),
        _row(name="ünïcödé", misfire_policy="catch_up", overlap_policy="skip"),
    ]

    text = manifest.dump_yaml(manifest.export_document(current))
    wanted = manifest.parse_document(manifest.load_yaml(text))
    plan = manifest.plan(current, wanted, prune=True)

    assert [s.action for s in plan.steps] == [UNCHANGED] * 3
    assert plan.changes == 0
