from collections.abc import Iterator

import pytest

from tests.e2e import procs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _leave_no_worker_queues(broker_url: str) -> Iterator[None]:
    # Set up before the test's own fixtures, so torn down after they stopped
    # their processes: nothing re-declares a queue once it is deleted.
    yield
    while procs.STARTED_TASK_QUEUES:
        procs.delete_worker_queues(broker_url, procs.STARTED_TASK_QUEUES.pop())
