"""Secrets stay secret: no password or API token in logs, banners or error messages.

The database and broker URLs carry passwords (PostgreSQL here trusts local clients,
so any password connects; the broker URLs with a password point at a closed port, so
the processes keep retrying and logging). Every captured output, from real
``celery -A scout_tasks worker|beat`` processes, the ``scout-tasks`` script, the
``scout-tasks api`` server and the API's responses, must not contain them, while the
masked URL (``***``) shows that the URL was indeed printed.

Also: SQL is built only with bound parameters, checked by reading the source of every
``scout_tasks/*.py`` module.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import kombu
import pytest
from kombu import Exchange, Producer
from sqlalchemy.engine import make_url
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks.api import create_app
from scout_tasks.settings import Settings
from tests import reliability
from tests.e2e.procs import CeleryProcess, scout_env, stop_all
from tests.integration.helpers import REPO_ROOT, SCOUT_TASKS, run_cli

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SUITE = "secrets"
DB_PASSWORD = "S3cretPW"
AMQP_PASSWORD = "S3cretAMQP"
TOKEN = "T0ken-S3cret-9f2c"
SECRETS = (DB_PASSWORD, AMQP_PASSWORD, TOKEN)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_password(url: str, password: str = DB_PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def leaks(text: str) -> list[str]:
    """The secrets found in ``text``."""
    return [secret for secret in SECRETS if secret in text]


def record(checked: str, outputs: int, leaked: list[str]) -> None:
    reliability.record(SUITE, checked=checked, outputs=outputs, leaks=len(leaked), problems=leaked)


# --- celery worker and beat ----------------------------------------------------------------


def _wait(proc: CeleryProcess, text: str, timeout: float = 60) -> str:
    """Wait for ``text`` in the log; return '' or what went wrong (the process may exit)."""
    try:
        proc.wait_for(text, timeout=timeout)
    except AssertionError as exc:
        return f"{proc.kind}: {str(exc)[:300]}"
    return ""


def _publish_started(broker_url: str, exchange: str) -> None:
    """An agent's scout.started, so the worker's lifecycle consumer needs the database."""
    event_id = str(uuid.uuid4())
    body = {
        "event_id": event_id,
        "event_type": "scout.started",
        "run_id": str(uuid.uuid4()),
        "source": "stratninja",
    }
    with kombu.Connection(broker_url) as conn:
        Producer(conn.default_channel).publish(
            json.dumps(body).encode(),
            exchange=Exchange(exchange, type="topic", durable=True),
            routing_key="scout.started",
            content_type="application/json",
            message_id=event_id,
            delivery_mode=2,
        )


def test_celery_worker_and_beat_never_print_a_password(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> None:
    db_ok = with_password(db_url)
    db_down = f"postgresql+psycopg2://postgres:{DB_PASSWORD}@127.0.0.1:{closed_port()}/scout"
    broker_down = f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{closed_port()}//"
    token = {"SCOUT_API_TOKEN": TOKEN}
    consuming = scout_env(db_down, broker_url, exchange_name, **token)
    queue = consuming["SCOUT_TASK_QUEUE"]
    procs = {
        # banner, then "Cannot connect to amqp://..." while the broker stays away
        "worker, broker down": CeleryProcess(
            "worker", scout_env(db_ok, broker_down, exchange_name, **token), tmp_path
        ),
        # banner with both URLs, then failed sends of the tick
        "beat, broker down": CeleryProcess(
            "beat", scout_env(db_ok, broker_down, exchange_name, **token), tmp_path
        ),
        # "database unavailable" on every pass
        "beat, database down": CeleryProcess(
            "beat", scout_env(db_down, broker_url, exchange_name, **token), tmp_path
        ),
        # the lifecycle consumer meets the database error when an event arrives
        "worker, database down": CeleryProcess("worker", consuming, tmp_path),
    }
    problems: list[str] = []
    try:
        problems += [
            _wait(procs["worker, broker down"], "Cannot connect to"),
            _wait(procs["beat, broker down"], "could not send"),
            _wait(procs["beat, database down"], "database unavailable"),
            _wait(procs["worker, database down"], "consuming lifecycle events"),
        ]
        _publish_started(broker_url, exchange_name)
        problems.append(_wait(procs["worker, database down"], "database unavailable"))
        # One more retry round each, so every error path has logged more than once.
        time.sleep(3)
    finally:
        stop_all(procs.values())
        with kombu.Connection(broker_url) as conn:
            for name in (queue, f"{queue}.lifecycle.v2", f"{queue}.lifecycle.v2.dead"):
                with contextlib.suppress(Exception):
                    conn.default_channel.queue_delete(queue=name)

    logs = {label: proc.log() for label, proc in procs.items()}
    leaked = [f"{label}: {secret}" for label, text in logs.items() for secret in leaks(text)]
    record(
        "celery worker and beat banners and retry logs, broker or database unreachable",
        len(logs),
        leaked,
    )
    assert [p for p in problems if p] == []
    assert leaked == [], "\n".join(leaked)
    # The URLs were printed, masked.
    assert "amqp://guest:**@127.0.0.1:" in logs["worker, broker down"]
    assert "postgres:***@" in logs["beat, broker down"]
    assert "postgres:***@" in logs["beat, database down"]


# --- the command line -------------------------------------------------------------------------

# How an operator may write a password into a PostgreSQL URL; SQLAlchemy and libpq
# accept every one of these, so a log must not show any of them.
DATABASE_URLS = {
    "plain": "postgresql+psycopg2://postgres:{pw}@127.0.0.1:{port}/scout",
    "'#' in the password": "postgresql+psycopg2://postgres:{pw}#1@127.0.0.1:{port}/scout",
    "'/' in the password": "postgresql+psycopg2://postgres:{pw}/1@127.0.0.1:{port}/scout",
    "'?' in the password": "postgresql+psycopg2://postgres:{pw}?1@127.0.0.1:{port}/scout",
    "password= parameter": "postgresql+psycopg2://postgres@127.0.0.1:{port}/scout?password={pw}",
}


@pytest.mark.parametrize("form", list(DATABASE_URLS))
def test_the_cli_never_prints_the_database_password(form: str, tmp_path: Path) -> None:
    url = DATABASE_URLS[form].format(pw=DB_PASSWORD, port=closed_port())
    env = {
        "SCOUT_DATABASE_URL": url,
        "SCOUT_BROKER_URL": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{closed_port()}//",
        "SCOUT_API_TOKEN": TOKEN,
    }
    # The two ways the URL reaches the terminal: the one-line error of any command
    # that needs the database, and db upgrade's "migrating <url>" banner.
    commands = [("schedules", "list"), ("db", "upgrade"), ("status",)]
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda args: run_cli(*args, env=env, cwd=tmp_path), commands))
    outputs = {" ".join(c): r.stdout + r.stderr for c, r in zip(commands, results, strict=True)}
    leaked = [
        f"{command}: {output.strip()[:300]!r}"
        for command, output in outputs.items()
        if leaks(output)
    ]
    record(f"scout-tasks with an unreachable database, URL form: {form}", len(outputs), leaked)
    assert leaked == [], "\n".join(leaked)
    for result in results:
        assert result.returncode == 1, result.stderr
        assert "database" in result.stderr and "Traceback" not in result.stderr


def test_the_cli_warning_about_an_unreachable_broker_hides_its_password(
    db_url: str, tmp_path: Path
) -> None:
    env = {
        "SCOUT_DATABASE_URL": with_password(db_url),
        "SCOUT_BROKER_URL": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{closed_port()}//",
    }
    result = run_cli("trigger", "--source", "s", "--max-strategies", "1", env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    record("scout-tasks trigger with the broker unreachable", 1, leaks(output))
    assert result.returncode == 0, result.stderr
    assert "outbox" in result.stderr
    assert leaks(output) == []


# --- the HTTP API ----------------------------------------------------------------------------


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def _client(database_url: str, broker_url: str) -> TestClient:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=database_url,
        broker_url=broker_url,
        exchange=f"scout-test-{uuid.uuid4().hex[:10]}",
        api_token=TOKEN,
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _everything(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.status_code}\n{headers}\n{response.text}"


def test_api_responses_and_logs_never_show_a_password_or_the_token(
    db_url: str, all_logs: pytest.LogCaptureFixture
) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    broker_down = f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{closed_port()}//"
    db_down = f"postgresql+psycopg2://postgres:{DB_PASSWORD}@127.0.0.1:{closed_port()}/scout"
    trigger = {"source": "s", "max_strategies": 1}
    responses: dict[str, httpx.Response] = {}
    with _client(db_down, broker_down) as client:
        responses["healthz, both down"] = client.get("/healthz")
        responses["readyz, both down"] = client.get("/readyz")
        responses["list, database down"] = client.get("/api/scout/schedules")
        responses["metrics, database down"] = client.get("/metrics")
        responses["trigger, database down"] = client.post(
            "/api/scout/trigger", json=trigger, headers=good
        )
    with _client(with_password(db_url), broker_down) as client:
        responses["healthz, broker down"] = client.get("/healthz")
        responses["metrics"] = client.get("/metrics")
        responses["trigger, broker down"] = client.post(
            "/api/scout/trigger", json=trigger, headers=good
        )
        responses["wrong token"] = client.post("/api/scout/trigger", json=trigger, headers=wrong)
        responses["bad body"] = client.post("/api/scout/schedules", content=b"{", headers=good)
        responses["not found"] = client.get(f"/api/scout/runs/{uuid.uuid4()}", headers=good)

    leaked = [
        f"{label}: {secret}" for label, r in responses.items() for secret in leaks(_everything(r))
    ]
    leaked += [f"log: {secret}" for secret in leaks(all_logs.text)]
    record("API responses and logs: /healthz, 503s, 401, 422, 404", len(responses) + 1, leaked)
    assert leaked == [], "\n".join(leaked)
    # The failures did happen (and were logged), so the check above saw real errors.
    assert responses["healthz, both down"].status_code == 503
    assert responses["list, database down"].status_code == 503
    assert responses["trigger, broker down"].headers["Scout-Event"] == "queued"
    assert responses["wrong token"].status_code == 401
    assert any(r.levelno >= logging.WARNING for r in all_logs.records)


def test_the_api_server_logs_neither_passwords_nor_the_token(db_url: str, tmp_path: Path) -> None:
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(
        SCOUT_DATABASE_URL=with_password(db_url),
        SCOUT_BROKER_URL=f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{closed_port()}//",
        SCOUT_API_TOKEN=TOKEN,
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [SCOUT_TASKS, "api", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        good = {"Authorization": f"Bearer {TOKEN}"}
        body = {"name": "n", "cron_expression": "0 * * * *", "source": "s", "max_strategies": 1}
        statuses = [
            httpx.get(f"{base}/healthz").status_code,
            httpx.post(f"{base}/api/scout/schedules", json=body, headers=good).status_code,
            httpx.post(
                f"{base}/api/scout/schedules",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}!"},
            ).status_code,
            httpx.post(
                f"{base}/api/scout/trigger", json={"source": "s", "max_strategies": 1}, headers=good
            ).status_code,
            httpx.post(f"{base}/api/scout/schedules", content=b"{", headers=good).status_code,
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    output = log_path.read_text(errors="replace")
    record("scout-tasks api server output while serving (access log included)", 1, leaks(output))
    assert statuses == [503, 201, 401, 201, 422], output[-2000:]
    assert "/api/scout/trigger" in output  # the access log was captured
    assert leaks(output) == []


# --- the settings themselves -----------------------------------------------------------------

SHOW_SETTINGS = """
import logging, traceback
from scout_tasks.settings import get_settings
settings = get_settings()
print(repr(settings))
print(settings)
print(repr(settings.database_url), repr(settings.broker_url), repr(settings.api_token))
print(settings.api_token, settings.model_dump())
print(settings.model_dump_json(), settings.model_dump(mode="json"))
print(f"{settings.database_url} {settings.broker_url}", "%s" % settings.broker_url)
print("{}".format(settings.database_url), str(settings.broker_url))
logging.basicConfig(level=logging.INFO)
logging.getLogger("check").info("settings: %r", settings)
try:
    raise RuntimeError(settings)
