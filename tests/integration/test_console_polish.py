"""The console's smaller promises, found by looking at it with a realistic data set.

Each test pins one defect a review in a browser found: what an operator typed
comes back, long text stays bounded, what a running run is doing is shown.
"""

from __future__ import annotations

import re
import warnings

from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from tests.integration.test_console import add, banner, csrf_of

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
    assert banner(preview.text).startswith("Preview: 3 slot(s) would get a run")
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
