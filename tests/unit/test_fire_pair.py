"""The header by which a fire task knows it is one of the two the beat sent for a burst."""

from __future__ import annotations

from celery.app.task import Context

from scout_tasks.celery_app import PAIRED
from scout_tasks.tasks import _header


def test_a_worker_request_carries_the_header_on_itself() -> None:
    assert _header(Context({PAIRED: True, "headers": None}), PAIRED)


def test_an_eager_request_carries_it_in_its_headers() -> None:
    assert _header(Context({"headers": {PAIRED: True}}), PAIRED)


def test_a_task_sent_alone_is_not_paired() -> None:
    assert not _header(Context({"headers": None}), PAIRED)
    assert not _header(Context({"headers": {"other": 1}}), PAIRED)