except RuntimeError:
    traceback.print_exc()
"""


def test_repr_and_str_of_the_settings_show_no_password_or_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(
        SCOUT_DATABASE_URL=f"postgresql://postgres:{DB_PASSWORD}@db.example:5432/scout",
        SCOUT_BROKER_URL=f"amqp://scout:{AMQP_PASSWORD}@mq.example:5672//",
        SCOUT_API_TOKEN=TOKEN,
    )
    result = subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    record("repr/str/model_dump of the settings, a log line, a traceback", 1, leaks(output))
    assert result.returncode == 0, output
    assert leaks(output) == [], output
    assert "postgres:***@db.example" in output and "scout:***@mq.example" in output
    assert "SecretStr('**********')" in output and "Traceback" in output


def test_a_refused_setting_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    env = {
        "SCOUT_DATABASE_URL": f"mysql://root:{DB_PASSWORD}@127.0.0.1:{closed_port()}/scout",
        "SCOUT_BROKER_URL": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{closed_port()}//",
    }
    result = run_cli("status", env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    record("a refused SCOUT_DATABASE_URL", 1, leaks(output))
    assert result.returncode == 2, output
    assert "SCOUT_DATABASE_URL" in result.stderr
    assert leaks(output) == []


# --- SQL only through bound parameters ----------------------------------------------------------

# Uppercase SQL keywords in a string's literal parts mark it as SQL (prose is lowercase).
SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|GRANT|REVOKE|TRUNCATE|LISTEN|NOTIFY|"
    r"UNLISTEN|LOCK|COPY|VALUES|WHERE|FROM|INTO|SET|EXECUTE|PREPARE|RETURNING|ANALYZE|VACUUM)\b"
)

# (module, the literal parts of the string) -> why formatting is safe there. Both are
# identifiers, which PostgreSQL cannot take as bound parameters.
VETTED = {
    ("beat.py", "LISTEN "): "LISTEN takes an identifier; CHANNEL is a module constant",
    ("beat.py", "PREPARE scout_horizon AS "): (
        "PREPARE takes a statement, not a value; it is horizon.HORIZON_QUERY, a module constant"
    ),
    ("migrate.py", 'CREATE DATABASE ""'): (
        "CREATE DATABASE takes an identifier; the name is the configured URL's, quoted, "
        "with any double quote in it doubled"
    ),
}


def formatted_sql(source: str) -> list[tuple[int, str, str]]:
    """(line, kind, literal text) of every SQL-looking string built by formatting."""
    found = []
    for node in ast.walk(ast.parse(source)):
        literal: str | None = None
        if isinstance(node, ast.JoinedStr):
            kind = "f-string"
            literal = "".join(
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            parts = [
                p.value
                for p in (node.left, node.right)
                if isinstance(p, ast.Constant) and isinstance(p.value, str)
            ]
            kind = "% formatting" if isinstance(node.op, ast.Mod) else "concatenation"
            if isinstance(node.op, ast.Mod) and not isinstance(node.left, ast.Constant):
                parts = []
            literal = " ".join(parts) if parts else None
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
            and isinstance(node.func.value.value, str)
        ):
            kind = ".format()"
            literal = node.func.value.value
        if literal is not None and SQL_WORDS.search(literal):
            found.append((node.lineno, kind, literal))
    return found


def test_the_scan_finds_sql_built_by_formatting() -> None:
    sample = (
        "a = f'SELECT * FROM t WHERE id = {x}'\n"
        "b = 'DELETE FROM t WHERE id = %s' % x\n"
        "c = 'UPDATE t SET a = {}'.format(x)\n"
        "d = 'INSERT INTO t VALUES (' + x + ')'\n"
        "e = f'schedule {x} created from the API'\n"
        "f = 'run %s: %s recorded' % (x, y)\n"
    )
    assert [kind for _line, kind, _text in formatted_sql(sample)] == [
        "f-string",
        "% formatting",
        ".format()",
        "concatenation",
    ]


def test_sql_is_built_only_with_bound_parameters() -> None:
    found: list[str] = []
    used: set[tuple[str, str]] = set()
    modules = sorted((REPO_ROOT / "scout_tasks").glob("*.py"))
    for path in modules:
        for line, kind, literal in formatted_sql(path.read_text()):
            key = (path.name, literal)
            if key in VETTED:
                used.add(key)
            else:
                found.append(f"scout_tasks/{path.name}:{line}: {kind} {literal!r}")
    stale = sorted(set(VETTED) - used)
    reliability.record(
        "sql_parameters",
        checked="SQL built by f-strings, % formatting, .format() or + in scout_tasks/*.py "
        "(static scan of the source)",
        modules=len(modules),
        formatted_sql=len(found),
        vetted_identifiers=len(VETTED),
        problems=found,
    )
    assert found == [], "SQL built by formatting; use bound parameters (or vet it here)"
    assert stale == [], f"vetted cases no longer in the code: {stale}"
