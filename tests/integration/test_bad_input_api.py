"""The bad-input corpus (tests/badinput.py) through the HTTP API, on the real servers.

Every refused case must be a 422 whose JSON ``{"detail", "field"}`` names the field,
never a 5xx, and must write nothing: the row counts of the three tables (and, for a
PATCH, the schedule itself) are compared around each request. The valid unicode and
SQL-looking values must be stored and read back verbatim. Requests carry the API
token, so what is tested is validation, not authentication (test_api.py covers that).

Each test runs its whole list of cases, records the figures for RELIABILITY.md
(tests/reliability.py), then fails with every problem found, not just the first.
Malformed lifecycle events are not repeated here: tests/integration/test_lifecycle.py
(test_poison_messages_are_dead_lettered_exactly_once) already dead-letters them.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks.api import create_app
from tests import badinput, reliability
from tests.badinput import Good, RawBody
from tests.conftest import EventQueue
from tests.integration.helpers import app_settings, counts, execute, row

with warnings.catch_warnings():
    # Starlette >= 1.0 prefers httpx2 and warns when it falls back to httpx (as test_api.py).
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SUITE = "bad_input_api"
TOKEN = "bad-input-token"
SCHEDULES = badinput.SCHEDULES
TRIGGER = "/api/scout/trigger"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(db_url: str, broker_url: str, exchange_name: str) -> Iterator[TestClient]:
    settings = app_settings(db_url, broker_url, exchange_name, api_token=TOKEN)
    # A 5xx must come back as a response to count, not as an exception in the test.
    with TestClient(
        create_app(settings),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as test_client:
        yield test_client


# --- bookkeeping ----------------------------------------------------------------------------


def refusal_problem(response: httpx.Response, field_name: str, ok: tuple[int, ...] = ()) -> str:
    """What is wrong with ``response`` as a refusal naming ``field_name`` ('' if nothing)."""
    status = response.status_code
    if status in ok:
        return ""
    text = response.text[:300]
    if status != 422:
        return f"status {status} (expected 422): {text}"
    try:
        body = response.json()
    except ValueError:
        return f"422 but not JSON: {text}"
    if not isinstance(body, dict) or body.get("field") != field_name:
        named = body.get("field") if isinstance(body, dict) else None
        return f"422 names field {named!r}, expected {field_name!r}: {text}"
    detail = body.get("detail")
    if not isinstance(detail, str) or field_name not in detail:
        return f"422 detail does not name {field_name!r}: {text}"
    return ""


@dataclass
class Tally:
    """The outcome of every case on one surface, recorded for RELIABILITY.md."""

    surface: str
    checked: str
    cases: int = 0
    accepted: int = 0
    client_errors: int = 0
    server_errors: int = 0
    wrote: int = 0
    problems: list[str] = field(default_factory=list)

    def count(self, label: str, response: httpx.Response, problem: str, wrote: bool) -> None:
        self.cases += 1
        status = response.status_code
        if status >= 500:
            self.server_errors += 1
        elif status >= 400:
            self.client_errors += 1
        else:
            self.accepted += 1
        if wrote:
            self.wrote += 1
            problem = (problem + "; " if problem else "") + "something was written"
        if problem:
            self.problems.append(f"{self.surface} [{label}]: {problem}")

    def finish(self, *, valid: bool = False) -> None:
        """Record the figures, then fail with every problem found.

        ``valid``: the cases were values that must be accepted, so the figures are
        how many were stored verbatim, not refusals.
        """
        if valid:
            figures: dict[str, Any] = {
                "valid_cases": self.cases,
                "stored_verbatim": self.cases - len(self.problems),
            }
        else:
            figures = {
                "cases": self.cases,
                "accepted": self.accepted,
                "4xx": self.client_errors,
                "5xx": self.server_errors,
                "wrote": self.wrote,
            }
        reliability.record(
            SUITE,
            surface=self.surface,
            checked=self.checked,
            **figures,
            problems=self.problems,
        )
        assert self.problems == [], f"{len(self.problems)} problem(s):\n" + "\n".join(self.problems)


def post_json(client: TestClient, url: str, body: dict[str, Any]) -> httpx.Response:
    # ensure_ascii (the default) writes lone surrogates as \ud800 escapes, as a JSON
    # client would; the server decodes them back into lone surrogates.
    return client.post(url, content=json.dumps(body).encode(), headers=JSON)


def create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = post_json(client, SCHEDULES, {**badinput.VALID_SCHEDULE, **overrides})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _body_cases(valid: dict[str, Any], *, partial: bool = False) -> list[RawBody]:
    return [*badinput.BODIES, *badinput.raw_field_bodies(valid, partial=partial)]


def written(engine: Engine, before: dict[str, int]) -> bool:
    """Whether the row counts moved; if so, empty the tables again so that one accepted
    bad case does not turn the next cases into duplicates (the tests start empty)."""
    if counts(engine) == before:
        return False
    for table in ("scout_outbox", "scout_runs", "scout_schedules"):
        execute(engine, f"DELETE FROM {table}")
    return True


# --- create ----------------------------------------------------------------------------------


def test_create_schedule_refuses_every_bad_field(client: TestClient, engine: Engine) -> None:
    cases = [*badinput.SCHEDULE_FIELDS, *badinput.SCHEDULE_MISSING]
    tally = Tally(
        f"POST {SCHEDULES} (fields)",
        "each bad value of every schedule field, in an otherwise valid body",
    )
    for case in cases:
        before = counts(engine)
        response = post_json(client, SCHEDULES, badinput.with_field(badinput.VALID_SCHEDULE, case))
        tally.count(
            case.id, response, refusal_problem(response, case.field), written(engine, before)
        )
    tally.finish()


def test_create_schedule_refuses_every_bad_body(client: TestClient, engine: Engine) -> None:
    tally = Tally(
        f"POST {SCHEDULES} (bodies)",
        "malformed JSON, non-objects, NaN/Infinity, duplicate keys, deep nesting",
    )
    for case in _body_cases(badinput.VALID_SCHEDULE):
        before = counts(engine)
        response = client.post(SCHEDULES, content=case.content, headers=JSON)
        tally.count(
            case.label, response, refusal_problem(response, case.field), written(engine, before)
        )
    tally.finish()


# --- update ----------------------------------------------------------------------------------


def test_patch_refuses_every_bad_field_and_body(client: TestClient, engine: Engine) -> None:
    tally = Tally(
        f"PATCH {SCHEDULES}/{{id}}",
        "each bad value of every schedule field (null included) and every bad body",
    )
    target: dict[str, Any] = {}

    def fresh_target() -> None:
        """A new schedule to patch (after an accepted bad case changed the last one)."""
        execute(engine, "DELETE FROM scout_schedules")
        created = create(client)
        target["url"] = f"{SCHEDULES}/{created['id']}"
        target["row"] = row(
            engine, "SELECT * FROM scout_schedules WHERE id = :id", id=created["id"]
        )

    def changed() -> bool:
        now = row(engine, "SELECT * FROM scout_schedules WHERE id = :id", id=target["row"]["id"])
        if now == target["row"] and counts(engine)["scout_schedules"] == 1:
            return False
        fresh_target()
        return True

    fresh_target()
    for case in badinput.schedule_update_fields():
        body = {} if case.value is badinput.MISSING else {case.field: case.value}
        response = client.patch(target["url"], content=json.dumps(body).encode(), headers=JSON)
        tally.count(case.id, response, refusal_problem(response, case.field), changed())
    for raw in _body_cases(badinput.VALID_SCHEDULE, partial=True):
        response = client.patch(target["url"], content=raw.content, headers=JSON)
        tally.count(f"body: {raw.label}", response, refusal_problem(response, raw.field), changed())
    tally.finish()


# --- manual trigger --------------------------------------------------------------------------


def test_trigger_refuses_every_bad_field_and_body(
    client: TestClient, engine: Engine, event_queue: EventQueue
) -> None:
    tally = Tally(
        f"POST {TRIGGER}",
        "each bad value of source, max_strategies, triggered_by, unknown keys, every bad body",
    )
    for case in badinput.TRIGGER_FIELDS:
        before = counts(engine)
        response = post_json(client, TRIGGER, badinput.with_field(badinput.VALID_TRIGGER, case))
        tally.count(
            case.id, response, refusal_problem(response, case.field), written(engine, before)
        )
    for raw in _body_cases(badinput.VALID_TRIGGER):
        before = counts(engine)
        response = client.post(TRIGGER, content=raw.content, headers=JSON)
        problem = refusal_problem(response, raw.field)
        tally.count(f"body: {raw.label}", response, problem, written(engine, before))
    published = event_queue.get(timeout=0.5, count=1000)
    if published:
        tally.problems.append(f"{len(published)} scout.trigger event(s) published for refusals")
    tally.finish()


# --- query and path parameters ------------------------------------------------------------


def test_bad_query_and_path_parameters_are_422_never_5xx(
    client: TestClient, engine: Engine
) -> None:
    ids = {
        "{schedule}": create(client)["id"],
        "{rare}": create(client, name="rare", cron_expression=badinput.RARE_CRON)["id"],
    }
    tally = Tally(
        "query and path parameters",
        "pagination, filters, timestamps, ids and fire-time counts on every GET/DELETE/POST",
    )
    for case in badinput.QUERIES:
        path = case.path
        for placeholder, value in ids.items():
            path = path.replace(placeholder, value)
        before = counts(engine)
        response = client.request(case.method, path, params=case.params)
        problem = refusal_problem(response, case.field, case.ok)
        tally.count(f"{case.method} {case.label}", response, problem, counts(engine) != before)
    tally.finish()


# --- what must be accepted ----------------------------------------------------------------


def test_valid_unicode_and_sql_looking_values_are_stored_verbatim(
    client: TestClient, engine: Engine, event_queue: EventQueue
) -> None:
    tally = Tally(
        "valid values",
        "unicode (emoji, RTL, combining), SQL-looking strings and bounds: "
        "created, patched and triggered, read back verbatim",
    )

    def check_schedule(label: str, response: httpx.Response, case: Good) -> None:
        problem = ""
        if response.status_code not in (200, 201):
            problem = f"refused with {response.status_code}: {response.text[:300]}"
        else:
            body = response.json()
            stored = row(engine, "SELECT * FROM scout_schedules WHERE id = :id", id=body["id"])
            fetched = client.get(f"{SCHEDULES}/{body['id']}").json()
            seen = {body[case.field], stored[case.field], fetched[case.field]}
            if seen != {case.expected}:
                problem = f"read back as {seen!r}, expected {case.expected!r}"
        tally.count(label, response, problem, wrote=False)

    for case in badinput.VALID_SCHEDULE_VALUES:
        response = post_json(client, SCHEDULES, badinput.valid_schedule_body(case))
        check_schedule(f"create {case.field}: {case.label}", response, case)

    target = create(client, name="patch target")
    for case in badinput.VALID_SCHEDULE_VALUES:
        value = case.value
        if case.field == "name":
            value = f"{value[:240]} (patched)" if len(value) > 240 else f"{value} (patched)"
            case = Good(case.label, "name", value)
        response = client.patch(
            f"{SCHEDULES}/{target['id']}",
            content=json.dumps({case.field: value}).encode(),
            headers=JSON,
        )
        check_schedule(f"patch {case.field}: {case.label}", response, case)

    runs: dict[str, Good] = {}
    for case in badinput.VALID_TRIGGER_VALUES:
        response = post_json(client, TRIGGER, badinput.with_field(badinput.VALID_TRIGGER, case))
        problem = ""
        if response.status_code != 201:
            problem = f"refused with {response.status_code}: {response.text[:300]}"
        else:
            run = response.json()
            runs[run["id"]] = case
            stored = row(engine, "SELECT * FROM scout_runs WHERE id = :id", id=run["id"])
            if {run[case.field], stored[case.field]} != {case.expected}:
                problem = f"read back as {run[case.field]!r}/{stored[case.field]!r}"
        tally.count(f"trigger {case.field}: {case.label}", response, problem, wrote=False)

    # The events carry the values verbatim too.
    for message in event_queue.get(count=len(runs), timeout=15):
        case = runs.pop(message.body["run_id"])
        if message.body[case.field] != case.expected:
            tally.problems.append(
                f"scout.trigger [{case.label}]: {case.field} = {message.body[case.field]!r}"
            )
    if runs:
        tally.problems.append(f"{len(runs)} scout.trigger event(s) never arrived")
    tally.finish(valid=True)


def test_the_sql_looking_name_left_every_table_in_place(client: TestClient, engine: Engine) -> None:
    created = create(client, name=badinput.SQL_INJECTION, source="x' OR '1'='1")
    assert counts(engine) == {"scout_schedules": 1, "scout_runs": 0, "scout_outbox": 0}
    listed = client.get(SCHEDULES, params={"source": "x' OR '1'='1"}).json()
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    assert client.get(SCHEDULES, params={"source": "' OR '1'='1"}).json()["total"] == 0
    assert uuid.UUID(created["id"])
