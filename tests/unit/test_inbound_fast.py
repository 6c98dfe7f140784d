"""The fast path of ``parse_event`` gives every body the verdict of the strict one.

``parse_event`` validates a body straight from its bytes with pydantic's JSON
parser and falls back to ``parse_event_strictly`` (``json``, then the model)
when that path does not accept it. The two parsers disagree on a few inputs;
whatever the body, the event (or the refusal and its reason) must be the one
the strict path gives. The table holds the inputs where they are known to
disagree, or could; the property test throws generated bodies at both.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scout_tasks import inbound
from scout_tasks.inbound import (
    MAX_BODY_BYTES,
    LifecycleEvent,
    MalformedEvent,
    parse_event,
    parse_event_strictly,
)

EVENT_ID = "0b7f5d2e-8c1a-4f3e-9d6b-2a4c8e1f7a90"
RUN_ID = "5d2c8a71-1f3b-4e6a-8c9d-7e4f2a1b0c33"
IDS = f'"event_id":"{EVENT_ID}","run_id":"{RUN_ID}"'
COUNTS = '"validated":1,"validation_failed":0,"duplicates_removed":0,"submitted":1'


def ids(rest: str) -> str:
    """A JSON object with the two ids, then ``rest`` (which starts with a comma)."""
    return "{" + IDS + rest + "}"


STARTED, PROGRESS, COMPLETED, FAILED = (
    "scout.started",
    "scout.progress",
    "scout.completed",
    "scout.failed",
)


def verdict(parse: Any, body: bytes, routing_key: str, message_id: str | None) -> Any:
    """What a parser makes of a body: the event's type, fields and offset, or the refusal."""
    try:
        event: LifecycleEvent = parse(body, routing_key, message_id)
    except MalformedEvent as exc:
        return ("malformed", str(exc))
    offset = None if event.timestamp is None else event.timestamp.utcoffset()
    return (type(event).__name__, event.model_dump(), offset)


def assert_same_verdict(body: bytes, routing_key: str, message_id: str | None = None) -> Any:
    strict = verdict(parse_event_strictly, body, routing_key, message_id)
    assert verdict(parse_event, body, routing_key, message_id) == strict
    return strict


# Each: (why it is here, routing key, body, message_id, accepted).
ODD_BODIES: list[tuple[str, str, str | bytes, str | None, bool]] = [
    # pydantic's parser reads these as numbers; ours refuses the whole body.
    ("NaN in an ignored key", STARTED, ids(',"x":NaN'), None, False),
    ("Infinity in an ignored key", STARTED, ids(',"x":Infinity'), None, False),
    ("-Infinity in an ignored key", STARTED, ids(',"x":-Infinity'), None, False),
    ("NaN as the progress", PROGRESS, ids(',"stage":"s","progress":NaN'), None, False),
    (
        "NaN in stage_metrics",
        PROGRESS,
        ids(',"stage":"s","progress":1,"stage_metrics":{"a":NaN}'),
        None,
        False,
    ),
    ("NaN inside a string is text", STARTED, ids(',"source":"NaN"'), None, True),
    # Read by ours, refused by pydantic's parser: the strict path decides.
    ("lone surrogate in an ignored key", STARTED, ids(',"x":"a\\ud800"'), None, True),
    ("lone surrogate in the source", STARTED, ids(',"source":"a\\ud800"'), None, False),
    ("NUL in the source", STARTED, ids(',"source":"a\\u0000"'), None, False),
    (
        "nested 300 deep in an ignored key",
        STARTED,
        ids(',"x":' + "[" * 300 + "]" * 300),
        None,
        True,
    ),
    (
        "nested beyond our parser",
        STARTED,
        ids(',"x":' + "[" * 100_000 + "]" * 100_000),
        None,
        False,
    ),
    ("UTF-16", STARTED, ids("").encode("utf-16"), None, True),
    ("UTF-8 with a BOM", STARTED, b"\xef\xbb\xbf" + ids("").encode(), None, True),
    (
        "an encoded surrogate (CESU-8)",
        STARTED,
        ids(',"source":"')[:-1].encode() + b'\xed\xa0\x80"}',
        None,
        False,
    ),
    ("not UTF-8", STARTED, ids(',"source":"')[:-1].encode() + b'\xff"}', None, False),
    # The message_id stands in for a missing or null event_id.
    ("no event_id", STARTED, f'{{"run_id":"{RUN_ID}"}}', EVENT_ID, True),
    ("a null event_id", STARTED, f'{{"event_id":null,"run_id":"{RUN_ID}"}}', EVENT_ID, True),
    ("no event_id, no message_id", STARTED, f'{{"run_id":"{RUN_ID}"}}', None, False),
    ("event_id wins over message_id", STARTED, ids(""), str(uuid.uuid4()), True),
    # Agreements worth pinning.
    ("duplicate keys: the last wins", STARTED, ids(',"source":"a","source":"b"'), None, True),
    (
        "an escaped key",
        STARTED,
        f'{{"event\\u005fid":"{EVENT_ID}","run_id":"{RUN_ID}"}}',
        None,
        True,
    ),
    ("event_type of another kind", STARTED, ids(',"event_type":"scout.failed"'), None, False),
    ("event_type null", STARTED, ids(',"event_type":null'), None, True),
    ("a float count", COMPLETED, ids(',"total_fetched":1.0,' + COUNTS), None, False),
    ("a bool count", COMPLETED, ids(',"total_fetched":true,' + COUNTS), None, False),
    ("a negative count", COMPLETED, ids(',"total_fetched":-1,' + COUNTS), None, False),
    ("a huge count", COMPLETED, ids(',"total_fetched":' + "9" * 40 + "," + COUNTS), None, True),
    ("1e400 in an ignored key", STARTED, ids(',"x":1e400'), None, True),
    (
        "1e400 in stage_metrics",
        PROGRESS,
        ids(',"stage":"s","progress":1,"stage_metrics":{"a":1e400}'),
        None,
        False,
    ),
    ("progress 1e2", PROGRESS, ids(',"stage":"s","progress":1e2'), None, True),
    ("progress over 100", PROGRESS, ids(',"stage":"s","progress":100.5'), None, False),
    (
        "a timestamp with an offset",
        STARTED,
        ids(',"timestamp":"2026-03-29T03:30:00+02:00"'),
        None,
        True,
    ),
    ("a naive timestamp is UTC", STARTED, ids(',"timestamp":"2026-03-29T01:30:00"'), None, True),
    ("a timestamp as a number", STARTED, ids(',"timestamp":1700000000'), None, True),
    ("a date for a timestamp", STARTED, ids(',"timestamp":"2026-03-29"'), None, True),
    ("an impossible timestamp", STARTED, ids(',"timestamp":"2026-02-30T00:00:00Z"'), None, False),
    (
        "ids spelled otherwise",
        STARTED,
        f'{{"event_id":"{{{EVENT_ID.upper()}}}","run_id":"urn:uuid:{RUN_ID}"}}',
        None,
        True,
    ),
    ("a control character in a string", STARTED, ids(',"source":"a\tb"'), None, False),
    ("trailing data", STARTED, ids("") + " x", None, False),
    ("trailing whitespace", STARTED, ids("") + " \r\n\t", None, True),
    ("a list", STARTED, "[1]", None, False),
    ("empty", STARTED, "", None, False),
    ("a long source is cut", STARTED, ids(',"source":"' + "\u00e9" * 500 + '"'), None, True),
    ("an unknown routing key", "scout.trigger", ids(""), None, False),
]


