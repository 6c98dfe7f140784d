"""The folders ``scout-tasks dev`` leaves in the system temp folder: marked, claimed, pruned.

Run as root, ``dev`` may make two kinds of folder there (see :mod:`.postgres`
and :mod:`.binaries`), and a project moved or deleted, or a virtualenv
upgraded, would leave them for ever:

- a project's server folder, ``scout-tasks-<12 hex>`` (its PostgreSQL data and
  socket, owned by ``nobody``), marked by :data:`SERVER_MARKER`, a file we write
  naming the project folder;
- a copy of the PostgreSQL binaries, ``scout-tasks-pg-<version>-<16 hex>``
  (owned by us), marked by its manifest.

A marker counts only if it is a regular file owned by us that nobody else can
write to: a folder without one is not ours (or predates markers) and is never
touched. While a ``dev`` uses a folder it holds a shared ``flock`` on the
marker (:func:`claim`, which also sets the marker's time: the last use).

:func:`prune` removes a folder only when all of these hold: its name, owner
and marker are ours; no ``dev`` holds a claim; no process runs from it or
works in it (``/proc``, and a server folder's ``postmaster.pid``); and it is
stale: a server folder whose project folder is gone or that has not been used
for :data:`SERVER_MAX_AGE`, a copy not used for :data:`COPY_MAX_AGE` (a later
start copies again in a second or two). It takes an exclusive lock on the
marker without waiting (a claim waits for it, then finds the folder gone and
makes a new one), renames the folder aside (a rename never follows a link),
and deletes it with ``shutil.rmtree``, which on this platform never follows a
link either (no pruning where it would).

Only :mod:`scout_tasks.dev` imports this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scout_tasks.dev.binaries import COPY_PREFIX, MANIFEST
from scout_tasks.dev.state import postgres_running

log = logging.getLogger(__name__)

SERVER_MARKER = ".scout-tasks-dev.json"
# The names Layout.server_dir and binaries.copy_folder give.
SERVER_NAME = re.compile(r"\Ascout-tasks-[0-9a-f]{12}\Z")
COPY_NAME = re.compile(rf"\A{re.escape(COPY_PREFIX)}[A-Za-z0-9._]+-[0-9a-f]{{16}}\Z")
DAY = 86400.0
# A server folder holds a project's demo database: kept a month after its last use.
SERVER_MAX_AGE = 30 * DAY
# A copy is only binaries, made again in a second or two.
COPY_MAX_AGE = 7 * DAY
_MADE_BY = "scout-tasks dev"


class Claim:
    """A shared lock on a folder's marker, held while ``dev`` uses the folder."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file lets go of the lock
            self._fd = None


def claim(marker: Path) -> Claim | None:
    """Hold a shared lock on ``marker`` and record this use; None when the folder went.

    Waits while a prune holds the marker. A prune renames the folder before it
    lets go, so if ``marker`` no longer names the file we locked, the folder
    was pruned meanwhile and the caller makes it again.
    """
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        held = os.fstat(fd)
        try:
            now = os.lstat(marker)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            os.close(fd)
            return None
        os.utime(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return Claim(fd)


def write_server_marker(folder: Path, project: Path) -> Path:
    """Mark ``folder`` as ``project``'s server folder (kept as it is when already so)."""
    marker = folder / SERVER_MARKER
    if _marker_info(marker) is not None and _server_project(marker) == str(project):
        return marker
    tmp = folder / f".{SERVER_MARKER}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as out:
        json.dump({"made_by": _MADE_BY, "project": str(project)}, out)
        out.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, marker)
    return marker


@dataclass(frozen=True, slots=True)
class Pruned:
    path: Path
    why: str


