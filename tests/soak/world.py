"""What the soak runs: its servers, the proxies in front of them, beats, workers, an agent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Engine

from scout_tasks import migrate
from scout_tasks.db import make_engine
from tests.e2e.faults import kill_tree
from tests.e2e.procs import CeleryProcess, scout_env
from tests.soak.collector import Collector
from tests.soak.servers import PrivatePostgres, PrivateRabbit, rabbit_bin_dir
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "examples" / "scout_agent.py"
EXCHANGE = "scout"
AGENT_QUEUE = "scout-agent.triggers"


class Supervised:
    """One long-running process the soak keeps alive, as a supervisor (systemd, k8s) would.

    ``held`` is set while a fault has it down on purpose; a death at any other
    time is an unexpected exit, a finding.
    """

    def __init__(self, name: str, kind: str, world: World) -> None:
        self.name = name
        self.kind = kind
        self.world = world
        self.held = False
        self.restarts = 0
        self.unexpected: list[str] = []
        self.proc: CeleryProcess | subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.start()

    def start(self) -> None:
        if self.kind == "agent":
            log = self.world.root / f"{self.name}-{len(self.logs)}.log"
            self.logs.append(log)
            with log.open("ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, str(AGENT), "--broker-url", self.world.rabbit.url(),
                     "--exchange", EXCHANGE, "--queue", AGENT_QUEUE, "--work-seconds", "0.1",
                     "--confirm-timeout", "5"],
                    stdout=out, stderr=subprocess.STDOUT, cwd=self.world.root,
                )  # fmt: skip
        else:
            self.proc = CeleryProcess(self.kind, self.world.env, self.world.root)
            self.logs.append(self.proc.log_path)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        if isinstance(self.proc, CeleryProcess):
            return self.proc.alive()
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        if isinstance(self.proc, CeleryProcess):
            return self.proc.proc.poll()
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL with its pool children, as a crash or the OOM killer would."""
        if isinstance(self.proc, CeleryProcess):
            kill_tree(self.proc)
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if isinstance(self.proc, CeleryProcess):
            self.proc.stop()
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        if not self.logs:
            return ""
        return self.logs[-1].read_text(errors="replace")[-chars:]


class World:
    """Servers, proxies and processes of one soak, and their teardown."""

    def __init__(self, *, workers: int, beats: int, tick_seconds: int, keep: bool) -> None:
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="scout-soak-"))
        # PostgreSQL runs as nobody when we are root: it must traverse to its folder.
        self.root.chmod(0o711)
        self.lock = threading.Lock()
        # Servers die with the thread that started them (PR_SET_PDEATHSIG is per thread):
        # every restart goes through this one thread, alive as long as the soak.
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="launcher")
        bin_dir = rabbit_bin_dir()
        if bin_dir is None:
            raise RuntimeError("no rabbitmq-server to run a private node with")
        self.pg = PrivatePostgres(self.root)
        self.rabbit = PrivateRabbit(self.root / "rabbitmq", bin_dir)
        self.launch(self.pg.init)
        self.launch(self.rabbit.start)
        migrate.upgrade(self.pg.url())
        self.engine: Engine = make_engine(self.pg.url())
        # scout-tasks talks to both servers through proxies the soak can cut;
        # the agent, the collector and the soak's own SQL go direct.
        self.db_proxy = TcpProxy(target_port=self.pg.port)
        self.amqp_proxy = TcpProxy(target_port=self.rabbit.port)
        self.env = scout_env(
            self.pg.url(self.db_proxy.port),
            self.rabbit.url(self.amqp_proxy.port),
            EXCHANGE,
            SCOUT_TICK_SECONDS=str(tick_seconds),
            SCOUT_TASK_QUEUE="scout-tasks",
        )
        self.collector = Collector(self.rabbit.url(), EXCHANGE)
        self.collector.start()
        self.procs: list[Supervised] = []
        for i in range(workers):
            self.procs.append(Supervised(f"worker{i + 1}", "worker", self))
        for i in range(beats):
            self.procs.append(Supervised(f"beat{i + 1}", "beat", self))
        self.procs.append(Supervised("agent", "agent", self))

    def launch(self, start: Callable[[], None]) -> None:
        """Start a server from the launcher thread, so it outlives the caller's thread."""
        self._launcher.submit(start).result()

    def of_kind(self, kind: str) -> list[Supervised]:
        return [p for p in self.procs if p.kind == kind]

    def wait_ready(self, timeout: float = 90.0) -> None:
        for proc in self.procs:
            if isinstance(proc.proc, CeleryProcess):
                proc.proc.wait_for("ready" if proc.kind == "worker" else "beat:", timeout)

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop()
        with contextlib.suppress(Exception):
            self.collector.stop()
        for proxy in (self.db_proxy, self.amqp_proxy):
            with contextlib.suppress(Exception):
                proxy.close()
        with contextlib.suppress(Exception):
            self.engine.dispose()
        with contextlib.suppress(Exception):
            self.rabbit.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        self._launcher.shutdown(wait=False)
        if not self.keep:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)

    def rss_mb(self, kind: str) -> float:
        """The largest resident memory among processes of ``kind`` (main processes)."""
        best = 0.0
        for proc in self.of_kind(kind):
            with contextlib.suppress(OSError, AssertionError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        best = max(best, int(line.split()[1]) / 1024)
        return best


def now() -> float:
    return time.monotonic()


def env_flag(name: str) -> bool:
    return os.environ.get(name) == "1"
