"""``/docs`` and ``/redoc`` work without internet: every asset they load comes from this app.

The pages' assets are read from the ``fastapi-offline`` package; these tests fetch
every URL the pages reference from the app itself, then render ``/docs`` in
headless Chromium with every host name but the loopback unresolvable, and look
for the operations in the DOM the page's JavaScript built.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks.api import create_app
from scout_tasks.settings import Settings
from tests.integration.live import serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Offline, whatever this machine can reach: only the loopback resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
# src="..." and href="..." in the HTML, and the spec URL Swagger UI / ReDoc load.
REFERENCES = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ?'([^']+)'""")


@pytest.fixture
def settings(db_url: str, broker_url: str, exchange_name: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=db_url, broker_url=broker_url, exchange=exchange_name
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCES.findall(html)]


@pytest.mark.parametrize(
    ("page", "needed"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}),
        ("/redoc", {"redoc.standalone.js", "openapi.json"}),
    ],
)
def test_every_asset_of_the_docs_is_served_by_the_app(
    client: TestClient, page: str, needed: set[str]
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "://" not in html, html  # no absolute URL: nothing comes from another host
    urls = _references(html)
    assert needed <= {url.rsplit("/", 1)[-1] for url in urls}, urls
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        asset = client.get(url)
        assert asset.status_code == 200, url
        if url.endswith(".js"):
            assert "javascript" in asset.headers["content-type"]
            assert len(asset.content) > 100_000, url  # the real bundle, not a stub
        elif url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css")
    assert client.get("/docs-assets/no-such-file.js").status_code == 404


@pytest.mark.browser
@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"headless Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
)
def test_docs_render_the_operations_offline_in_chromium(settings: Settings, tmp_path: Path) -> None:
    screenshot = tmp_path / "docs.png"
    with serve(create_app(settings)) as url:
        done = subprocess.run(
            [
                str(CHROMIUM),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=10000",
                "--window-size=1400,2400",
                f"--screenshot={screenshot}",
                "--dump-dom",
                f"{url}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    dom = done.stdout
    (tmp_path / "docs.html").write_text(dom)
    # Built by Swagger UI's script from /openapi.json: the served HTML has none of these.
    assert 'id="operations-schedules-create_schedule"' in dom, f"see {screenshot}"
    assert 'id="operations-runs-list_runs"' in dom
    assert "/api/scout/runs/{id}/cancel" in dom
    assert "Failed to load API definition" not in dom
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
