"""docker-compose.yml is safe by default: read, since Docker does not run here.

No default password, nothing sensitive published beyond loopback, Flower
behind basic auth with no unauthenticated API, a healthcheck on every
long-running service. When a compose CLI is installed, it must also accept the
file with .env.example's variables filled in and refuse it without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
REQUIRED = re.compile(r"^\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}$")
SECRET_KEY = re.compile(r"PASSWORD|PASS$|TOKEN|SECRET|BASIC_AUTH")
# scheme://user:password@host
URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://(?:\$\{[^}]*\}|[^:/@$]*):(.*)@[^@]*$")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping, so it can be checked"
    return {str(k): str(v) for k, v in env.items()}


def _required_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))


def test_every_password_is_a_required_variable() -> None:
    checked = 0
    for name, service in SERVICES.items():
        for key, value in _environment(service).items():
            if SECRET_KEY.search(key):
                assert REQUIRED.match(value), f"{name}: {key} must be ${{VAR:?message}}"
                checked += 1
            url = URL_PASSWORD.match(value)
            if url:
                assert REQUIRED.match(url.group(1)), f"{name}: the password in {key}"
                checked += 1
    # postgres, rabbitmq (admin + agents), the two URLs and the token per app
    # service, Flower's basic auth.
    assert checked >= 10
    assert "guest" not in COMPOSE_TEXT


def test_nothing_sensitive_is_published_beyond_loopback() -> None:
    for name in ("flower", "rabbitmq"):
        ports = SERVICES[name].get("ports", [])
        assert ports, name
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
    (api_port,) = SERVICES["api"]["ports"]
    assert api_port.startswith("${SCOUT_API_BIND:-127.0.0.1}:"), api_port
    for name in ("postgres", "migrate", "beat", "worker"):
        assert not SERVICES[name].get("ports"), f"{name} needs no published port"


def test_flower_needs_basic_auth_and_has_no_unauthenticated_api() -> None:
    assert "FLOWER_UNAUTHENTICATED_API" not in COMPOSE_TEXT
    flower = _environment(SERVICES["flower"])
    assert REQUIRED.match(flower["FLOWER_BASIC_AUTH"])
    assert not any("unauthenticated" in str(arg) for arg in SERVICES["flower"]["command"])


def test_api_requires_a_token() -> None:
    for name in ("api", "beat", "worker", "flower"):
        assert REQUIRED.match(_environment(SERVICES[name])["SCOUT_API_TOKEN"]), name


def _healthcheck(name: str) -> str:
    check = SERVICES[name].get("healthcheck")
    assert check and check.get("test"), f"{name} has no healthcheck"
    test = check["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_every_long_running_service_has_a_healthcheck() -> None:
    # Only the beat's own health: a restart cannot fix overdue schedules or the outbox.
    assert _healthcheck("beat").endswith("scout-tasks status --only beat")
    worker = _healthcheck("worker")
    assert "inspect ping" in worker and "celery@$$HOSTNAME" in worker
    assert "/readyz" in _healthcheck("api")
    assert "pg_isready" in _healthcheck("postgres")
    rabbit = _healthcheck("rabbitmq")
    assert "ping" in rabbit and "scout-agent-user.done" in rabbit


def test_rabbitmq_creates_the_limited_agent_user() -> None:
    rabbit = SERVICES["rabbitmq"]
    assert "./deploy/rabbitmq:/scout:ro" in rabbit["volumes"]
    assert rabbit["entrypoint"] == ["bash", "/scout/entrypoint.sh"]
    entrypoint = (ROOT / "deploy" / "rabbitmq" / "entrypoint.sh").read_text()
    assert "/scout/agent-user.sh" in entrypoint
    assert "scout-agent-user.done" in entrypoint
    env = _environment(rabbit)
    assert REQUIRED.match(env["SCOUT_AGENT_PASSWORD"])
    assert REQUIRED.match(env["RABBITMQ_DEFAULT_PASS"])


def test_env_example_names_every_required_variable() -> None:
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert _required_variables(COMPOSE_TEXT) <= named
    # And it sets no secret: a copied example must not start with a password.
    for line in example.splitlines():
        key, _, value = line.partition("=")
        if not line.startswith("#") and SECRET_KEY.search(key):
            assert value == "", f".env.example ships a value for {key}"


def test_the_image_has_flower_for_the_flower_service() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install '.[flower]'" in dockerfile
    assert SERVICES["flower"]["image"] == "scout-tasks:latest"


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose CLI installed")
def test_compose_cli_accepts_the_filled_example_and_refuses_without(tmp_path: Path) -> None:
    cli = _compose_cli()
    assert cli is not None
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_TEXT)
    base_env = {"PATH": "/usr/bin:/bin"}
    missing = subprocess.run(
        [*cli, "config", "-q"], cwd=tmp_path, env=base_env, capture_output=True, text=True
    )
    assert missing.returncode != 0
    assert "in .env (see .env.example)" in missing.stdout + missing.stderr

    filled = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and not value:
            value = "admin:secret" if key == "FLOWER_BASIC_AUTH" else f"{key.lower()}-x"
        filled.append(f"{key}{sep}{value}")
    (tmp_path / ".env").write_text("\n".join(filled) + "\n")
    result = subprocess.run(
        [*cli, "config"], cwd=tmp_path, env=base_env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    worker_env = resolved["services"]["worker"]["environment"]
    assert worker_env["SCOUT_DATABASE_URL"].endswith(":postgres_password-x@postgres:5432/scout")
    assert worker_env["SCOUT_API_TOKEN"] == "scout_api_token-x"
