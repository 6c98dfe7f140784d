"""Schedules as code: the YAML document, the plan that makes the database match it.

A document is ``{"schedules": [entry, ...]}``; an entry holds the API's
writable schedule fields (:data:`FIELDS`) and is validated by the same rules
as any other write (:class:`scout_tasks.validation.ScheduleCreate`). A field
an entry leaves out takes its default: the file is the whole truth about the
schedules it lists, so deleting a line resets that field.

Everything here is pure: :func:`plan` takes the current rows and the wanted
entries and says, per schedule (matched by name), what to create, change,
delete or leave. :mod:`scout_tasks.apply` reads the rows and writes the plan.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from scout_tasks.errors import InvalidInput
from scout_tasks.validation import ScheduleCreate, first_error

# The writable fields, in the order an exported entry lists them.
FIELDS = (
    "name",
    "cron_expression",
    "source",
    "max_strategies",
    "timezone",
    "enabled",
    "description",
    "jitter_seconds",
    "misfire_policy",
    "misfire_grace_seconds",
    "overlap_policy",
)
assert set(FIELDS) == set(ScheduleCreate.model_fields)

# What `managed_by` says of a schedule `apply` wrote; --prune deletes only those.
MANAGED_BY = "apply"

CREATE, UPDATE, DELETE, UNCHANGED = "+", "~", "-", "="
_ACTIONS = {CREATE: "create", UPDATE: "update", DELETE: "delete", UNCHANGED: "unchanged"}


# --- reading a document ---------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error, not "last one wins"."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        try:
            taken = key in result
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if taken:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str, source: str = "file") -> Any:
    """The YAML document in ``text``; a syntax error is an InvalidInput naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise InvalidInput(source, f"YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(source, f"YAML syntax error: {exc}") from None


def parse_document(document: Any) -> list[ScheduleCreate]:
    """The validated entries of ``{"schedules": [...]}``; the first problem names its place.

    Errors name the entry and the field (``schedules[3].cron_expression: ...``).
    Names must be unique within the document.
    """
    if not isinstance(document, Mapping):
        raise InvalidInput("schedules", "the document must be a mapping with a 'schedules' list")
    unknown = sorted(str(k) for k in document if k != "schedules")
    if unknown:
        raise InvalidInput(unknown[0], "unknown key (the document holds only 'schedules')")
    items = document.get("schedules")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise InvalidInput("schedules", f"must be a list, not {_kind(items)}")
    entries: list[ScheduleCreate] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"schedules[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(where, f"must be a mapping of schedule fields, not {_kind(item)}")
        bad_key = next((k for k in item if not isinstance(k, str)), None)
        if bad_key is not None:
            raise InvalidInput(f"{where}.{bad_key}", "unknown field")
        try:
            entry = ScheduleCreate.model_validate(dict(item))
        except ValidationError as exc:
            err = first_error(exc)
            raise InvalidInput(f"{where}.{err.field}", str(err).split(": ", 1)[-1]) from None
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.{exc.field}", str(exc).split(": ", 1)[-1]) from None
        if entry.name in first_seen:
            raise InvalidInput(
                f"{where}.name",
                f"{entry.name!r} is already the name of schedules[{first_seen[entry.name]}]",
            )
        first_seen[entry.name] = index
        entries.append(entry)
    return entries


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


# --- the plan -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """What applying does to one schedule."""

    action: str  # CREATE, UPDATE, DELETE or UNCHANGED
    name: str
    schedule_id: uuid.UUID | None = None
    # field -> (old, new); for a create every field, for a delete none.
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # The validated entry (None for a delete).
    entry: ScheduleCreate | None = None

    def line(self) -> str:
        """The plan line: ``+ name``, ``~ name  field: old -> new, ...``, ``- name``, ``= name``."""
        if self.action != UPDATE:
            return f"{self.action} {self.name}"
        diffs = ", ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in self.changes.items())
        return f"{self.action} {self.name}  {diffs}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": _ACTIONS[self.action],
            "name": self.name,
            "id": None if self.schedule_id is None else str(self.schedule_id),
            "changes": {k: [o, n] for k, (o, n) in self.changes.items()},
        }


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if value == "" or value != value.strip() or " " in value else value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class Plan:
    steps: list[Step]

    @property
    def changes(self) -> int:
        """How many schedules the plan writes (creates, updates, deletes)."""
        return sum(1 for s in self.steps if s.action != UNCHANGED)

    def summary(self) -> str:
        counts = {a: sum(1 for s in self.steps if s.action == a) for a in _ACTIONS}
        return (
            f"{counts[CREATE]} to create, {counts[UPDATE]} to update, "
            f"{counts[DELETE]} to delete, {counts[UNCHANGED]} unchanged"
        )


def plan(
    current: Iterable[Mapping[str, Any]], wanted: Sequence[ScheduleCreate], *, prune: bool
) -> Plan:
    """What makes ``current`` (rows of ``scout_schedules``) match ``wanted``, by name.

    A listed schedule is created, updated (the fields that differ, and
    ``managed_by`` when apply first writes a schedule made another way) or
    left alone. With ``prune``, a schedule that apply wrote (``managed_by`` set) and
    the document no longer lists is deleted; one made any other way never is.
    Steps come in the document's order, deletes last, by name.
    """
    by_name = {row["name"]: row for row in current}
    steps: list[Step] = []
    for entry in wanted:
        values = entry.model_dump()
        row = by_name.get(entry.name)
        if row is None:
            steps.append(
                Step(CREATE, entry.name, None, {k: (None, values[k]) for k in FIELDS}, entry)
            )
            continue
        diff = {k: (row[k], values[k]) for k in FIELDS if row[k] != values[k]}
        if diff and row.get("managed_by") != MANAGED_BY:
            # Writing a schedule makes it apply's; merely listing one does not,
            # so an exported file applies with no change at all.
            diff["managed_by"] = (row.get("managed_by"), MANAGED_BY)
        action = UPDATE if diff else UNCHANGED
        steps.append(Step(action, entry.name, row["id"], diff, entry))
    if prune:
        listed = {entry.name for entry in wanted}
        gone = sorted(
            (r for r in by_name.values() if r["name"] not in listed and r.get("managed_by")),
            key=lambda r: r["name"],
        )
        steps += [Step(DELETE, row["name"], row["id"]) for row in gone]
    return Plan(steps)


# --- export ---------------------------------------------------------------------------


def export_document(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The document that lists ``rows`` as they are: applying it changes no field."""
    return {"schedules": [{k: row[k] for k in FIELDS} for row in rows]}


def dump_yaml(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=1000)
