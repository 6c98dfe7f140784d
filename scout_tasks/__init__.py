"""scout-tasks: a cron scheduler for Scout runs, on Celery, PostgreSQL and RabbitMQ.

The Celery app is loaded on first use (``scout_tasks.app``, which is what
``celery -A scout_tasks beat|worker`` looks up), so importing a part that needs
no Celery, such as :mod:`scout_tasks.cron`, does not load Celery and kombu.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["app"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from scout_tasks.celery_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
