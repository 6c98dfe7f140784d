"""The OpenAPI document, built without any server: ids, enums, bodies, and models
that describe exactly the tables' columns."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Table

from scout_tasks.api import create_app
from scout_tasks.api.models import Run, Schedule
from scout_tasks.settings import Settings
from scout_tasks.tables import (
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    RUN_STATUSES,
    TRIGGER_TYPES,
    runs,
    schedules,
)

OPERATIONS = {
    ("post", "/api/scout/schedules"): "create_schedule",
    ("get", "/api/scout/schedules"): "list_schedules",
    ("post", "/api/scout/schedules/reload"): "reload_schedules",
    ("get", "/api/scout/schedules/{id}"): "get_schedule",
    ("patch", "/api/scout/schedules/{id}"): "update_schedule",
    ("delete", "/api/scout/schedules/{id}"): "delete_schedule",
    ("get", "/api/scout/schedules/{id}/next"): "next_fire_times",
    ("post", "/api/scout/schedules/{id}/reload"): "reload_schedule",
    ("post", "/api/scout/schedules/{id}/run"): "run_schedule_now",
    ("post", "/api/scout/schedules/{id}/pause"): "pause_schedule",
    ("post", "/api/scout/schedules/{id}/resume"): "resume_schedule",
    ("get", "/api/scout/schedules/{id}/changes"): "list_schedule_changes",
    ("post", "/api/scout/schedules/apply"): "apply_schedules",
    ("post", "/api/scout/schedules/{id}/backfill"): "backfill_schedule",
    ("post", "/api/scout/trigger"): "trigger_run",
    ("get", "/api/scout/runs"): "list_runs",
    ("get", "/api/scout/runs/{id}"): "get_run",
    ("post", "/api/scout/runs/{id}/cancel"): "cancel_run",
    ("get", "/livez"): "livez",
    ("get", "/readyz"): "readyz",
    ("get", "/healthz"): "healthz",
    ("get", "/metrics"): "metrics",
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    # Nothing connects: the engine is made lazily and the spec needs no database.
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url="postgresql://nobody@127.0.0.1:1/none", broker_url="amqp://x"
    )
    return create_app(settings).openapi()


def test_every_operation_has_its_stable_id(spec: dict[str, Any]) -> None:
    found = {
        (method, path): operation["operationId"]
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    assert found == OPERATIONS


def _enum(schema: dict[str, Any]) -> set[str]:
    for option in schema.get("anyOf", [schema]):
        if "enum" in option:
            return set(option["enum"])
    raise AssertionError(f"no enum in {schema}")


def test_enums_show_in_objects_filters_and_bodies(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    assert _enum(components["Run"]["properties"]["status"]) == set(RUN_STATUSES)
    assert _enum(components["Run"]["properties"]["trigger_type"]) == set(TRIGGER_TYPES)
    assert _enum(components["Schedule"]["properties"]["misfire_policy"]) == set(MISFIRE_POLICIES)
    assert _enum(components["Schedule"]["properties"]["overlap_policy"]) == set(OVERLAP_POLICIES)

    filters = {
        p["name"]: p["schema"] for p in spec["paths"]["/api/scout/runs"]["get"]["parameters"]
    }
    assert _enum(filters["status"]) == set(RUN_STATUSES)
    assert _enum(filters["trigger_type"]) == set(TRIGGER_TYPES)

    for path, method in (("/api/scout/schedules", "post"), ("/api/scout/schedules/{id}", "patch")):
        body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        assert _enum(body["properties"]["misfire_policy"]) == set(MISFIRE_POLICIES), path
        assert body["additionalProperties"] is False
    trigger = spec["paths"]["/api/scout/trigger"]["post"]["requestBody"]
    assert trigger["content"]["application/json"]["schema"]["required"] == [
        "source",
        "max_strategies",
    ]


def test_responses_and_errors_are_documented(spec: dict[str, Any]) -> None:
    create = spec["paths"]["/api/scout/schedules"]["post"]["responses"]
    assert create["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/Schedule")
    assert create["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    page = spec["paths"]["/api/scout/runs"]["get"]["responses"]["200"]
    assert page["content"]["application/json"]["schema"]["$ref"].endswith("/RunPage")
    pause = spec["paths"]["/api/scout/schedules/{id}/pause"]["post"]
    reason = pause["requestBody"]["content"]["application/json"]["schema"]["properties"]["reason"]
    assert (reason["minLength"], reason["maxLength"]) == (1, 500)
    assert any(p["name"] == "X-Scout-Actor" for p in pause["parameters"])
    run = spec["paths"]["/api/scout/schedules/{id}/run"]["post"]
    assert run["requestBody"]["required"] is False
    assert run["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/Run")


# Not columns: what the API adds to a row.
COMPUTED = {"cron_description": False}


@pytest.mark.parametrize(("model", "table"), [(Schedule, schedules), (Run, runs)])
def test_models_describe_exactly_the_columns(model: type[BaseModel], table: Table) -> None:
    """Responses are the rows themselves (plus computed fields): a new column must be documented."""
    columns = {c.name: c.nullable for c in table.c}
    if model is Schedule:
        columns.update(COMPUTED)
    assert set(model.model_fields) == set(columns)
    for name, field in model.model_fields.items():
        # Nullable exactly where the column is.
        assert (type(None) in _args(field.annotation)) == bool(columns[name]), name


def _args(annotation: Any) -> tuple[Any, ...]:
    return getattr(annotation, "__args__", ()) or (annotation,)
