"""The HTTP API against the real PostgreSQL and RabbitMQ, through FastAPI's TestClient.

Every refusal is checked twice: the status and the field it names, and that
nothing was written (row counts of all three tables unchanged).
"""

from __future__ import annotations

import itertools
import socket
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks import cron
from tests.conftest import EventQueue
from tests.integration.conftest import MakeClient
from tests.integration.helpers import TRIGGER_KEYS, counts, execute, row

with warnings.catch_warnings():
    # Starlette >= 1.0 prefers httpx2 and warns when it falls back to httpx; that
    # is the test extra's choice, not something these tests can fix.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SCHEDULES = "/api/scout/schedules"
RUNS = "/api/scout/runs"
TRIGGER = "/api/scout/trigger"
TOKEN = "s3cret-token"


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def schedule_body(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Daily Scout Run",
        "cron_expression": "0 12 * * *",
        "source": "stratninja",
        "max_strategies": 10,
        **overrides,
    }


def create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post(SCHEDULES, json=schedule_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def trigger(client: TestClient, **overrides: Any) -> dict[str, Any]:
    body = {"source": "stratninja", "max_strategies": 5, **overrides}
    response = client.post(TRIGGER, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def insert_scheduled_run(engine: Engine, schedule_id: str, *, lag: str = "3 seconds") -> str:
    """A run as the beat would record it, ``lag`` after its slot, by plain SQL."""
    with engine.begin() as conn:
        run_id = conn.execute(
            text(
                """
            INSERT INTO scout_runs (trigger_type, triggered_by, source, max_strategies,
                                    schedule_id, scheduled_for)
            VALUES ('scheduled', 'Daily Scout Run', 'stratninja', 10, :sid,
                    now() - CAST(:lag AS interval))
            RETURNING id
            """
            ),
            {"sid": schedule_id, "lag": lag},
        ).scalar_one()
    return str(run_id)


def assert_error(response: Any, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"detail", "field"}
    assert body["field"] == field
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert field in body["detail"]
    return body  # type: ignore[no-any-return]


# --- create --------------------------------------------------------------------------------


def test_create_returns_the_schedule_with_its_first_slot(
    client: TestClient, engine: Engine
) -> None:
    before = datetime.now(UTC)
    body = create(client, timezone="America/New_York")

    assert uuid.UUID(body["id"])
    next_run_at = datetime.fromisoformat(body["next_run_at"])
    assert next_run_at.utcoffset() is not None
    assert next_run_at == cron.next_after("0 12 * * *", "America/New_York", before)
    local = next_run_at.astimezone(cron.get_zone("America/New_York"))
    assert (local.hour, local.minute) == (12, 0)
    assert body["timezone"] == "America/New_York"
    assert body["enabled"] is True
    stored = row(engine, "SELECT * FROM scout_schedules WHERE id = :id", id=body["id"])
    assert stored["name"] == "Daily Scout Run"
    assert stored["next_run_at"] == next_run_at
    # The table's columns, like the CLI's --json, plus the expression in words.
    assert set(body) == set(stored) | {"cron_description"}
    assert body["cron_description"] == "At 12:00"


def test_create_disabled_has_no_next_run(client: TestClient) -> None:
    assert create(client, enabled=False)["next_run_at"] is None


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"cron_expression": "every day"}, "cron_expression", "5 fields"),
        ({"cron_expression": "61 * * * *"}, "cron_expression", ""),
        ({"cron_expression": "0 0 30 2 *"}, "cron_expression", "never fire"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "unknown time zone"),
        ({"max_strategies": 0}, "max_strategies", ""),
        ({"max_strategies": 1001}, "max_strategies", ""),
        ({"max_strategies": "5"}, "max_strategies", ""),
        ({"name": "x" * 256}, "name", ""),
        ({"name": ""}, "name", ""),
        ({"source": "s" * 51}, "source", ""),
        ({"enabled": "yes"}, "enabled", ""),
        ({"misfire_policy": "sometimes"}, "misfire_policy", ""),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"source": None}, "source", ""),
    ],
)
def test_create_refuses_a_bad_field_and_writes_nothing(
    client: TestClient, engine: Engine, overrides: dict[str, Any], field: str, words: str
) -> None:
    before = counts(engine)
    body = assert_error(client.post(SCHEDULES, json=schedule_body(**overrides)), 422, field)
    assert words in body["detail"]
    assert counts(engine) == before


