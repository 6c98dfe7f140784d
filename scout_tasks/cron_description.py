"""Cron expressions in plain English, for people reading a schedule.

The words come from the ``cron-descriptor`` package on a 24-hour clock
(``0 9 * * MON-FRI`` reads "At 09:00, Monday through Friday"). Two inputs are
first put into the form it reads the way Debian cron means them: nicknames
(``@daily``) become their five fields (:func:`scout_tasks.cron.expand`), and a
one-value range with a step (``4-4/1``, Debian's 4 alone) becomes that value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from cron_descriptor import ExpressionDescriptor, Options
from cron_descriptor.Exception import (
    FormatException,
    MissingFieldException,
    WrongArgumentException,
)

from scout_tasks import cron

_ONE_VALUE_RANGE = re.compile(r"\b(\w+)-\1/\d+\b")


def _options() -> Options:
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    # Debian: 0 and 7 are Sunday, 1 is Monday.
    options.day_of_week_start_index_zero = True
    return options


def _five_fields(expr: str) -> str:
    """The fields cron reads (validated, nicknames expanded), one-value ranges collapsed."""
    fields = cron.expand(expr)
    return " ".join(_ONE_VALUE_RANGE.sub(r"\1", field) for field in fields.split(" "))


@functools.lru_cache(maxsize=4096)
def describe(expr: str) -> str:
    """``expr`` in plain English; an expression it cannot read yields ``""``.

    Stored rows may hold an expression written with plain SQL that does not
    parse; the scheduler reports that in ``last_error``, so a reader's
    description simply stays empty rather than failing the page.
    """
    try:
        # Only what the scheduler accepts: the library would describe some
        # expressions cron refuses (``0 0 L * *``) as if they were fine.
        fields = _five_fields(expr)
        return str(ExpressionDescriptor(fields, _options()).get_description())
    except (FormatException, MissingFieldException, WrongArgumentException, ValueError):
        return ""


def with_description(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule row with its ``cron_description``, as the API and the CLI show it."""
    return {**schedule, "cron_description": describe(str(schedule["cron_expression"]))}
