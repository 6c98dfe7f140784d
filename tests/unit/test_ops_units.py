"""The pure parts of operations: counter deltas, the histogram's exposition, the health
verdict (``now`` pinned), the loopback check and the settings' secret types."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from scout_tasks import counters, health
from scout_tasks.api.metrics import fire_lag_histogram
from scout_tasks.cli.serve import beyond_loopback
from scout_tasks.heartbeat import BeatState
from scout_tasks.settings import SecretUrl, Settings

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def test_the_lowest_fire_lag_bucket_is_10_ms_or_less() -> None:
    assert counters.FIRE_LAG_BOUNDS[0] <= 0.01
    assert list(counters.FIRE_LAG_BOUNDS) == sorted(set(counters.FIRE_LAG_BOUNDS))


@pytest.mark.parametrize(
    ("lag", "bucket"),
    [
        (0.0, "0.005"),
        (-3.0, "0.005"),  # a clock hair behind counts as on time
        (0.005, "0.005"),  # le is inclusive
        (0.0050001, "0.01"),
        (0.02, "0.025"),
        (299.9, "300.0"),
        (3600.0, "3600.0"),
        (86400.0, "+Inf"),
    ],
)
def test_each_lag_lands_in_exactly_one_bucket(lag: float, bucket: str) -> None:
    deltas = counters.fire_lag([lag])
    assert {k: v for k, v in deltas.items() if k[0] == counters.FIRE_LAG_BUCKET} == {
        (counters.FIRE_LAG_BUCKET, bucket): 1
    }
    assert deltas[(counters.FIRE_LAG_SUM_MICROS, "")] == round(max(lag, 0) * 1_000_000)


def test_deltas_merge_and_empty_ones_vanish() -> None:
    merged = counters.merge(
        counters.runs_created("scheduled", 3),
        counters.runs_created("scheduled", 2),
        counters.runs_finished(["failed", "completed", "failed"]),
        counters.fire_lag([]),
    )
    assert merged == {
        (counters.RUNS_CREATED, "scheduled"): 5,
        (counters.RUNS_FINISHED, "failed"): 2,
        (counters.RUNS_FINISHED, "completed"): 1,
    }


def test_the_histogram_is_cumulative_and_survives_changed_bounds() -> None:
    totals = {
        (counters.FIRE_LAG_BUCKET, "0.005"): 2,
        (counters.FIRE_LAG_BUCKET, "0.1"): 3,
        # A bound from an older release, no longer listed: counted at the next one up.
        (counters.FIRE_LAG_BUCKET, "0.07"): 1,
        (counters.FIRE_LAG_BUCKET, "+Inf"): 4,
        (counters.FIRE_LAG_SUM_MICROS, ""): 2_500_000,
        (counters.RUNS_CREATED, "manual"): 99,
    }
    family = fire_lag_histogram(totals, bounds=(0.005, 0.1, 1.0))
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("scout_fire_lag_seconds_bucket", "0.005")] == 2
    assert samples[("scout_fire_lag_seconds_bucket", "0.1")] == 6
    assert samples[("scout_fire_lag_seconds_bucket", "1.0")] == 6
    assert samples[("scout_fire_lag_seconds_bucket", "+Inf")] == 10
    assert samples[("scout_fire_lag_seconds_count", None)] == 10
    assert samples[("scout_fire_lag_seconds_sum", None)] == 2.5


def snapshot(**overrides: object) -> health.Snapshot:
    values: dict[str, object] = {
        "now": NOW,
        "beat": BeatState("h:1", 30.0, NOW - timedelta(hours=1), NOW - timedelta(seconds=10)),
        "schedules_enabled": 5,
        "schedules_due": 1,
        "schedules_overdue": 0,
        "schedules_cannot_fire": 0,
        "outbox_backlog": 0,
        "outbox_oldest_at": None,
        "runs_pending": 0,
        "runs_running": 0,
        **overrides,
    }
    return health.Snapshot(**values)  # type: ignore[arg-type]


def tick(seconds_ago: float, period: float = 30.0) -> BeatState:
    return BeatState("h:1", period, NOW - timedelta(hours=1), NOW - timedelta(seconds=seconds_ago))


# (the snapshot's changes, the problems found), at NOW with a 30 s tick period.
VERDICTS = [
    ({}, []),
    ({"beat": tick(90)}, []),  # 3 periods exactly: not yet silent
    ({"beat": tick(90.5)}, ["the beat is silent: last tick 90s ago"]),
    ({"beat": tick(500, period=300)}, []),
    ({"beat": None}, ["no beat has ever ticked"]),
    ({"schedules_due": 7}, []),  # due is normal: firing is on it
    ({"schedules_overdue": 2}, ["2 schedule(s) overdue"]),
    ({"outbox_backlog": 3, "outbox_oldest_at": NOW - timedelta(seconds=300)}, []),
    (
        {"outbox_backlog": 3, "outbox_oldest_at": NOW - timedelta(seconds=301)},
        ["the outbox is stuck: 3 event(s) waiting, the oldest for 301s"],
    ),
    ({"beat": None, "schedules_overdue": 1}, ["no beat", "1 schedule(s) overdue"]),
    # Enabled but never firing: plain SQL gave them an expression or zone that does not evaluate.
    ({"schedules_cannot_fire": 2}, ["2 enabled schedule(s) cannot fire"]),
]


@pytest.mark.parametrize(("changes", "expected"), VERDICTS)
def test_the_health_verdict(changes: dict[str, object], expected: list[str]) -> None:
    found = health.problems(snapshot(**changes))
    assert len(found) == len(expected), found
    for problem, start in zip(found, expected, strict=True):
        assert problem.startswith(start), problem


def test_the_report_is_plain_data() -> None:
    report = health.report(snapshot(outbox_backlog=1, outbox_oldest_at=NOW - timedelta(seconds=5)))
    assert report["healthy"] is True
    assert report["beat"]["last_tick_age_seconds"] == 10
    assert report["outbox"] == {
        "backlog": 1,
        "oldest_created_at": NOW - timedelta(seconds=5),
        "oldest_age_seconds": 5,
    }


@pytest.mark.parametrize(
    ("host", "open_"),
    [
        ("127.0.0.1", False),
        ("127.0.0.53", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("LOCALHOST", False),
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("api.example.com", True),
    ],
)
def test_beyond_loopback(host: str, open_: bool) -> None:
    assert beyond_loopback(host) is open_


def test_the_settings_hold_secrets_as_secret_types() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url="postgres://me:pw-db-1@db/scout",
        broker_url="amqp://me:pw-mq-2@mq//",
        api_token="tok-3",
    )
    assert isinstance(settings.database_url, SecretUrl)
    assert isinstance(settings.api_token, SecretStr)
    # The code that connects asks for the URL explicitly; nothing else shows it.
    assert settings.database_url_value() == "postgresql+psycopg2://me:pw-db-1@db/scout"
    assert settings.broker_url_value() == "amqp://me:pw-mq-2@mq//"
    assert settings.token() == "tok-3"
    db_url, mq_url = settings.database_url, settings.broker_url
    shown = " ".join(
        [
            repr(settings),
            str(settings),
            repr(settings.model_dump()),
            settings.model_dump_json(),
            str(settings.model_dump(mode="json")),
            f"{db_url} {mq_url} {db_url!r} {db_url:>80}",
            "%s %r" % (db_url, mq_url),  # noqa: UP031
            "{} {}".format(db_url, mq_url),  # noqa: UP032
            str(db_url),
        ]
    )
    for secret in ("pw-db-1", "pw-mq-2", "tok-3"):
        assert secret not in shown
    assert "postgresql+psycopg2://me:***@db/scout" in shown
    # A URL put in without validation (resolve() does this) is masked too.
    copied = settings.model_copy(update={"broker_url": "amqp://me:pw-mq-9@mq//"})
    assert "pw-mq-9" not in repr(copied) + copied.model_dump_json() + f"{copied.broker_url}"
    assert copied.broker_url_value() == "amqp://me:pw-mq-9@mq//"
    assert math.isclose(settings.tick_seconds, 30.0)