def test_create_refuses_a_missing_field(client: TestClient, engine: Engine) -> None:
    body = schedule_body()
    del body["cron_expression"]
    assert_error(client.post(SCHEDULES, json=body), 422, "cron_expression")
    assert counts(engine)["scout_schedules"] == 0


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"name": "x", ', "malformed JSON"),
        (b"", "JSON object is required"),
        (b'[{"name": "x"}]', "not an array"),
        (b'"a string"', "not a str"),
        (b"42", "not a int"),
    ],
)
def test_create_refuses_a_body_that_is_not_a_json_object(
    client: TestClient, engine: Engine, content: bytes, words: str
) -> None:
    response = client.post(SCHEDULES, content=content, headers={"Content-Type": "application/json"})
    assert words in assert_error(response, 422, "body")["detail"]
    assert counts(engine)["scout_schedules"] == 0


def test_duplicate_name_is_409(client: TestClient, engine: Engine) -> None:
    create(client)
    before = counts(engine)
    response = client.post(SCHEDULES, json=schedule_body(cron_expression="*/5 * * * *"))
    assert "already exists" in assert_error(response, 409, "name")["detail"]
    assert counts(engine) == before


# --- list, get, patch, delete ----------------------------------------------------------------


def test_list_paginates_filters_and_counts(client: TestClient) -> None:
    for i in range(5):
        create(client, name=f"s{i}", source="alpha" if i < 3 else "beta", enabled=i != 1)

    first = client.get(SCHEDULES, params={"page_size": 2}).json()
    assert (first["total"], first["page"], first["page_size"]) == (5, 1, 2)
    assert [s["name"] for s in first["items"]] == ["s0", "s1"]
    last = client.get(SCHEDULES, params={"page_size": 2, "page": 3}).json()
    assert [s["name"] for s in last["items"]] == ["s4"]
    assert last["total"] == 5
    beyond = client.get(SCHEDULES, params={"page_size": 2, "page": 4}).json()
    assert beyond["items"] == [] and beyond["total"] == 5

    beta = client.get(SCHEDULES, params={"source": "beta"}).json()
    assert beta["total"] == 2 and {s["name"] for s in beta["items"]} == {"s3", "s4"}
    disabled = client.get(SCHEDULES, params={"enabled": "false"}).json()
    assert [s["name"] for s in disabled["items"]] == ["s1"] and disabled["total"] == 1
    both = client.get(SCHEDULES, params={"enabled": "true", "source": "alpha"}).json()
    assert [s["name"] for s in both["items"]] == ["s0", "s2"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"page_size": 0}, "page_size"), ({"page": 0}, "page"), ({"enabled": "maybe"}, "enabled")],
)
def test_list_refuses_bad_query_parameters(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    assert_error(client.get(SCHEDULES, params=params), 422, field)


def test_get_patch_delete_and_404(client: TestClient, engine: Engine) -> None:
    created = create(client)
    url = f"{SCHEDULES}/{created['id']}"
    assert client.get(url).json() == created

    patched = client.patch(url, json={"max_strategies": 20, "overlap_policy": "skip"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["max_strategies"] == 20
    assert patched.json()["overlap_policy"] == "skip"
    # Not a timing change: the slot stays.
    assert patched.json()["next_run_at"] == created["next_run_at"]
    assert client.get(url).json()["max_strategies"] == 20

    assert client.patch(url, json={}).json()["max_strategies"] == 20

    response = client.delete(url)
    assert response.status_code == 204 and response.content == b""
    assert counts(engine)["scout_schedules"] == 0
    assert_error(client.get(url), 404, None)
    assert_error(client.delete(url), 404, None)
    assert_error(client.patch(url, json={"enabled": False}), 404, None)


def test_unknown_and_malformed_ids(client: TestClient) -> None:
    unknown = uuid.uuid4()
    assert str(unknown) in assert_error(client.get(f"{SCHEDULES}/{unknown}"), 404, None)["detail"]
    assert_error(client.get(f"{SCHEDULES}/not-a-uuid"), 422, "id")
    assert_error(client.delete(f"{SCHEDULES}/not-a-uuid"), 422, "id")
    assert_error(client.patch(f"{SCHEDULES}/123", json={}), 422, "id")
    assert_error(client.get(f"{RUNS}/{unknown}"), 404, None)
    assert_error(client.get(f"{RUNS}/nope"), 422, "id")
    assert_error(client.post(f"{RUNS}/{unknown}/cancel"), 404, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron_expression": "0 0 31 4 *"}, "cron_expression"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"max_strategies": 1001}, "max_strategies"),
        ({"enabled": None}, "enabled"),
        ({"id": str(uuid.uuid4())}, "id"),
    ],
)
def test_patch_refuses_a_bad_field_and_changes_nothing(
    client: TestClient, engine: Engine, change: dict[str, Any], field: str
) -> None:
    created = create(client)
    url = f"{SCHEDULES}/{created['id']}"
    assert_error(client.patch(url, json=change), 422, field)
    assert client.get(url).json() == created


def test_patch_rename_to_an_existing_name_is_409(client: TestClient) -> None:
    create(client, name="one")
    two = create(client, name="two")
    assert_error(client.patch(f"{SCHEDULES}/{two['id']}", json={"name": "one"}), 409, "name")
    assert client.get(f"{SCHEDULES}/{two['id']}").json()["name"] == "two"


def test_patch_enable_disable_and_timing_recompute_next_run_at(client: TestClient) -> None:
    created = create(client, cron_expression="0 3 * * *")
    url = f"{SCHEDULES}/{created['id']}"

    disabled = client.patch(url, json={"enabled": False}).json()
    assert disabled["enabled"] is False and disabled["next_run_at"] is None

    enabled = client.patch(url, json={"enabled": True}).json()
    assert enabled["enabled"] is True and enabled["next_run_at"] is not None

    moved = client.patch(url, json={"cron_expression": "30 5 * * *", "timezone": "Asia/Tokyo"})
    body = moved.json()
    next_run_at = datetime.fromisoformat(body["next_run_at"])
    local = next_run_at.astimezone(cron.get_zone("Asia/Tokyo"))
    assert (local.hour, local.minute) == (5, 30)
    assert body["cron_expression"] == "30 5 * * *" and body["timezone"] == "Asia/Tokyo"


def test_next_previews_fire_times_in_the_schedules_zone(client: TestClient, engine: Engine) -> None:
    created = create(client, cron_expression="0 12 * * *", timezone="Europe/Riga")
    url = f"{SCHEDULES}/{created['id']}/next"

    body = client.get(url, params={"n": 3}).json()
    assert body["timezone"] == "Europe/Riga"
    times = [datetime.fromisoformat(t) for t in body["times"]]
    assert len(times) == 3
    assert times[0] == datetime.fromisoformat(created["next_run_at"])
    for text_time, parsed in zip(body["times"], times, strict=True):
        assert "T12:00:00+0" in text_time  # local noon, with Riga's offset (+02:00 or +03:00)
        assert parsed.utcoffset() in (timedelta(hours=2), timedelta(hours=3))
    # Consecutive days at local noon (a DST change would make one gap 23 or 25 hours).
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(timedelta(hours=23) <= gap <= timedelta(hours=25) for gap in gaps)
    assert len(client.get(url).json()["times"]) == 5

    # An operator's off-grid next_run_at comes first, then the cron slots after it.
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = :at WHERE id = :id",
        at=datetime(2099, 1, 1, 7, 15, tzinfo=UTC),
        id=created["id"],
    )
    moved = client.get(url, params={"n": 2}).json()["times"]
    assert moved == ["2099-01-01T09:15:00+02:00", "2099-01-01T12:00:00+02:00"]

    assert_error(client.get(url, params={"n": 0}), 422, "n")
    assert_error(client.get(f"{SCHEDULES}/{uuid.uuid4()}/next"), 404, None)


def test_next_of_an_overdue_schedule_lists_what_the_beat_will_fire_not_the_missed_slots(
    client: TestClient, engine: Engine
) -> None:
    created = create(client, cron_expression="*/15 * * * *", timezone="UTC")
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() - interval '2 hours' WHERE id = :id",
        id=created["id"],
    )
    before = row(engine, "SELECT now() AS now")["now"]
    times = [
        datetime.fromisoformat(t)
        for t in client.get(f"{SCHEDULES}/{created['id']}/next", params={"n": 4}).json()["times"]
    ]
    after = row(engine, "SELECT now() AS now")["now"]
    # Coalesced: one run for the latest missed quarter, then the quarters after
    # now; the seven missed before it are never fired, so never listed.
    assert before - timedelta(minutes=15) < times[0] <= after, (times, before, after)
    assert all(t > before for t in times[1:]), (times, before)
    assert [b - a for a, b in itertools.pairwise(times[1:])] == [timedelta(minutes=15)] * 2


