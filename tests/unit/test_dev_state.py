"""Where `scout-tasks dev` keeps PostgreSQL's files when its account cannot reach `.scout/`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from scout_tasks.dev.children import Account
from scout_tasks.dev.postgres import _own_server_dir
from scout_tasks.dev.state import Layout
from scout_tasks.errors import ConfigurationError

ME = Account("me", os.geteuid(), os.getegid())


def test_the_server_dir_is_per_project_in_the_temp_dir(tmp_path: Path) -> None:
    one, other = Layout.here(tmp_path / "a"), Layout.here(tmp_path / "b")

    assert one.server_dir.parent == Path(tempfile.gettempdir())
    assert one.server_dir.name.startswith("scout-tasks-")
    assert one.server_dir == Layout.here(tmp_path / "a").server_dir
    assert one.server_dir != other.server_dir


def test_a_new_server_dir_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "server"

    _own_server_dir(folder, ME)
    _own_server_dir(folder, ME)  # found again after a restart: fine

    info = folder.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (ME.uid, 0o700)


def test_a_folder_open_to_others_is_not_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "planted"
    folder.mkdir()
    folder.chmod(0o777)

    with pytest.raises(ConfigurationError, match="not made by scout-tasks"):
        _own_server_dir(folder, ME)
    assert folder.stat().st_mode & 0o777 == 0o777


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "server"
    link.symlink_to(target)

    with pytest.raises(ConfigurationError, match="not made by scout-tasks"):
        _own_server_dir(link, ME)
