"""A top-level ``celeryconfig.py`` overrides any Celery setting, scout-tasks' own included.

The contract promises it. Celery ranks an app's lazy defaults above its config
module, so scout-tasks' defaults must step aside for what the module sets.
Each case imports the app in a fresh interpreter, from a folder holding the
module, as ``celery -A scout_tasks`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SHOW = (
    "import json; from scout_tasks.celery_app import app; c = app.conf; "
    "print(json.dumps([c.broker_url, c.worker_concurrency, c.task_default_queue, "
    "c.task_acks_late, c.beat_scheduler, [q.name for q in c.task_queues], "
    "sorted({*c.imports, *c.include})]))"
)
ENV = {
    # Nothing but the case's own folder may offer a ``celeryconfig`` to import.
    **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    "SCOUT_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/from-env",
    "SCOUT_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/from_env",
}


def _conf(folder: Path) -> list[object]:
    done = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=folder, env=ENV, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_the_module_wins_over_scout_tasks_defaults(tmp_path: Path) -> None:
    (tmp_path / "celeryconfig.py").write_text(
        'broker_url = "amqp://other:secret@broker.example:5672/ops"\n'
        "worker_concurrency = 7\n"
        'task_default_queue = "ops-tasks"\n'
    )
    broker, concurrency, queue, acks_late, scheduler, consumed, _imports = _conf(tmp_path)
    assert broker == "amqp://other:secret@broker.example:5672/ops"
    assert concurrency == 7
    assert queue == "ops-tasks"
    # The worker consumes the queue the beat now sends to.
    assert consumed == ["ops-tasks"]
    # What the module does not set keeps scout-tasks' value.
    assert acks_late is True
    assert scheduler == "scout_tasks.beat:ScoutScheduler"


def test_without_the_module_scout_tasks_settings_apply(tmp_path: Path) -> None:
    assert not (tmp_path / "celeryconfig.py").exists()
    broker, _concurrency, queue, acks_late, _scheduler, consumed, imports = _conf(tmp_path)
    assert broker == "amqp://guest:guest@127.0.0.1:5672/from-env"
    assert queue == "scout-tasks"
    assert consumed == ["scout-tasks"]
    assert acks_late is True
    assert imports == ["scout_tasks.tasks"]


def test_old_style_names_and_an_imports_list_of_the_operators(tmp_path: Path) -> None:
    (tmp_path / "celeryconfig.py").write_text(
        'BROKER_URL = "amqp://old:style@broker.example:5672/ops"\nCELERY_IMPORTS = ("json",)\n'
    )
    broker, _concurrency, queue, _acks, _scheduler, consumed, imports = _conf(tmp_path)
    assert broker == "amqp://old:style@broker.example:5672/ops"
    assert (queue, consumed) == ("scout-tasks", ["scout-tasks"])
    # The operator's imports come on top of the tasks scout-tasks registers.
    assert imports == ["json", "scout_tasks.tasks"]
