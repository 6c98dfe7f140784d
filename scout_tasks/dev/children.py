"""``dev``'s child processes: run as another account if need be, die with ``dev``, stop together."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
CHILD_STOP_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Account:
    """The unprivileged user PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int


def child_setup(death_signal: int, account: Account | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn``: drop to ``account``, then get ``death_signal`` when we die.

    With it a child never outlives ``scout-tasks dev``, even one killed with
    SIGKILL (Linux; elsewhere only the orderly stop applies). The identity is
    changed here rather than with Popen's ``user=``, which runs after
    ``preexec_fn``: a change of identity clears the parent-death signal.
    """
    libc: Any = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(None, use_errno=True)
    if libc is None and account is None:
        return None
    parent = os.getpid()

    def setup() -> None:
        if account is not None:
            os.setgroups([])
            os.setgid(account.gid)
            os.setuid(account.uid)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
            if os.getppid() != parent:
                # We died between fork and prctl: nobody would send the signal.
                os.kill(os.getpid(), death_signal)

    return setup


def executable(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


class Children:
    """Child processes in our own process group, stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # SIGTERM is a warm shutdown for celery and a graceful one for uvicorn.
                preexec_fn=child_setup(signal.SIGTERM),
            )

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def check(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name
        return None

    def stop(self, timeout: float = CHILD_STOP_TIMEOUT) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