def test_reload_routes(client: TestClient) -> None:
    created = create(client)
    response = client.post(f"{SCHEDULES}/reload")
    assert response.status_code == 200 and "message" in response.json()
    one = client.post(f"{SCHEDULES}/{created['id']}/reload")
    assert one.status_code == 200 and created["id"] in one.json()["message"]
    assert_error(client.post(f"{SCHEDULES}/{uuid.uuid4()}/reload"), 404, None)


# --- trigger, runs, cancel ----------------------------------------------------------------------


def test_trigger_records_a_run_and_publishes_scout_trigger(
    client: TestClient, engine: Engine, event_queue: EventQueue
) -> None:
    response = client.post(
        TRIGGER, json={"source": "stratninja", "max_strategies": 7, "triggered_by": "ops"}
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "pending" and run["trigger_type"] == "manual"
    assert run["schedule_id"] is None and run["scheduled_for"] is None
    assert response.headers["Scout-Event"] == "published"

    [message] = event_queue.get(count=1)
    assert message.routing_key == "scout.trigger"
    assert set(message.body) >= TRIGGER_KEYS
    assert message.body["run_id"] == run["id"]
    assert message.body["trigger_type"] == "manual"
    assert message.body["triggered_by"] == "ops"
    assert message.body["max_strategies"] == 7
    assert counts(engine)["scout_outbox"] == 0
    assert client.get(f"{RUNS}/{run['id']}").json() == run


def test_concurrent_triggers_share_one_publisher_safely(
    client: TestClient, engine: Engine, event_queue: EventQueue
) -> None:
    """Sync routes run in a threadpool; the shared publisher must not mix up confirms."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(
            pool.map(
                lambda i: client.post(TRIGGER, json={"source": f"s{i}", "max_strategies": 1}),
                range(16),
            )
        )
    assert [r.status_code for r in responses] == [201] * 16
    assert {r.headers["Scout-Event"] for r in responses} == {"published"}
    received = event_queue.get(count=16, timeout=20)
    assert {m.body["run_id"] for m in received} == {r.json()["id"] for r in responses}
    assert counts(engine)["scout_outbox"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "stratninja", "max_strategies": 0}, "max_strategies"),
        ({"source": "stratninja", "max_strategies": 1001}, "max_strategies"),
        ({"source": "stratninja", "max_strategies": "5"}, "max_strategies"),
        ({"source": "stratninja"}, "max_strategies"),
        ({"source": "", "max_strategies": 5}, "source"),
        ({"source": "stratninja", "max_strategies": 5, "priority": 1}, "priority"),
    ],
)
def test_trigger_refuses_bad_input_and_writes_nothing(
    client: TestClient,
    engine: Engine,
    event_queue: EventQueue,
    body: dict[str, Any],
    field: str,
) -> None:
    assert_error(client.post(TRIGGER, json=body), 422, field)
    assert counts(engine) == {"scout_schedules": 0, "scout_runs": 0, "scout_outbox": 0}
    assert event_queue.get(timeout=0.5) == []


def test_runs_list_filters_and_paginates(client: TestClient, engine: Engine) -> None:
    schedule = create(client)
    manual = [trigger(client, source="alpha") for _ in range(3)]
    scheduled = insert_scheduled_run(engine, schedule["id"])
    client.post(f"{RUNS}/{manual[0]['id']}/cancel")

    everything = client.get(RUNS).json()
    assert everything["total"] == 4 and len(everything["items"]) == 4
    # Newest first.
    created = [item["created_at"] for item in everything["items"]]
    assert created == sorted(created, reverse=True)

    def ids(**params: Any) -> set[str]:
        response = client.get(RUNS, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(page["items"])
        return {item["id"] for item in page["items"]}

    assert ids(trigger_type="scheduled") == {scheduled}
    assert ids(trigger_type="manual") == {r["id"] for r in manual}
    assert ids(schedule_id=schedule["id"]) == {scheduled}
    assert ids(source="alpha") == {r["id"] for r in manual}
    assert ids(status="cancelled") == {manual[0]["id"]}
    assert ids(status="pending", trigger_type="manual") == {manual[1]["id"], manual[2]["id"]}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert ids(created_after=future) == set()
    assert len(ids(created_after=past)) == 4
    assert ids(created_before=past) == set()
    assert ids(created_after=past[:19]) == ids(created_after=past)  # bare means UTC

    page = client.get(RUNS, params={"page_size": 3, "page": 2}).json()
    assert (page["total"], page["page"], page["page_size"], len(page["items"])) == (4, 2, 3, 1)

    assert_error(client.get(RUNS, params={"status": "sleeping"}), 422, "status")
    assert_error(client.get(RUNS, params={"trigger_type": "cosmic"}), 422, "trigger_type")
    assert_error(client.get(RUNS, params={"schedule_id": "x"}), 422, "schedule_id")
    assert_error(client.get(RUNS, params={"created_after": "yesterday"}), 422, "created_after")


def test_cancel_then_409_and_scout_cancelled_arrives(
    client: TestClient, event_queue: EventQueue
) -> None:
    run = trigger(client)
    assert event_queue.get(count=1)[0].routing_key == "scout.trigger"

    response = client.post(f"{RUNS}/{run['id']}/cancel")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["id"] == run["id"] and cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None

    [message] = event_queue.get(count=1)
    assert message.routing_key == "scout.cancelled"
    assert message.body["run_id"] == run["id"]

    again = client.post(f"{RUNS}/{run['id']}/cancel")
    assert "cancelled" in assert_error(again, 409, None)["detail"]
    assert event_queue.get(timeout=0.5) == []
    assert client.get(f"{RUNS}/{run['id']}").json()["status"] == "cancelled"


def test_cancel_refuses_a_completed_run(client: TestClient, engine: Engine) -> None:
    run = trigger(client)
    execute(engine, "UPDATE scout_runs SET status = 'completed' WHERE id = :id", id=run["id"])
    assert_error(client.post(f"{RUNS}/{run['id']}/cancel"), 409, None)
    assert client.get(f"{RUNS}/{run['id']}").json()["status"] == "completed"


def test_trigger_with_the_broker_down_still_records_the_run(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(broker_url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}//")
    response = client.post(TRIGGER, json={"source": "stratninja", "max_strategies": 1})
    assert response.status_code == 201, response.text
    assert response.headers["Scout-Event"] == "queued"
    # The event waits in the outbox for the next tick.
    assert counts(engine)["scout_outbox"] == 1


# --- auth ------------------------------------------------------------------------------------


def test_token_guards_every_mutating_route(make_client: MakeClient, engine: Engine) -> None:
    client = make_client(api_token=TOKEN)
    good = {"Authorization": f"Bearer {TOKEN}"}

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.post(SCHEDULES, json=schedule_body(), headers=headers)
        assert_error(response, 401, None)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert_error(client.post(TRIGGER, json={"source": "a", "max_strategies": 1}), 401, None)
    # The token is checked before the body is read.
    assert_error(client.post(SCHEDULES, content=b"{not json"), 401, None)
    assert counts(engine) == {"scout_schedules": 0, "scout_runs": 0, "scout_outbox": 0}

    response = client.post(SCHEDULES, json=schedule_body(), headers=good)
    assert response.status_code == 201, response.text
    url = f"{SCHEDULES}/{response.json()['id']}"

    # Reads stay open.
    assert client.get(url).status_code == 200
    assert client.get(SCHEDULES).json()["total"] == 1
    assert client.get(RUNS).status_code == 200

    assert_error(client.patch(url, json={"enabled": False}), 401, None)
    assert client.get(url).json()["enabled"] is True
    assert_error(client.delete(url), 401, None)
    assert_error(client.post(f"{SCHEDULES}/reload"), 401, None)
    assert_error(client.post(f"{RUNS}/{uuid.uuid4()}/cancel"), 401, None)
    assert counts(engine)["scout_schedules"] == 1

    assert client.patch(url, json={"enabled": False}, headers=good).status_code == 200
    assert client.post(f"{SCHEDULES}/reload", headers=good).status_code == 200
    assert client.delete(url, headers=good).status_code == 204


def test_without_a_token_mutating_routes_are_open(client: TestClient) -> None:
    assert client.post(SCHEDULES, json=schedule_body()).status_code == 201


# --- health, metrics, errors, OpenAPI ----------------------------------------------------------


def test_healthz_ok_when_both_answer(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_503_names_the_broker(make_client: MakeClient) -> None:
    client = make_client(broker_url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}//")
    body = client.get("/healthz").json()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert body["database"] == "ok" and body["broker"] != "ok"
    assert "broker" in body["detail"] and "database" not in body["detail"]


def test_database_down_is_503_json(make_client: MakeClient) -> None:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{_closed_port()}/scout"
    client = make_client(database_url=url)

    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["database"] != "ok" and health.json()["broker"] == "ok"
    assert "database" in health.json()["detail"]

    for response in (
        client.get(SCHEDULES),
        client.post(SCHEDULES, json=schedule_body()),
        client.get(f"{RUNS}/{uuid.uuid4()}"),
        client.get("/metrics"),
    ):
        body = assert_error(response, 503, None)
        assert body["detail"].startswith("database unavailable")
        assert "Traceback" not in response.text


@pytest.mark.parametrize("where", ["dead port", "unknown role"])
def test_open_routes_say_database_unavailable_and_nothing_else(
    where: str, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port() if where == "dead port" else 5432
    url = f"postgresql+psycopg2://scout_nosuchrole:pw@127.0.0.1:{port}/scoutdb_nosuch"
    client = make_client(database_url=url, api_token="t0ken")
    with caplog.at_level("WARNING"):
        # Unauthenticated: no token sent.
        responses = [client.get("/metrics"), client.get(SCHEDULES)]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == "database unavailable", response.text
        for internal in ("127.0.0.1", str(port), "scout_nosuchrole", "scoutdb_nosuch", "FATAL"):
            assert internal not in response.text, internal
    # The operator still reads the driver's reason in the log.
    assert any("database unavailable:" in r.getMessage() for r in caplog.records)


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert_error(client.get("/api/scout/nothing"), 404, None)
    assert_error(client.put(SCHEDULES, json={}), 405, None)


# /metrics, /livez and /readyz in depth: tests/integration/test_ops.py.


def test_openapi_lists_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/api/scout/schedules": {"get", "post"},
        "/api/scout/schedules/{id}": {"get", "patch", "delete"},
        "/api/scout/schedules/{id}/next": {"get"},
        "/api/scout/schedules/reload": {"post"},
        "/api/scout/schedules/{id}/reload": {"post"},
        "/api/scout/trigger": {"post"},
        "/api/scout/runs": {"get"},
        "/api/scout/runs/{id}": {"get"},
        "/api/scout/runs/{id}/cancel": {"post"},
        "/livez": {"get"},
        "/readyz": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    create_body = paths["/api/scout/schedules"]["post"]["requestBody"]["content"]
    schema = create_body["application/json"]["schema"]
    assert {"name", "cron_expression", "source", "max_strategies"} <= set(schema["required"])
    assert "next_run_at" in spec["components"]["schemas"]["Schedule"]["properties"]
