"""scout-tasks: a cron scheduler for Scout runs, on Celery, PostgreSQL and RabbitMQ."""

from scout_tasks.celery_app import app

__all__ = ["app"]
__version__ = "0.1.0"
