"""Cron expressions in plain English, for people reading a schedule.

The words come from the ``cron-descriptor`` package on a 24-hour clock
(``0 9 * * MON-FRI`` reads "At 09:00, Monday through Friday"). Three inputs are
first put into the form it reads the way Debian cron means them: nicknames
(``@daily``) become their five fields (:func:`scout_tasks.cron.expand`), a
range that sets one value (``4-4/1``, Debian's 4 alone) becomes that value,
and a day of the week 7 becomes 0 (both are Sunday).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from cron_descriptor import ExpressionDescriptor, Options
from cron_descriptor.Exception import (
    FormatException,
    MissingFieldException,
    WrongArgumentException,
)

from scout_tasks import cron

# Day of the month, day of the week.
_DAY_FIELDS = (2, 4)


def _options() -> Options:
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    # Debian: 0 and 7 are Sunday, 1 is Monday.
    options.day_of_week_start_index_zero = True
    return options


def _sundays_once(field: str) -> str:
    """A day-of-week field that sets 7 written over 0-6, where 7 is 0 (Sunday).

    The library reads 7 as a day after Saturday, so ``0-7`` (every day) would
    read "Sunday through Sunday". A field starting with ``*`` is left as it is:
    that start decides how the day fields combine.
    """
    if field.startswith("*"):
        return field
    values = cron.field_values(4, field)
    if 7 not in values:
        return field
    days = sorted({value % 7 for value in values})
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(
        f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)) for run in runs
    )


def _one_value(index: int, term: str) -> str:
    """A term that sets one value, as that value: Debian's ``4-4/1``, ``5-5``, ``1-2/2``,
    and a step past the field's span (``*/90`` minutes is minute 0 alone).

    The library would read them as ranges or steps ("every 2 weeks, Monday
    through Tuesday" for ``1-2/2``, which fires every Monday; "every 90 minutes"
    for an hourly job). A day field starting with ``*`` is left as it is: that
    start decides how the two day fields combine.
    """
    if term.startswith("*"):
        if "/" not in term or index in _DAY_FIELDS:
            return term
    elif "-" not in term:
        return term
    values = cron.field_values(index, term)
    return str(min(values)) if len(values) == 1 else term


def _five_fields(expr: str) -> str:
    """The fields cron reads (validated, nicknames expanded), one-value ranges collapsed."""
    fields = [
        ",".join(_one_value(index, term) for term in field.split(","))
        for index, field in enumerate(cron.expand(expr).split(" "))
    ]
    fields[4] = _sundays_once(fields[4])
    return " ".join(fields)


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
