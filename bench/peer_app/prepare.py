"""Set up a peer database: `python -m peer_app.prepare migrate`, or `tasks N MINUTE LAST_RUN`.

``tasks`` creates N enabled PeriodicTasks on one crontab, ``MINUTE * * * *``
(UTC), each with ``last_run_at`` = LAST_RUN (ISO 8601): with LAST_RUN in the
minute before ``hh:MINUTE``, every one of them comes due at ``hh:MINUTE:00``,
and none again for an hour.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import datetime

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer_app.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django_celery_beat.models import CrontabSchedule, PeriodicTask  # noqa: E402


def create_tasks(count: int, minute: int, last_run_at: datetime) -> None:
    crontab = CrontabSchedule.objects.create(
        minute=str(minute),
        hour="*",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.bulk_create(
        [
            PeriodicTask(
                name=f"bench-{i}",
                task="peer.fire",
                crontab=crontab,
                kwargs=json.dumps(
                    {
                        "schedule_id": str(uuid.uuid4()),
                        "name": f"bench-{i}",
                        "source": "bench",
                        "max_strategies": 10,
                        "minute": minute,
                    }
                ),
                last_run_at=last_run_at,
                enabled=True,
            )
            for i in range(1, count + 1)
        ],
        batch_size=1000,
    )


def main() -> None:
    if sys.argv[1:2] == ["migrate"]:
        call_command("migrate", run_syncdb=True, verbosity=0)
    elif sys.argv[1:2] == ["tasks"]:
        count, minute, last_run = sys.argv[2:5]
        create_tasks(int(count), int(minute), datetime.fromisoformat(last_run))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
