"""Run now, pause, resume and history over HTTP, and ``cron_description`` on every schedule.

Real PostgreSQL and RabbitMQ: a run-now's ``scout.trigger`` is read from a
queue bound to the test's exchange, and plain-SQL edits reach the history.
"""

from __future__ import annotations

import uuid
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from tests.conftest import EventQueue
from tests.integration.conftest import MakeClient
from tests.integration.helpers import TRIGGER_KEYS, counts, execute, row

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SCHEDULES = "/api/scout/schedules"
TOKEN = "operating-token"


def create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "Daily Scout Run",
        "cron_expression": "0 9 * * MON-FRI",
        "source": "stratninja",
        "max_strategies": 10,
        "timezone": "Europe/Berlin",
        **overrides,
    }
    response = client.post(SCHEDULES, json=body, headers={"X-Scout-Actor": "alice"})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


# --- cron_description ------------------------------------------------------------


def test_every_schedule_object_has_its_cron_description(client: TestClient) -> None:
    made = create(client)
    assert made["cron_description"] == "At 09:00, Monday through Friday"
    sid = made["id"]
    assert client.get(f"{SCHEDULES}/{sid}").json()["cron_description"] == made["cron_description"]
    listed = client.get(SCHEDULES).json()["items"]
    assert [s["cron_description"] for s in listed] == ["At 09:00, Monday through Friday"]
    patched = client.patch(f"{SCHEDULES}/{sid}", json={"cron_expression": "@daily"}).json()
    assert patched["cron_description"] == "At 00:00"
    paused = client.post(f"{SCHEDULES}/{sid}/pause", json={"reason": "x"}).json()
    assert paused["cron_description"] == "At 00:00"


def test_an_expression_written_with_sql_that_cron_refuses_has_an_empty_description(
    client: TestClient, engine: Engine
) -> None:
    sid = create(client)["id"]
    execute(
        engine, "UPDATE scout_schedules SET cron_expression = '0 0 L * *' WHERE id = :id", id=sid
    )
    body = client.get(f"{SCHEDULES}/{sid}")
    assert body.status_code == 200
    assert body.json()["cron_description"] == ""


# --- run now ---------------------------------------------------------------------------


