"""Cron expressions in plain English, for people reading a schedule.

The words come from the ``cron-descriptor`` package on a 24-hour clock
(``0 9 * * MON-FRI`` reads "At 09:00, Monday through Friday"). Two inputs are
first put into the form it reads the way Debian cron means them: nicknames
(``@daily``) become their five fields, and a one-value range with a step
(``4-4/1``, which Debian reads as 4 alone) becomes that value.
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

# Debian's entry.c sets the same bits for a nickname as for these fields.
_NICKNAMES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ONE_VALUE_RANGE = re.compile(r"\b(\w+)-\1/\d+\b")


def _options() -> Options:
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    # Debian: 0 and 7 are Sunday, 1 is Monday.
    options.day_of_week_start_index_zero = True
    return options


def _five_fields(expr: str) -> str:
    text = " ".join(expr.split())
    expand = getattr(cron, "expand", None)
    if expand is not None:
        try:
            text = str(expand(text))
        except ValueError:
            pass
    text = _NICKNAMES.get(text.lower(), text)
    return " ".join(_ONE_VALUE_RANGE.sub(r"\1", field) for field in text.split(" "))


@functools.lru_cache(maxsize=4096)
def describe(expr: str) -> str:
    """``expr`` in plain English; an expression it cannot read yields ``""``.

    Stored rows may hold an expression written with plain SQL that does not
    parse; the scheduler reports that in ``last_error``, so a reader's
    description simply stays empty rather than failing the page.
    """
    try:
        fields = _five_fields(expr)
        # Only what the scheduler accepts: the library would describe some
        # expressions cron refuses (``0 0 L * *``) as if they were fine.
        cron.validate_expression(fields)
        return str(ExpressionDescriptor(fields, _options()).get_description())
    except (FormatException, MissingFieldException, WrongArgumentException, ValueError):
        return ""


def with_description(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule row with its ``cron_description``, as the API and the CLI show it."""
    return {**schedule, "cron_description": describe(str(schedule["cron_expression"]))}
