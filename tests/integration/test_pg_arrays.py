"""Array literals built in Python read back in PostgreSQL as the values they came from."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from scout_tasks import pg_arrays

# PostgreSQL text cannot hold NUL, nor UTF-8 a lone surrogate; everything else
# (quotes, backslashes, braces, commas, blanks, the word NULL) must survive.
CHARACTERS = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
TEXTS = st.lists(st.one_of(st.none(), st.text(CHARACTERS)))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=TEXTS)
def test_texts_round_trip(engine: Engine, values: list[str | None]) -> None:
    with engine.connect() as conn:
        back = conn.execute(
            text("SELECT CAST(:v AS text[])"), {"v": pg_arrays.texts(values)}
        ).scalar_one()
    assert back == values


def test_edge_texts_round_trip(engine: Engine) -> None:
    values = ["", "NULL", "null", " a ", 'say "hi"', "back\\slash", "{,}", "é 字", None, '\\"']
    with engine.connect() as conn:
        back = conn.execute(
            text("SELECT CAST(:v AS text[])"), {"v": pg_arrays.texts(values)}
        ).scalar_one()
    assert back == values


def test_plain_and_instants_round_trip(engine: Engine) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    instants = [
        datetime(2026, 12, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-4))),
        datetime(1, 1, 2, tzinfo=UTC),
        None,
    ]
    with engine.connect() as conn:
        got_ids, got_ints, got_instants = conn.execute(
            text(
                "SELECT CAST(:ids AS uuid[]), CAST(:ints AS bigint[]), "
                "CAST(:instants AS timestamptz[])"
            ),
            {
                "ids": pg_arrays.plain([*ids[:2], str(ids[2])]),
                "ints": pg_arrays.plain([0, -5, 2**62, None]),
                "instants": pg_arrays.instants(instants),
            },
        ).one()
    assert got_ids == ids
    assert got_ints == [0, -5, 2**62, None]
    assert got_instants == instants
    assert pg_arrays.plain([]) == "{}"
