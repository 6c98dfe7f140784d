"""recorder.db_error_outcome: the lifecycle consumer classifies database errors through the
shared translator (a refused value is the message's fault, an outage is not)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from scout_tasks.recorder import OutcomeKind, db_error_outcome


class DriverError(Exception):
    def __init__(self, message: str, pgcode: str | None) -> None:
        super().__init__(message)
        self.pgcode = pgcode
        self.diag = SimpleNamespace(constraint_name=None)


def wrapped(cls: type[DBAPIError], pgcode: str | None, **kw: bool) -> DBAPIError:
    return cls("UPDATE scout_runs", {}, DriverError("boom", pgcode), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        # A value the database refuses: it would be refused again (dead-lettered).
        (wrapped(DataError, "22P02"), OutcomeKind.MALFORMED),
        (wrapped(IntegrityError, "23514"), OutcomeKind.MALFORMED),
        (wrapped(InternalError, "23505"), OutcomeKind.MALFORMED),
        (wrapped(DataError, None), OutcomeKind.MALFORMED),
        # A program limit (a jsonb too big): the message's fault too.
        (wrapped(OperationalError, "54000"), OutcomeKind.MALFORMED),
        # The database away, or not migrated yet: hold and retry.
        (wrapped(OperationalError, None), OutcomeKind.RETRY),
        (wrapped(OperationalError, "57P01"), OutcomeKind.RETRY),
        (wrapped(InternalError, None, connection_invalidated=True), OutcomeKind.RETRY),
        (wrapped(ProgrammingError, "42P01"), OutcomeKind.RETRY),
        (DisconnectionError("gone"), OutcomeKind.RETRY),
        (PoolTimeoutError("pool exhausted"), OutcomeKind.RETRY),
        # Anything else: taken as an outage (the consumer blames a message only
        # when it keeps failing alone while the database answers).
        (wrapped(InternalError, "XX000"), OutcomeKind.RETRY),
    ],
)
def test_database_errors_are_the_messages_fault_only_when_a_retry_cannot_help(
    error: Exception, kind: OutcomeKind
) -> None:
    assert db_error_outcome(error) is kind  # type: ignore[arg-type]
