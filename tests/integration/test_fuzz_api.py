"""Schemathesis over the API's own ``/openapi.json``: no request may get a 5xx.

Every operation of the ASGI app (on the real PostgreSQL and RabbitMQ) gets a bounded
number of generated requests that follow the schema (positive) and that break it
(negative); operations with an ``{id}`` get them once with random ids and once with the
id of an object that exists, so the mutating routes do real work. Requests carry the
API token. Each response goes through schemathesis' ``not_a_server_error`` check.

The figures (operations, requests, status classes, 5xx) are recorded for
RELIABILITY.md. ``SCOUT_FUZZ_EXAMPLES`` (default 40) sets the examples per operation,
mode and id.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from sqlalchemy import Engine

from scout_tasks import service
from scout_tasks.api import create_app
from tests import reliability
from tests.integration.helpers import app_settings

SUITE = "fuzz_api"
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("SCOUT_FUZZ_EXAMPLES", "40"))
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# Random strings are never a valid cron expression or time zone, so without help every
# positive create would stop at validation; half of them get these instead.
PLAUSIBLE = {"cron_expression": "0 12 * * *", "timezone": "UTC"}


@dataclass
class OperationTally:
    label: str
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        by_class = Counter(f"{status // 100}xx" for status in self.statuses.elements())
        return {
            "operation": self.label,
            "requests": sum(self.statuses.values()),
            "2xx": by_class["2xx"],
            "4xx": by_class["4xx"],
            "5xx": by_class["5xx"],
            "statuses": " ".join(str(s) for s in sorted(self.statuses)),
        }


def _fuzz(
    operation: Any, mode: GenerationMode, path_parameters: dict[str, str] | None, tally: Any
) -> None:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @given(case=strategy, plausible=st.booleans())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, plausible: bool) -> None:
        if plausible and mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            for key, value in PLAUSIBLE.items():
                if key in case.body:
                    case.body[key] = value
        response = case.call(headers=AUTH)
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=AUTH)
        except FailureGroup:  # a failed check is counted, not raised: keep fuzzing
            curl = case.as_curl_command(headers=AUTH)
            tally.problems.append(
                f"{tally.label} ({mode.value}): {response.status_code} "
                f"{response.text[:200]!r}\n    {curl[:600]}"
            )

    # Nothing to break: an operation without parameters or body has no negative case.
    with contextlib.suppress(Unsatisfiable):
        run()


def test_no_operation_answers_with_a_server_error(
    db_url: str, broker_url: str, exchange_name: str, engine: Engine
) -> None:
    app = create_app(app_settings(db_url, broker_url, exchange_name, api_token=TOKEN))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]

    def schedule_id() -> str:
        body = {
            "name": f"fuzz target {uuid.uuid4().hex[:8]}",
            "cron_expression": "0 12 * * *",
            "source": "stratninja",
            "max_strategies": 5,
        }
        return str(service.create_schedule(engine, body)["id"])

    def run_id() -> str:
        run, _ = service.trigger_run(engine, {"source": "fuzz", "max_strategies": 1}, None)
        return str(run["id"])

    tallies: list[OperationTally] = []
    try:
        for operation in operations:
            tally = OperationTally(operation.label)
            tallies.append(tally)
            existing: list[Callable[[], str] | None] = [None]
            if "{id}" in operation.path:
                existing.append(run_id if "/runs/" in operation.path else schedule_id)
            for make_id in existing:
                for mode in MODES:
                    # A fresh object per pass: a DELETE or a cancel spends it.
                    params = None if make_id is None else {"id": make_id()}
                    _fuzz(operation, mode, params, tally)
    finally:
        app.state.scout.close()

    problems = [p for t in tallies for p in t.problems]
    for tally in tallies:
        reliability.record(
            SUITE,
            checked=f"schemathesis {schemathesis.__version__} over /openapi.json: positive and "
            f"negative requests, up to {EXAMPLES} examples per operation, mode and id kind "
            "(random, existing); check not_a_server_error",
            **tally.figures(),
            problems=tally.problems,
        )
    assert len(operations) >= 14, [o.label for o in operations]
    assert sum(sum(t.statuses.values()) for t in tallies) > 0
    assert problems == [], f"{len(problems)} server error(s):\n" + "\n".join(problems)
