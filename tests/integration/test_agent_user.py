"""deploy/rabbitmq/agent-user.sh on the real RabbitMQ: the agents' user is held to the contract.

The script runs against a vhost and a user made for this test (both deleted
afterwards); the user then tries, over AMQP, everything an agent does and
things it must not do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import amqp
import pytest

from tests.conftest import AMQP_ROOT

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "agent-user.sh"
CTL = shutil.which("rabbitmqctl")


def _ctl(*args: str) -> None:
    assert CTL is not None
    subprocess.run([CTL, "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def agent() -> Iterator[dict[str, str]]:
    if CTL is None:
        pytest.skip("rabbitmqctl is not available on this host")
    vhost = f"scout-agent-test-{uuid.uuid4().hex[:8]}"
    user = f"scout-agent-test-{uuid.uuid4().hex[:8]}"
    # A password a shell or a regex would mangle if the script quoted it wrongly.
    password = "-p4ss word$with'quotes\"*"
    _ctl("add_vhost", vhost)
    env = {
        **os.environ,
        "SCOUT_AGENT_USER": user,
        "SCOUT_AGENT_PASSWORD": "first",
        "SCOUT_AGENT_VHOST": vhost,
        "SCOUT_EXCHANGE": "scout",
    }
    try:
        # Twice: the second run finds the user and changes its password.
        for secret in ("first", password):
            subprocess.run(
                ["bash", str(SCRIPT)],
                env={**env, "SCOUT_AGENT_PASSWORD": secret},
                check=True,
                capture_output=True,
                timeout=120,
            )
        yield {"user": user, "password": password, "vhost": vhost}
    finally:
        subprocess.run([CTL, "-q", "delete_user", user], capture_output=True, timeout=60)
        subprocess.run([CTL, "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def _connect(agent: dict[str, str], password: str | None = None) -> amqp.Connection:
    host = urlsplit(AMQP_ROOT).hostname or "127.0.0.1"
    port = urlsplit(AMQP_ROOT).port or 5672
    conn = amqp.Connection(
        f"{host}:{port}",
        userid=agent["user"],
        password=agent["password"] if password is None else password,
        virtual_host=agent["vhost"],
        connect_timeout=5,
    )
    conn.connect()
    return conn


def _allowed(conn: amqp.Connection, action: Callable[[Any], object]) -> bool:
    """Run ``action`` on a fresh channel: True if the broker accepted it.

    A refused publish closes the channel asynchronously; publishing with
    confirms makes the refusal (or the ack) arrive before this returns.
    """
    channel = conn.channel()
    try:
        action(channel)
    except amqp.exceptions.AccessRefused:
        return False
    channel.close()
    return True


def _publish(routing_key: str, exchange: str = "scout") -> Callable[[Any], object]:
    return lambda ch: ch.basic_publish_confirm(
        amqp.Message(b"{}", content_type="application/json"),
        exchange=exchange,
        routing_key=routing_key,
    )


def test_agent_user_may_do_what_an_agent_does_and_nothing_else(agent: dict[str, str]) -> None:
    with pytest.raises(amqp.exceptions.AccessRefused):
        _connect(agent, password="first")  # the second run changed it
    conn = _connect(agent)
    try:
        # What an agent does: declare the exchange as the contract pins it,
        # its own queue, bind it for triggers and cancellations, report back.
        assert _allowed(conn, lambda ch: ch.exchange_declare("scout", "topic", durable=True))
        queue = "scout-agent.triggers"
        assert _allowed(conn, lambda ch: ch.queue_declare(queue, durable=True))
        assert _allowed(conn, lambda ch: ch.queue_bind(queue, "scout", "scout.trigger"))
        assert _allowed(conn, lambda ch: ch.queue_bind(queue, "scout", "scout.cancelled"))
        for event in ("started", "progress", "completed", "failed"):
            assert _allowed(conn, _publish(f"scout.{event}")), event
        assert _allowed(conn, lambda ch: ch.basic_get(queue))

        # What it must not: forge triggers or cancellations, eavesdrop on the
        # agents' reports, use other exchanges or queues.
        assert not _allowed(conn, _publish("scout.trigger"))
        assert not _allowed(conn, _publish("scout.cancelled"))
        assert not _allowed(conn, _publish("scout.started.extra"))
        assert not _allowed(conn, _publish("scout-tasks", exchange=""))
        assert not _allowed(conn, lambda ch: ch.queue_bind(queue, "scout", "scout.completed"))
        assert not _allowed(conn, lambda ch: ch.queue_bind(queue, "scout", "#"))
        assert not _allowed(conn, lambda ch: ch.queue_declare("scout-tasks", durable=True))
        assert not _allowed(conn, lambda ch: ch.exchange_declare("other", "topic"))
        assert not _allowed(conn, _publish("scout.started", exchange="amq.topic"))
    finally:
        conn.close()


def test_the_script_refuses_to_run_without_a_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_AGENT")}
    env["SCOUT_AGENT_USER"] = "nobody-should-be-created"
    env["RABBITMQCTL"] = "/bin/false"
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "SCOUT_AGENT_PASSWORD is required" in result.stderr