def test_run_now_creates_a_manual_run_of_the_schedule_and_publishes_it(
    client: TestClient, engine: Engine, event_queue: EventQueue
) -> None:
    made = create(client, max_strategies=7, source="quantbase")
    response = client.post(
        f"{SCHEDULES}/{made['id']}/run",
        json={"triggered_by": "incident 42"},
        headers={"X-Scout-Actor": "bob"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Scout-Event"] == "published"
    run = response.json()
    assert run["schedule_id"] == made["id"]
    assert run["trigger_type"] == "manual"
    assert run["scheduled_for"] is None
    assert (run["source"], run["max_strategies"]) == ("quantbase", 7)
    assert run["triggered_by"] == "incident 42"
    # The next slot is where it was.
    after = client.get(f"{SCHEDULES}/{made['id']}").json()
    assert after["next_run_at"] == made["next_run_at"]
    assert after["last_run_id"] == run["id"]

    [event] = event_queue.get(count=1)
    assert event.routing_key == "scout.trigger"
    assert set(event.body) >= TRIGGER_KEYS
    assert event.body["run_id"] == run["id"]
    assert event.body["schedule_id"] == made["id"]
    assert event.body["trigger_type"] == "manual"
    assert event.body["scheduled_for"] is None
    # Running it is not a change of the schedule.
    actions = [c["action"] for c in client.get(f"{SCHEDULES}/{made['id']}/changes").json()["items"]]
    assert actions == ["create"]


def test_run_now_without_a_body_names_the_actor(client: TestClient) -> None:
    made = create(client)
    response = client.post(f"{SCHEDULES}/{made['id']}/run", headers={"X-Scout-Actor": "carol"})
    assert response.status_code == 201, response.text
    assert response.json()["triggered_by"] == "carol"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"triggered_by": ""}, "triggered_by"),
        ({"triggered_by": "x" * 256}, "triggered_by"),
        ({"triggered_by": 5}, "triggered_by"),
        ({"source": "other"}, "source"),
    ],
)
def test_run_now_refuses_bad_bodies_and_writes_nothing(
    client: TestClient, engine: Engine, body: dict[str, Any], field: str
) -> None:
    made = create(client)
    before = counts(engine)
    response = client.post(f"{SCHEDULES}/{made['id']}/run", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert counts(engine) == before


def test_run_now_of_an_unknown_schedule_is_404(client: TestClient, engine: Engine) -> None:
    before = counts(engine)
    assert client.post(f"{SCHEDULES}/{uuid.uuid4()}/run").status_code == 404
    assert counts(engine) == before


def test_an_actor_sent_as_utf8_is_recorded_as_written(client: TestClient) -> None:
    made = create(client)
    # What a client puts on the wire for "José Ñúñez": UTF-8 bytes (httpx sends a
    # header's bytes as given).
    name = "José Ñúñez"
    paused = client.post(
        f"{SCHEDULES}/{made['id']}/pause",
        json={"reason": "r"},
        headers={"X-Scout-Actor": name.encode()},  # type: ignore[dict-item]
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused_by"] == name
    changes = client.get(f"{SCHEDULES}/{made['id']}/changes").json()["items"]
    assert changes[0]["actor"] == name
    # Latin-1 bytes that are not UTF-8 are kept as the latin-1 text they are.
    client.post(
        f"{SCHEDULES}/{made['id']}/resume",
        headers={"X-Scout-Actor": "Jos\xe9".encode("latin-1")},  # type: ignore[dict-item]
    )
    assert client.get(f"{SCHEDULES}/{made['id']}/changes").json()["items"][0]["actor"] == "José"


# --- pause, resume -----------------------------------------------------------------------


def test_pause_records_reason_time_and_actor_then_resume_clears_them(
    client: TestClient, engine: Engine
) -> None:
    made = create(client)
    before = datetime.now(UTC)
    paused = client.post(
        f"{SCHEDULES}/{made['id']}/pause",
        json={"reason": "vendor outage"},
        headers={"X-Scout-Actor": "maria"},
    )
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["enabled"] is False
    assert body["paused_reason"] == "vendor outage"
    assert body["paused_by"] == "maria"
    assert datetime.fromisoformat(body["paused_at"]) >= before - timedelta(seconds=5)
    assert body["next_run_at"] is None

    resumed = client.post(f"{SCHEDULES}/{made['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert body["enabled"] is True
    assert (body["paused_reason"], body["paused_at"], body["paused_by"]) == (None, None, None)
    assert datetime.fromisoformat(body["next_run_at"]) > before
    changes = client.get(f"{SCHEDULES}/{made['id']}/changes").json()["items"]
    assert [(c["action"], c["actor"]) for c in changes][:2] == [
        ("resume", "api"),
        ("pause", "maria"),
    ]


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": None}, {"reason": 3}],
)
def test_pause_needs_a_reason_of_1_to_500_characters(
    client: TestClient, engine: Engine, body: dict[str, Any]
) -> None:
    made = create(client)
    response = client.post(f"{SCHEDULES}/{made['id']}/pause", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "reason"
    assert row(engine, "SELECT enabled FROM scout_schedules WHERE id = :id", id=made["id"])[
        "enabled"
    ]


def test_pause_with_an_unknown_field_is_422(client: TestClient) -> None:
    made = create(client)
    response = client.post(f"{SCHEDULES}/{made['id']}/pause", json={"reason": "x", "why": "y"})
    assert (response.status_code, response.json()["field"]) == (422, "why")


def test_a_500_character_reason_is_kept_whole(client: TestClient) -> None:
    made = create(client)
    reason = "é" * 500
    body = client.post(f"{SCHEDULES}/{made['id']}/pause", json={"reason": reason}).json()
    assert body["paused_reason"] == reason


def test_an_actor_with_control_characters_is_refused(client: TestClient) -> None:
    made = create(client)
    response = client.post(
        f"{SCHEDULES}/{made['id']}/pause",
        json={"reason": "x"},
        headers={"X-Scout-Actor": "evil\tname"},
    )
    assert (response.status_code, response.json()["field"]) == (422, "actor")


# --- history -------------------------------------------------------------------------------


def test_changes_list_api_and_sql_edits_newest_first_paginated(
    client: TestClient, engine: Engine
) -> None:
    made = create(client)
    sid = made["id"]
    client.patch(
        f"{SCHEDULES}/{sid}", json={"max_strategies": 12}, headers={"X-Scout-Actor": "bob"}
    )
    execute(engine, "UPDATE scout_schedules SET source = 'sqlsource' WHERE id = :id", id=sid)
    body = client.get(f"{SCHEDULES}/{sid}/changes").json()
    assert (body["total"], body["page"], body["page_size"]) == (3, 1, 50)
    newest, middle, oldest = body["items"]
    assert set(newest) == {"at", "actor", "action", "changes"}
    assert newest["changes"] == {"source": ["stratninja", "sqlsource"]}
    assert newest["actor"].startswith("postgres")  # the database role (and application)
    assert (middle["actor"], middle["changes"]) == ("bob", {"max_strategies": [10, 12]})
    assert (oldest["actor"], oldest["action"]) == ("alice", "create")
    assert datetime.fromisoformat(newest["at"]) >= datetime.fromisoformat(oldest["at"])

    second = client.get(f"{SCHEDULES}/{sid}/changes", params={"page": 2, "page_size": 2}).json()
    assert [c["action"] for c in second["items"]] == ["create"]
    assert client.get(f"{SCHEDULES}/{sid}/changes", params={"page_size": 0}).status_code == 422


def test_changes_of_an_unknown_schedule_is_404(client: TestClient) -> None:
    assert client.get(f"{SCHEDULES}/{uuid.uuid4()}/changes").status_code == 404


# --- auth ------------------------------------------------------------------------------------


def test_the_actions_need_the_token_when_one_is_set(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(api_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = client.post(
        SCHEDULES,
        json={
            "name": "n",
            "cron_expression": "@hourly",
            "source": "s",
            "max_strategies": 1,
        },
        headers=auth,
    )
    sid = response.json()["id"]
    before = counts(engine)
    for path, body in (("run", None), ("pause", {"reason": "x"}), ("resume", None)):
        refused = client.post(f"{SCHEDULES}/{sid}/{path}", json=body)
        assert refused.status_code == 401, path
    assert counts(engine) == before
    # Reading the history needs no token, as with every GET.
    assert client.get(f"{SCHEDULES}/{sid}/changes").status_code == 200
    assert client.post(f"{SCHEDULES}/{sid}/run", headers=auth).status_code == 201


def test_a_deleted_schedules_history_is_still_there(client: TestClient) -> None:
    made = create(client)
    assert (
        client.delete(f"{SCHEDULES}/{made['id']}", headers={"X-Scout-Actor": "zoe"}).status_code
        == 204
    )
    items = client.get(f"{SCHEDULES}/{made['id']}/changes").json()["items"]
    assert [(c["action"], c["actor"]) for c in items] == [("delete", "zoe"), ("create", "alice")]
