"""The console's smaller promises, found by looking at it with a realistic data set.

Each test pins one defect a review in a browser found: what an operator typed
comes back, long text stays bounded, what a running run is doing is shown.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from datetime import UTC
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks import service
from tests.integration.helpers import execute, row
from tests.integration.test_console import add, banner, csrf_of, text_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def field_value(page: str, name: str) -> str:
    found = re.search(rf'<input type="datetime-local" name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} field on the page"
    return found.group(1)


def test_a_backfill_preview_keeps_its_range_so_it_can_be_run_for_real(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine, cron_expression="0 * * * *", timezone="Europe/Berlin")
    page = client.get(f"/ui/schedules/{made['id']}").text
    assert field_value(page, "from") == "" and field_value(page, "to") == ""
    form = {"csrf": csrf_of(page), "from": "2026-11-20T00:00", "to": "2026-11-20T03:00"}
    preview = client.post(f"/ui/schedules/{made['id']}/backfill", data={**form, "dry_run": "1"})
    assert banner(preview.text).startswith("Preview: 3 slot(s) would get a run: Fri 20 Nov")
    # The range is still in the form: one click on Backfill does what the preview showed.
    assert field_value(preview.text, "from") == "2026-11-20T00:00"
    assert field_value(preview.text, "to") == "2026-11-20T03:00"
    done = client.post(
        f"/ui/schedules/{made['id']}/backfill",
        data={
            "csrf": csrf_of(preview.text),
            "from": field_value(preview.text, "from"),
            "to": field_value(preview.text, "to"),
            "dry_run": "0",
        },
    )
    assert banner(done.text) == "Backfilled 3 slot(s)"
    # A refused range comes back too, to be corrected rather than typed again.
    wrong = client.post(
        f"/ui/schedules/{made['id']}/backfill",
        data={**form, "csrf": csrf_of(done.text), "to": "2026-11-19T00:00", "dry_run": "1"},
    )
    assert banner(wrong.text).startswith("to:")
    assert field_value(wrong.text, "to") == "2026-11-19T00:00"
    # Whatever the query string holds, the field gets a wall time or nothing.
    odd = client.get(f"/ui/schedules/{made['id']}?from=%22%3E%3Cscript%3E&to=2026-11-20T03:00:30")
    assert field_value(odd.text, "from") == ""
    assert field_value(odd.text, "to") == "2026-11-20T03:00:30"


def test_a_running_runs_progress_and_a_completed_runs_counters_are_shown_not_only_as_json(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    running, done, odd = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    progress = {
        "stage": "validate",
        "progress": 62,
        "message": "validated 310 of 500 strategies",
        "at": "2026-12-01T06:47:04.798212+00:00",
    }
    counters = {
        "total_fetched": 120,
        "validated": 90,
        "validation_failed": 30,
        "duplicates_removed": 4,
        "submitted": 86,
    }
    for run_id, status, metrics in (
        (running, "running", {"progress": progress}),
        (done, "completed", counters),
        # Plain SQL may write anything into metrics; the page must still answer.
        (odd, "running", {"progress": {"progress": "lots", "stage": 7, "at": "soon"}}),
    ):
        execute(
            engine,
            "INSERT INTO scout_runs (id, trigger_type, source, max_strategies, status, metrics,"
            " schedule_id, started_at) VALUES (:id, 'manual', 'stratninja', 10, :status,"
            " CAST(:metrics AS jsonb), :schedule, now())",
            id=run_id,
            status=status,
            metrics=json.dumps(metrics),
            schedule=made["id"],
        )
    page = text_of(client.get(f"/ui/runs/{running}").text)
    assert "Progress 62 % · validate · validated 310 of 500 strategies" in page
    listed = client.get(f"/ui/schedules/{made['id']}").text
    assert "62 % · validate</div>" in listed
    assert "62 % · validate</div>" in client.get("/ui/runs").text
    finished = text_of(client.get(f"/ui/runs/{done}").text)
    assert (
        "Counters 120 fetched · 90 validated · 30 failed validation · 4 duplicates removed"
        " · 86 submitted" in finished
    )
    strange = client.get(f"/ui/runs/{odd}")
    assert strange.status_code == 200
    assert "Progress" not in text_of(strange.text).split("Payload")[0]


def test_timestamps_in_the_history_read_like_the_pages_other_times(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine, timezone="America/New_York")
    service.pause(engine, made["id"], reason="deploy window", actor="carol")
    paused_at = row(engine, "SELECT paused_at FROM scout_schedules WHERE id = :id", id=made["id"])[
        "paused_at"
    ]
    page = client.get(f"/ui/schedules/{made['id']}").text
    history = page.split('id="hist-h"')[1]
    # Not the stored text (2026-12-01T07:46:21.792901+00:00) but the wall time in the
    # schedule's zone, with the UTC instant on hover.
    assert paused_at.isoformat() not in history
    assert f'title="{paused_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"' in history
    local = paused_at.astimezone(ZoneInfo("America/New_York"))
    assert f"{local:%H:%M} E" in text_of(history)  # EST or EDT
    # Other values stay as stored.
    assert "deploy window" in text_of(history)


def test_a_long_backfill_preview_names_its_last_slot(client: TestClient, engine: Engine) -> None:
    made = add(engine, cron_expression="0 * * * *", timezone="Europe/Berlin")
    page = client.get(f"/ui/schedules/{made['id']}").text
    form = {"csrf": csrf_of(page), "from": "2026-11-20T00:00", "to": "2026-11-20T08:00"}
    preview = client.post(f"/ui/schedules/{made['id']}/backfill", data={**form, "dry_run": "1"})
    said = banner(preview.text)
    assert said.startswith("Preview: 8 slot(s) would get a run: Fri 20 Nov"), said
    assert said.endswith(" 04:00 CET and 3 more, the last Fri 20 Nov 2026 07:00 CET") or (
        said.endswith(" 04:00 CET and 3 more, the last Fri 20 Nov 07:00 CET")
    ), said


def test_a_runs_timeline_on_the_schedules_page_names_its_zone(
    client: TestClient, engine: Engine
) -> None:
    """The run's own page shows its timeline in UTC; the schedule's page in the schedule's zone."""
    made = add(engine, timezone="America/New_York")
    execute(
        engine,
        "INSERT INTO scout_runs (trigger_type, source, max_strategies, status, schedule_id,"
        " created_at) VALUES ('manual', 'stratninja', 10, 'pending', :id,"
        " '2026-12-01T06:44:22+00:00')",
        id=made["id"],
    )
    page = text_of(client.get(f"/ui/schedules/{made['id']}").text)
    assert "created 01:44:22 EST" in page


def test_the_schedule_says_when_and_by_whom_it_was_last_changed_not_last_fired(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    service.update_schedule(engine, made["id"], {"max_strategies": 20}, actor="alice")
    # Firing (and Run now) stamp updated_at; that is bookkeeping, not a change.
    execute(
        engine,
        "UPDATE scout_schedules SET updated_at = now() + interval '1 hour' WHERE id = :id",
        id=made["id"],
    )
    service.run_now(engine, made["id"], actor="bob")
    for query in ("", "?history=2"):
        page = text_of(client.get(f"/ui/schedules/{made['id']}{query}").text)
        facts = page.split("Changed", 1)[1].split("Next", 1)[0]
        assert "by alice (update)" in facts, facts
        assert "in 59 min" not in facts and "in 1 h" not in facts


def test_every_runs_filter_names_what_it_filters(client: TestClient) -> None:
    """A screen reader reads a field's own label: "before" alone says nothing."""
    page = client.get("/ui/runs").text
    labels = re.findall(r'<span class="lbl">([^<]+)</span>', page)
    assert labels == [
        "Status",
        "Trigger",
        "Source",
        "Schedule id",
        "Created after (UTC)",
        "Created before (UTC)",
    ]