@pytest.mark.parametrize(
    ("routing_key", "body", "message_id", "accepted"),
    [pytest.param(rk, b, m, a, id=why) for why, rk, b, m, a in ODD_BODIES],
)
def test_odd_bodies_get_the_strict_verdict(
    routing_key: str, body: str | bytes, message_id: str | None, accepted: bool
) -> None:
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    strict = assert_same_verdict(raw, routing_key, message_id)
    assert (strict[0] != "malformed") is accepted, strict


def test_a_well_formed_body_takes_the_fast_path() -> None:
    # Otherwise the table above would pass with the fast path switched off.
    body = (ids(',"event_type":"scout.started","source":"bench"')).encode()
    event = inbound._parse_fast(inbound.StartedEvent, body, STARTED)
    assert event is not None and event.source == "bench"
    assert inbound._parse_fast(inbound.StartedEvent, b'{"x":NaN}', STARTED) is None


def test_the_size_limit_comes_first_on_both_paths() -> None:
    body = ids("").encode() + b" " * MAX_BODY_BYTES
    strict = assert_same_verdict(body, STARTED)
    assert strict[0] == "malformed" and "byte limit" in strict[1]


# --- generated bodies ----------------------------------------------------------------

_uuids = st.uuids().flatmap(
    lambda u: st.sampled_from([str(u), str(u).upper(), u.hex, f"{{{u}}}", f"urn:uuid:{u}"])
)
_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(["\x00", "\ud800"]),
    max_size=12,
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    _uuids,
    st.sampled_from(["2026-03-29T01:30:00Z", "2026-03-29T03:30:00.5+02:00", "2026-02-30", "NaN"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(
    [
        "event_id", "run_id", "event_type", "timestamp", "source", "stage", "progress",
        "message", "stage_metrics", "total_fetched", "validated", "validation_failed",
        "duplicates_removed", "submitted", "error_message", "x",
    ]
)  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, str | None]:
    routing_key = draw(st.sampled_from([STARTED, PROGRESS, COMPLETED, FAILED]))
    doc: dict[str, Any] = {"event_id": draw(_uuids), "run_id": draw(_uuids)}
    # Mostly sensible fields for the kind, so that many bodies are accepted.
    if routing_key == PROGRESS:
        doc.update(stage="fetch", progress=draw(st.integers(0, 100) | st.floats(0, 100)))
    elif routing_key == COMPLETED:
        doc.update(
            {k: draw(st.integers(0, 10**6)) for k in ("total_fetched", "validated")},
            validation_failed=0,
            duplicates_removed=0,
            submitted=1,
        )
    elif routing_key == FAILED:
        doc["error_message"] = draw(_text)
    doc.update(draw(st.dictionaries(_fields, _values, max_size=4)))
    for key in draw(st.lists(_fields, max_size=2)):
        doc.pop(key, None)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-8-sig"]))
    message_id = draw(st.none() | _uuids)
    return text.encode(encoding, "surrogatepass"), routing_key, message_id


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_generated_bodies_get_the_strict_verdict(case: tuple[bytes, str, str | None]) -> None:
    body, routing_key, message_id = case
    assert_same_verdict(body, routing_key, message_id)
