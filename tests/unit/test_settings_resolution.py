"""Where the URLs come from: a set variable wins, else the `scout-tasks dev` running here.

No server is needed: a "running" dev is a ``.scout/dev.json`` whose postgres pid
is alive and named by ``.scout/pgdata/postmaster.pid`` (here, this test's pid).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
from sqlalchemy.engine import make_url

from scout_tasks import broker, cli
from scout_tasks.dev import state
from scout_tasks.dev.postgres import database_url
from scout_tasks.errors import ConfigurationError
from scout_tasks.publisher import ConfirmingPublisher
from scout_tasks.settings import Settings, get_settings, resolve

ENV_DB = "postgresql+psycopg2://env@db.example:5432/scout"
ENV_BROKER = "amqp://env:secret@mq.example:5672//"


def _no_scout_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("SCOUT_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty project folder, the current directory, with no SCOUT_* variable set."""
    _no_scout_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _record_dev(folder: Path, postgres_pid: int, *, postmaster_pid: int | None = None) -> None:
    """Write the state a running `scout-tasks dev` leaves in ``folder``."""
    layout = state.Layout.here(folder)
    layout.pgdata.mkdir(parents=True)
    if postmaster_pid is not None:
        (layout.pgdata / "postmaster.pid").write_text(f"{postmaster_pid}\n{layout.pgdata}\n")
    state.write_state(
        layout,
        state.DevInstance(
            folder=str(layout.folder),
            database_url=database_url(layout.socket_dir),
            broker_url=broker.filesystem_url(layout.broker_dir),
            postgres_pid=postgres_pid,
            dev_pid=postgres_pid,
            pgdata=str(layout.pgdata),
            started_at=state.now_iso(),
        ),
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _settings(**values: str) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


# --- resolution -----------------------------------------------------------------------


def test_set_urls_win_over_a_running_dev(folder: Path) -> None:
    _record_dev(folder, os.getpid(), postmaster_pid=os.getpid())

    settings = resolve(_settings(database_url=ENV_DB, broker_url=ENV_BROKER))

    assert settings.database_url_value() == ENV_DB
    assert settings.broker_url_value() == ENV_BROKER


def test_set_urls_need_no_dev_at_all(folder: Path) -> None:
    settings = resolve(_settings(database_url=ENV_DB, broker_url=ENV_BROKER))

    assert (settings.database_url_value(), settings.broker_url_value()) == (ENV_DB, ENV_BROKER)


def test_unset_urls_are_the_running_devs(folder: Path) -> None:
    _record_dev(folder, os.getpid(), postmaster_pid=os.getpid())
    socket_dir = folder.resolve() / ".scout" / "run"

    settings = resolve(_settings())

    assert settings.database_url is not None
    url = make_url(settings.database_url_value())
    assert (url.drivername, url.username, url.database) == (
        "postgresql+psycopg2",
        "postgres",
        "scout",
    )
    assert url.host is None  # the Unix socket only
    assert url.query["host"] == str(socket_dir)
    assert settings.broker_url_value() == f"filesystem://localhost{folder.resolve()}/.scout/broker"


def test_each_url_resolves_on_its_own(folder: Path) -> None:
    _record_dev(folder, os.getpid(), postmaster_pid=os.getpid())

    settings = resolve(_settings(database_url=ENV_DB))

    assert settings.database_url_value() == ENV_DB
    assert settings.broker_url is not None
    assert settings.broker_url_value().startswith("filesystem://")


def test_the_environment_wins_through_get_settings(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record_dev(folder, os.getpid(), postmaster_pid=os.getpid())
    monkeypatch.setenv("SCOUT_DATABASE_URL", ENV_DB)
    monkeypatch.setenv("SCOUT_BROKER_URL", ENV_BROKER)

    settings = get_settings()

    assert (settings.database_url_value(), settings.broker_url_value()) == (ENV_DB, ENV_BROKER)


def test_an_empty_variable_means_unset(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCOUT_DATABASE_URL", "")

    assert Settings(_env_file=None).database_url is None  # type: ignore[call-arg]


def _one_line_error(info: pytest.ExceptionInfo[ConfigurationError]) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_no_dev_here_is_one_line_naming_the_folder(folder: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(_settings())

    message = _one_line_error(info)
    assert f"no `scout-tasks dev` running in {folder.resolve()}" in message
    assert "SCOUT_DATABASE_URL" in message


def test_a_dev_json_with_a_dead_postgres_pid_is_the_same_error(folder: Path) -> None:
    _record_dev(folder, _dead_pid())

    with pytest.raises(ConfigurationError) as info:
        resolve(_settings())

    message = _one_line_error(info)
    assert "no `scout-tasks dev` running in" in message
    assert "has stopped" in message


def test_a_live_pid_that_is_not_the_folders_postgres_counts_as_stopped(folder: Path) -> None:
    # The pid was reused by an unrelated process: postmaster.pid is gone.
    _record_dev(folder, os.getpid(), postmaster_pid=None)

    with pytest.raises(ConfigurationError):
        resolve(_settings())


def test_an_unset_broker_is_refused_only_where_a_broker_is_needed(folder: Path) -> None:
    # `db upgrade`, `schedules list` or Alembic need the database only.
    settings = resolve(_settings(database_url=ENV_DB))
    assert settings.database_url_value() == ENV_DB
    assert settings.broker_url is None

    with pytest.raises(ConfigurationError) as info:
        ConfirmingPublisher(settings.broker_url_value(), settings.exchange)

    message = _one_line_error(info)
    assert "no SCOUT_BROKER_URL set and no `scout-tasks dev` running in" in message
    assert "SCOUT_DATABASE_URL" not in message


def test_an_unreadable_dev_json_is_no_dev(folder: Path) -> None:
    (folder / ".scout").mkdir()
    (folder / ".scout" / "dev.json").write_text("{not json")

    with pytest.raises(ConfigurationError):
        resolve(_settings())


# --- commands ---------------------------------------------------------------------------


def test_a_command_that_needs_the_servers_says_so_in_one_line(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["schedules", "list"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("scout-tasks: error: no SCOUT_DATABASE_URL")
    assert "Traceback" not in err


def test_cron_next_needs_no_server(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["cron", "next", "0 12 * * *", "--after", "2024-01-01T00:00:00Z", "-n", "2"])

    assert code == 0
    assert capsys.readouterr().out.split() == [
        "2024-01-01T12:00:00+00:00",
        "2024-01-02T12:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({}, "SCOUT_DATABASE_URL or SCOUT_BROKER_URL"),
        ({"SCOUT_DATABASE_URL": ENV_DB}, "SCOUT_BROKER_URL"),
    ],
    ids=["nothing set", "database set"],
)
def test_celery_with_no_dev_prints_one_line_and_exits(
    folder: Path, given: dict[str, str], named: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SCOUT_")}
    env.update(given)
    celery = str(Path(sys.executable).with_name("celery"))

    result = subprocess.run(
        [celery, "-A", "scout_tasks", "beat"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"no {named} set and no `scout-tasks dev` running in" in lines[0]


# --- the filesystem broker --------------------------------------------------------------


def test_an_amqp_url_needs_no_transport_options() -> None:
    assert broker.broker_transport_options(ENV_BROKER) == {}


def test_a_filesystem_url_names_its_folders_and_creates_them(tmp_path: Path) -> None:
    layout = state.Layout.here(tmp_path)

    options = broker.broker_transport_options(broker.filesystem_url(layout.broker_dir))

    root = layout.broker_dir
    assert options["data_folder_in"] == options["data_folder_out"] == str(root / "queue")
    assert options["control_folder"] == str(root / "control")
    assert (root / "queue").is_dir()
    assert (root / "control").is_dir()


@pytest.mark.parametrize("url", ["filesystem://", "filesystem://localhost/"])
def test_a_filesystem_url_without_a_folder_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="SCOUT_BROKER_URL"):
        broker.broker_transport_options(url)


def test_a_consumer_skips_a_message_still_being_written(tmp_path: Path) -> None:
    url = broker.filesystem_url(state.Layout.here(tmp_path).broker_dir)
    options = broker.broker_transport_options(url)
    queue_dir = Path(options["data_folder_in"])
    with kombu.Connection(url, transport_options=options) as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.FilesystemChannel)
        # Created but not written yet, and written under its writer's lock:
        # what kombu's own publisher leaves visible for a moment.
        (queue_dir / "1_a.q.msg").write_bytes(b"")
        locked = (queue_dir / "2_b.q.msg").open("wb")
        fcntl.flock(locked.fileno(), fcntl.LOCK_EX)
        locked.write(b'{"half":')
        locked.flush()
        try:
            channel._put("q", {"whole": True})
            assert channel._get("q") == {"whole": True}
            with pytest.raises(broker.Empty):
                channel._get("q")
        finally:
            locked.close()
        assert sorted(p.name for p in queue_dir.iterdir()) == ["1_a.q.msg", "2_b.q.msg"]


def test_an_undecodable_message_is_set_aside_not_fatal(tmp_path: Path) -> None:
    url = broker.filesystem_url(state.Layout.here(tmp_path).broker_dir)
    options = broker.broker_transport_options(url)
    queue_dir = Path(options["data_folder_in"])
    (queue_dir / "0_a.q.msg").write_bytes(b"not json")
    with kombu.Connection(url, transport_options=options) as connection:
        channel = connection.default_channel
        channel._put("q", {"n": 1})

        assert channel._get("q") == {"n": 1}

    assert [p.name for p in queue_dir.iterdir()] == ["0_a.q.msg.bad"]


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("SCOUT_DATABASE_URL", "postgresql+psycopg2://scout@db:Hunter2Secret/scout"),
        ("SCOUT_DATABASE_URL", "postgresql+psycopg2://scout:Hunter2Secret@db:54x/scout"),
        ("SCOUT_BROKER_URL", "amqp://scout:Hunter2#Secret@mq:5672//"),
        ("SCOUT_BROKER_URL", "amqp://scout@mq:Hunter2Secret//"),
    ],
)
def test_a_malformed_url_is_one_line_naming_the_variable_not_the_value(
    variable: str, url: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOUT_DATABASE_URL", ENV_DB)
    monkeypatch.setenv("SCOUT_BROKER_URL", ENV_BROKER)
    monkeypatch.setenv(variable, url)
    get_settings.cache_clear()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("scout-tasks")), "status"],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"scout-tasks: error: {variable}: not a valid URL "
        "(percent-encode special characters in the password)"
    ]
    assert "Hunter2" not in result.stderr + result.stdout


def test_percent_encoded_passwords_and_local_transports_are_valid() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url="postgresql+psycopg2://scout:Hunter%232@db:5432/scout",
        broker_url="filesystem://localhost/tmp/scout-broker",
    )
    assert make_url(settings.database_url_value()).password == "Hunter#2"
    assert settings.broker_url_value() == "filesystem://localhost/tmp/scout-broker"
