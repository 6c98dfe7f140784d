"""The peer's virtual environment: ``bench/.venv-peer``, made on demand from its requirements.

django-celery-beat and scout-tasks cannot be installed together (django-celery-beat
2.9 requires ``cron-descriptor<2``, scout-tasks ``>=2``), so the peer's beat and
worker run from a virtual environment of their own while ``peer.py`` itself runs
in the project's. The environment records the hash of the requirements file it
was installed from; a missing or different record means a half-made or outdated
environment, which is removed and made again.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "peer_app" / "requirements.txt"
VENV = HERE / ".venv-peer"
# Written last, after pip succeeded: its presence means the environment is whole.
STAMP = "requirements.sha256"


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _is_current(venv: Path, digest: str) -> bool:
    stamp = venv / STAMP
    return (venv / "bin" / "celery").exists() and stamp.exists() and stamp.read_text() == digest


def ensure(venv: Path = VENV) -> Path:
    """The peer environment's ``bin`` folder, made (or remade) first when it is not current.

    A lock file beside it makes two ``peer.py`` started at once build it once.
    """
    digest = _digest()
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_current(venv, digest):
            if venv.exists():
                common.log(f"peer environment {venv} is not current: making it again")
                shutil.rmtree(venv)
            common.log(f"making the peer environment {venv} (django-celery-beat, once)")
            # Made in place: console scripts (bin/celery) name their interpreter
            # by absolute path, so a venv cannot be built elsewhere and moved.
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
            subprocess.run([*pip, "install", "-q", "-r", str(REQUIREMENTS)], check=True)
            (venv / STAMP).write_text(digest)
    return venv / "bin"
