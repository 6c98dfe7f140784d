"""Fixtures the integration tests share: apps through TestClient, and the console script.

A file that needs a client or a ``cli`` of another kind defines its own fixture
of that name, which takes precedence over these.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks.api import create_app
from tests.integration.helpers import Cli, app_settings, run_cli
from tests.tcp_proxy import TcpProxy

with warnings.catch_warnings():
    # Starlette >= 1.0 prefers httpx2 and warns when it falls back to httpx; that
    # is the test extra's choice, not something these tests can fix.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

MakeClient = Callable[..., TestClient]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def make_client(db_url: str, broker_url: str, exchange_name: str) -> Iterator[MakeClient]:
    """Clients for apps on this test's database and exchange; settings may be overridden.

    No API token unless a test passes ``api_token``.
    """
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = app_settings(
            db_url, broker_url, exchange_name, **{"api_token": None, **overrides}
        )
        client = TestClient(create_app(settings))
        client.__enter__()  # runs the lifespan, so shutdown closes the publisher
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def cli(db_url: str, broker_url: str, exchange_name: str, tmp_path: Path) -> Cli:
    """The installed ``scout-tasks`` on this test's servers; keywords override SCOUT_* values."""
    env = {
        "SCOUT_DATABASE_URL": db_url,
        "SCOUT_BROKER_URL": broker_url,
        "SCOUT_EXCHANGE": exchange_name,
    }

    def run(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**env, **overrides}, cwd=tmp_path)

    return run


@pytest.fixture
def proxy(broker_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test broker (see ``tests.tcp_proxy.through``)."""
    made = TcpProxy("127.0.0.1", urlsplit(broker_url).port or 5672)
    yield made
    made.close()