def prune(parent: Path | None, now: float, *, server_uids: frozenset[int]) -> list[Pruned]:
    """Remove the stale folders of ``dev`` in ``parent`` (the system temp folder); see above.

    ``now`` is the wall clock (seconds since the epoch). ``server_uids`` are the
    owners a server folder may have besides us (the account PostgreSQL runs as).
    Never raises for a folder it cannot judge or remove: it logs and leaves it.
    """
    if not shutil.rmtree.avoids_symlink_attacks:
        return []
    where = parent if parent is not None else Path(tempfile.gettempdir())
    try:
        names = sorted(os.listdir(where))
    except OSError:
        return []
    busy: set[Path] | None = None
    done: list[Pruned] = []
    for name in names:
        if SERVER_NAME.match(name):
            kind, owners = "server", {os.geteuid(), *server_uids}
        elif COPY_NAME.match(name):
            kind, owners = "copy", {os.geteuid()}
        else:
            continue
        folder = where / name
        try:
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners:
                continue  # a link, a file, or somebody else's: not ours to judge
            marker = folder / (SERVER_MARKER if kind == "server" else MANIFEST)
            marked = _marker_info(marker)
            if marked is None:
                continue
            why = _stale(kind, marker, marked, now)
            if why is None:
                continue
            if busy is None:
                busy = _process_folders()
            if any(p == folder or folder in p.parents for p in busy):
                continue
            if kind == "server" and _postmaster_alive(folder / "pgdata"):
                continue
            if _remove(folder, info, marker):
                done.append(Pruned(folder, why))
                log.info(
                    "pruned %s: %s",
                    folder,
                    why,
                    extra={"action": "embedded.pruned", "path": str(folder)},
                )
        except OSError as exc:
            log.warning(
                "could not prune %s: %s",
                folder,
                exc,
                extra={"action": "embedded.prune_failed", "path": str(folder)},
            )
    return done


def _marker_info(marker: Path) -> os.stat_result | None:
    """The marker's status when it is a regular file of ours that only we can change."""
    try:
        info = marker.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return None
    return info


def _server_project(marker: Path) -> str | None:
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(64 * 1024))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("made_by") != _MADE_BY:
        return None
    project = data.get("project")
    return project if isinstance(project, str) and os.path.isabs(project) else None


def _stale(kind: str, marker: Path, marked: os.stat_result, now: float) -> str | None:
    """Why the folder is stale (by its marker), or None when it is not."""
    idle = now - marked.st_mtime
    if kind == "copy":
        return (
            f"a PostgreSQL copy unused for {idle / DAY:.0f} days" if idle > COPY_MAX_AGE else None
        )
    project = _server_project(marker)
    if project is None:
        return None  # a marker we cannot read says nothing: keep the data
    if not os.path.lexists(project):
        return f"its project folder {project} is gone"
    if idle > SERVER_MAX_AGE:
        return f"unused for {idle / DAY:.0f} days (project {project})"
    return None


def _process_folders() -> set[Path]:
    """Every folder a process runs a binary from or works in, from ``/proc``."""
    found: set[Path] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        for link in ("exe", "cwd"):
            with contextlib.suppress(OSError):
                target = Path(os.readlink(f"/proc/{pid}/{link}").removesuffix(" (deleted)"))
                found.add(target if link == "cwd" else target.parent)
    return found


def _postmaster_alive(pgdata: Path) -> bool:
    """Whether ``pgdata``'s ``postmaster.pid`` names a live server (read without a link)."""
    try:
        fd = os.open(pgdata / "postmaster.pid", os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: treat as alive
    with os.fdopen(fd, "rb") as handle:
        first = handle.readline().strip()
    return first.isdigit() and postgres_running(int(first), pgdata)


def _remove(folder: Path, info: os.stat_result, marker: Path) -> bool:
    """Lock the marker without waiting, move the folder aside, delete it. False: in use."""
    fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a dev holds it
        again = folder.lstat()
        if (again.st_dev, again.st_ino) != (info.st_dev, info.st_ino):
            return False  # replaced since we looked
        # Into a fresh folder of ours, so the new name cannot be taken by anyone meanwhile.
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.pruning-", dir=folder.parent))
        try:
            os.rename(folder, aside / "folder")
        except OSError:
            aside.rmdir()
            raise
    finally:
        os.close(fd)
    shutil.rmtree(aside)
    return True
