#!/usr/bin/env python3
"""Check that a running Flower shows scout-tasks' tasks, the way an operator would see them.

Flower's tasks page is an empty shell that its JavaScript fills from Flower's
own API, so fetching the HTML proves little. This loads the page in headless
Chromium (letting the scripts run), looks for the task names in the rendered
DOM and keeps a screenshot; it also asks ``/api/tasks`` directly, which tells
"Flower receives no task events" apart from "the page does not render them".

    python scripts/flower_check.py --url http://127.0.0.1:5555
    python scripts/flower_check.py --basic-auth admin:secret --screenshot /tmp/flower.png

Prints one line per check and ``OK`` or ``FAIL`` last; the exit code is 0 or 1.
Flower's API answers only with authentication or ``FLOWER_UNAUTHENTICATED_API=true``
in Flower's environment; without either that check is skipped, not failed.
Standard library only, plus a Chromium (``/usr/bin/chromium`` by default).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:5555"
DEFAULT_TASKS = ("scout_tasks.fire", "scout_tasks.tick")
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach
# Google's services, which fails noisily on a machine without internet.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class CheckError(Exception):
    """A check could not be made (as opposed to made and failed)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    dom: str
    screenshot: Path | None


def _request(url: str, auth: str | None, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return urllib.request.urlopen(request, timeout=timeout)


def healthcheck(base_url: str, auth: str | None = None, timeout: float = 5.0) -> str:
    """Flower's ``/healthcheck`` body (``OK`` when it is up)."""
    with _request(f"{base_url}/healthcheck", auth, timeout) as response:
        return response.read().decode(errors="replace").strip()


def api_tasks(
    base_url: str,
    auth: str | None = None,
    timeout: float = 10.0,
    *,
    worker: str | None = None,
    limit: int = 1000,
) -> dict[str, dict[str, Any]]:
    """The tasks Flower knows (of ``worker``, when given), by task id (``/api/tasks``).

    Raises :class:`CheckError` when the API refuses to answer (401: Flower
    runs without authentication and without ``FLOWER_UNAUTHENTICATED_API``).
    """
    params: dict[str, Any] = {"limit": limit}
    if worker:
        params["workername"] = worker
    query = urllib.parse.urlencode(params)
    try:
        with _request(f"{base_url}/api/tasks?{query}", auth, timeout) as response:
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise CheckError(
                f"/api/tasks answered {exc.code}: pass --basic-auth, or run Flower with"
                " FLOWER_UNAUTHENTICATED_API=true"
            ) from None
        raise
    if not isinstance(data, dict):
        raise CheckError(f"/api/tasks returned a JSON {type(data).__name__}, not an object")
    return data


def render(
    url: str,
    chromium: str = DEFAULT_CHROMIUM,
    *,
    screenshot: Path | None = None,
    window_size: str = "1400,900",
    budget_ms: int = 5000,
    timeout: float = 60.0,
) -> Rendered:
    """Load ``url`` once in headless Chromium and return the DOM after its scripts ran.

    ``--virtual-time-budget`` lets the page's JavaScript (and the requests it
    makes) run before the DOM is dumped; the screenshot is taken in the same
    load. A fresh profile directory keeps runs independent.
    """
    with tempfile.TemporaryDirectory(prefix="flower-check-chromium-") as profile:
        args = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={window_size}",
        ]
        if screenshot is not None:
            args.append(f"--screenshot={screenshot}")
        args += ["--dump-dom", url]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise CheckError(f"no Chromium at {chromium}") from None
        except subprocess.TimeoutExpired:
            raise CheckError(f"Chromium did not finish within {timeout}s") from None
    if done.returncode != 0 or not done.stdout.strip():
        errors = [line for line in done.stderr.splitlines() if "dbus" not in line]
        raise CheckError(
            f"Chromium exited {done.returncode} with no page: " + " | ".join(errors[-3:])
        )
    shot = screenshot if screenshot is not None and screenshot.exists() else None
    return Rendered(done.stdout, shot)


