"""Bad input is exit 2 naming the field even when no server answers: it is judged first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scout_tasks import cli
from scout_tasks.settings import get_settings

# Nothing listens on port 1: a command that connects first fails with exit 1.
NOWHERE = "postgresql+psycopg2://nobody@127.0.0.1:1/none"


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SCOUT_DATABASE_URL", NOWHERE)
    monkeypatch.setenv("SCOUT_BROKER_URL", "amqp://guest:guest@127.0.0.1:1//")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("args", [["runs", "show", "nope"], ["runs", "cancel", "nope"]])
def test_a_malformed_run_id_is_exit_2_without_a_database(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["scout-tasks: error: id: 'nope' is not a UUID"]


def test_a_malformed_backfill_instant_is_exit_2_without_a_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["schedules", "backfill", "x", "--from", "nope", "--to", "2024-01-01", "--dry-run"]
    assert cli.main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        "scout-tasks: error: from: 'nope' is not an ISO 8601 timestamp"
    ]