def find_chromium(candidate: str) -> str | None:
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return shutil.which(candidate)


def _with_credentials(url: str, auth: str | None) -> str:
    """Chromium sends basic-auth credentials given in the URL of a top-level navigation."""
    if not auth:
        return url
    parts = urllib.parse.urlsplit(url)
    user, _, password = auth.partition(":")
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{netloc}@{parts.netloc}"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWER_URL", DEFAULT_URL),
        help="Flower's base URL (default: $FLOWER_URL or %(default)s)",
    )
    parser.add_argument(
        "--task",
        action="append",
        dest="tasks",
        metavar="NAME",
        help="task name that must appear; repeat for alternatives"
        f" (default: {' or '.join(DEFAULT_TASKS)})",
    )
    parser.add_argument(
        "--worker",
        metavar="NAME",
        help="only this worker's tasks (e.g. celery@host), for a Flower that watches many",
    )
    parser.add_argument("--basic-auth", metavar="USER:PASS", help="Flower's basic auth")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM, help="default: %(default)s")
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=Path(tempfile.gettempdir()) / "flower.png",
        help="where to save the page (default: %(default)s)",
    )
    parser.add_argument("--no-browser", action="store_true", help="only ask the API")
    parser.add_argument("--timeout", type=float, default=60.0, help="per check, in seconds")
    args = parser.parse_args(argv)
    args.url = args.url.rstrip("/")
    args.tasks = tuple(args.tasks or DEFAULT_TASKS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = False

    def report(status: str, text: str) -> None:
        nonlocal failed
        failed = failed or status == "FAIL"
        print(f"{status:<4} {text}", flush=True)

    wanted = " or ".join(args.tasks)
    try:
        body = healthcheck(args.url, args.basic_auth, min(args.timeout, 10.0))
        report("OK" if body == "OK" else "FAIL", f"healthcheck {args.url}: {body[:80]}")
    except (OSError, urllib.error.URLError) as exc:
        report("FAIL", f"Flower does not answer at {args.url}: {exc}")
        print("FAIL")
        return 1

    try:
        tasks = api_tasks(args.url, args.basic_auth, args.timeout, worker=args.worker)
        counts: dict[str, int] = {}
        for task in tasks.values():
            name = task.get("name")
            if name in args.tasks:
                counts[name] = counts.get(name, 0) + 1
        seen = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
        if counts:
            report("OK", f"api: {seen} (of {len(tasks)} tasks)")
        else:
            report("FAIL", f"api: no {wanted} among {len(tasks)} tasks; are task events on?")
    except CheckError as exc:
        report("SKIP", f"api: {exc}")
    except (OSError, ValueError, urllib.error.URLError) as exc:
        report("FAIL", f"api: {exc}")

    if not args.no_browser:
        chromium = find_chromium(args.chromium)
        page = f"{args.url}/tasks"
        if args.worker:
            # The tasks page starts with this search (Flower's ?worker= parameter).
            page += "?" + urllib.parse.urlencode({"worker": args.worker})
        if chromium is None:
            report("FAIL", f"page: no Chromium at {args.chromium} (use --chromium or --no-browser)")
        else:
            try:
                rendered = render(
                    _with_credentials(page, args.basic_auth),
                    chromium,
                    screenshot=args.screenshot,
                    timeout=args.timeout,
                )
            except CheckError as exc:
                report("FAIL", f"page: {exc}")
            else:
                shown = [name for name in args.tasks if name in rendered.dom]
                shot = (
                    f"screenshot {rendered.screenshot}" if rendered.screenshot else "no screenshot"
                )
                if shown:
                    report("OK", f"page: {', '.join(shown)} shown at {page} ({shot})")
                else:
                    report("FAIL", f"page: no {wanted} in the rendered {page} ({shot})")

    print("FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
