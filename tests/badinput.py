"""The bad-input corpus: what the CLI and the HTTP API must refuse, and what they must accept.

One list per field. Every :class:`Bad` value must be refused (HTTP 422, or exit 2 on the
command line) by a message that names ``field``, and nothing may be written. Every
:class:`Good` value must be accepted and read back as ``stored`` (the value itself unless
the rule normalises it). The rules are docs/contract.md's "Validation" section: ``name``
1..255 characters, ``cron_expression`` standard five fields that can fire, ``timezone``
an IANA name, ``source`` 1..50 characters, ``max_strategies`` 1..1000.

Values are what a JSON client sends. ``cli=False`` marks the ones a command line cannot
carry (NUL bytes, lone UTF-16 surrogates, JSON types other than strings and numbers);
``"\\udcff"`` is what Python makes of a byte that is not UTF-8 in ``argv``, so it is
both a lone surrogate in JSON and an invalid byte on the command line.

Time zones: "an IANA name" is taken literally. ``zoneinfo`` on Linux looks names up as
files under ``/usr/share/zoneinfo``, so it is case-sensitive (``utc`` is refused, ``UTC``
accepted) and would also load files that are not zone names at all: ``localtime`` (a
link to the host's ``/etc/localtime``, so a schedule's slots would depend on the host
that computes them), ``posixrules`` and the ``posix/`` and ``right/`` copies of the
database. None of those is an IANA name, so all of them must be refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


# The field is left out of the request altogether.
MISSING: Final = _Missing()
# A Good value read back unchanged.
SAME: Final = object()

TEN_THOUSAND = 10_000


@dataclass(frozen=True)
class Bad:
    """A value that must be refused by a message naming ``field``.

    ``too_long_to_store`` marks values that are fine in themselves but longer than
    their column: ``cron next`` (which stores nothing) accepts them.
    """

    label: str
    field: str
    value: Any
    cli: bool = True
    too_long_to_store: bool = False

    @property
    def argv(self) -> str:
        """The value as a command-line argument (only meaningful when ``cli``)."""
        if isinstance(self.value, str):
            return self.value
        return json.dumps(self.value)

    @property
    def id(self) -> str:
        return f"{self.field}: {self.label}"


@dataclass(frozen=True)
class Good:
    """A value that must be accepted and read back as ``stored``."""

    label: str
    field: str
    value: Any
    stored: Any = SAME
    cli: bool = True

    @property
    def expected(self) -> Any:
        return self.value if self.stored is SAME else self.stored


@dataclass(frozen=True)
class RawBody:
    """A request body sent as bytes; the refusal must name ``field``."""

    label: str
    content: bytes
    field: str = "body"


def exactly(text: str, length: int) -> str:
    """``text`` repeated and cut to ``length`` characters."""
    return (text * (length // len(text) + 1))[:length]


def long_cron(length: int) -> str:
    """A valid expression (minute ``0,0,...,0``) of exactly ``length`` characters."""
    tail = " * * * *"
    minute = exactly("0,", length - len(tail))
    if minute.endswith(","):
        minute = minute[:-1] + " "
    return minute + tail


SQL_INJECTION = "'; DROP TABLE scout_runs; --"

# --- the valid requests the bad values are put into ---------------------------------------

VALID_SCHEDULE: Final[dict[str, Any]] = {
    "name": "Daily Scout Run",
    "cron_expression": "0 12 * * *",
    "source": "stratninja",
    "max_strategies": 10,
    "timezone": "UTC",
}
VALID_TRIGGER: Final[dict[str, Any]] = {"source": "stratninja", "max_strategies": 5}

# The command-line option of each field (None: the positional NAME of `schedules add`).
SCHEDULE_OPTIONS: Final[dict[str, str | None]] = {
    "name": None,
    "cron_expression": "--cron",
    "source": "--source",
    "max_strategies": "--max-strategies",
    "timezone": "--timezone",
    "misfire_policy": "--misfire-policy",
    "misfire_grace_seconds": "--misfire-grace-seconds",
    "overlap_policy": "--overlap-policy",
}
TRIGGER_OPTIONS: Final[dict[str, str]] = {
    "source": "--source",
    "max_strategies": "--max-strategies",
    "triggered_by": "--triggered-by",
}

# --- cron_expression ------------------------------------------------------------------------


def _cron(label: str, value: Any, cli: bool = True, *, too_long_to_store: bool = False) -> Bad:
    return Bad(label, "cron_expression", value, cli, too_long_to_store)


CRON: Final[list[Bad]] = [
    # field counts and shapes
    _cron("empty", ""),
    _cron("blank", "   "),
    _cron("tab only", "\t"),
    _cron("one field", "*"),
    _cron("four fields", "* * * *"),
    _cron("six fields (seconds)", "0 0 0 * * *"),
    _cron("seven fields (year)", "0 0 12 * * * 2030"),
    _cron("@reboot", "@reboot"),
    _cron("@DAILY (Debian nicknames are lowercase)", "@DAILY"),
    _cron("nickname with fields", "@daily * * * *"),
    _cron("words", "every day at noon"),
    # out of range
    _cron("minute 60", "60 * * * *"),
    _cron("hour 24", "0 24 * * *"),
    _cron("day-of-month 0", "0 0 0 * *"),
    _cron("day-of-month 32", "0 0 32 * *"),
    _cron("month 0", "0 0 1 0 *"),
    _cron("month 13", "0 0 1 13 *"),
    _cron("day-of-week 8", "0 0 * * 8"),
    _cron("negative minute", "-1 * * * *"),
    _cron("huge number", "99999999999999999999 * * * *"),
    _cron("2**63", f"{2**63} * * * *"),
    # can never fire
    _cron("30 February", "0 0 30 2 *"),
    _cron("31 April", "0 0 31 4 *"),
    _cron("31 June, September, November", "0 0 31 6,9,11 *"),
    _cron("31 April as a one-value range with a step", "0 0 31 4-4/1 *"),
    # syntax Debian cron does not have
    _cron("L", "0 0 L * *"),
    _cron("LW", "0 0 LW * *"),
    _cron("15W", "0 0 15W * *"),
    _cron("5L (last Friday)", "0 0 * * 5L"),
    _cron("# (second Monday)", "0 0 * * 1#2"),
    _cron("?", "0 0 ? * *"),
    _cron("H (Jenkins)", "H * * * *"),
    # steps, ranges, lists
    _cron("*/0", "*/0 * * * *"),
    _cron("negative step", "*/-5 * * * *"),
    _cron("step without a base", "/5 * * * *"),
    _cron("step without a range (Debian refuses 5/10)", "5/10 * * * *"),
    _cron("empty step", "*/ * * * *"),
    _cron("fractional", "1.5 * * * *"),
    _cron("reversed range 5-1", "5-1 * * * *"),
    _cron("reversed names FRI-MON", "0 0 * * FRI-MON"),
    _cron("trailing comma", "0, * * * *"),
    _cron("double comma", "0,,30 * * * *"),
    _cron("unknown name", "0 0 * * FUNDAY"),
    _cron("month name as day-of-week", "0 0 * * JAN"),
    _cron("day name as month", "0 0 1 MON *"),
    # unicode digits: int() reads them, Debian cron does not
    _cron("fullwidth digit", "\uff15 * * * *"),  # FULLWIDTH DIGIT FIVE
    _cron("fullwidth step", "*/\uff15 * * * *"),
    _cron("Arabic-Indic digit", "\u0665 0 * * *"),  # ARABIC-INDIC DIGIT FIVE
    _cron("superscript two", "² * * * *"),
    # strings that are not cron at all
    _cron("SQL", SQL_INJECTION),
    _cron("10,000 characters", exactly("x", TEN_THOUSAND)),
    # Valid cron but longer than the column (VARCHAR(255)): must be a clean refusal.
    _cron("257 characters of valid fields", long_cron(257), too_long_to_store=True),
    _cron("10,000 characters of valid fields", long_cron(TEN_THOUSAND), too_long_to_store=True),
    _cron("NUL", "0 0 * * *\x00", cli=False),
    _cron("lone surrogate", "\ud800 * * * *", cli=False),
    _cron("invalid UTF-8 byte", "\udcff * * * *"),
    # JSON types
    _cron("null", None, cli=False),
    _cron("number", 5, cli=False),
    _cron("array", ["0", "0", "*", "*", "*"], cli=False),
    _cron("object", {"minute": 0}, cli=False),
    _cron("true", True, cli=False),
]

# --- timezone ------------------------------------------------------------------------------


def _zone(label: str, value: Any, cli: bool = True) -> Bad:
    return Bad(label, "timezone", value, cli)


TIMEZONE: Final[list[Bad]] = [
    _zone("unknown", "Mars/Olympus_Mons"),
    _zone("empty", ""),
    _zone("blank", " "),
    _zone("path traversal", "../../etc/passwd"),
    _zone("absolute path", "/etc/passwd"),
    _zone("absolute zoneinfo path", "/usr/share/zoneinfo/UTC"),
    _zone("lowercase utc", "utc"),
    _zone("upper case", "EUROPE/PARIS"),
    _zone("leading space", " Europe/Paris"),
    _zone("trailing space", "UTC "),
    _zone("trailing newline", "Europe/Paris\n"),
    _zone("trailing slash", "Europe/Paris/"),
    _zone("double slash", "Europe//Paris"),
    _zone("dot segment", "Europe/./Paris"),
    _zone("backslash", "Europe\\Paris"),
    _zone("a directory", "Europe"),
    _zone("offset", "+02:00"),
    _zone("abbreviation", "CEST"),
    _zone("tz database file", "zone.tab"),
    _zone("tzdata.zi", "tzdata.zi"),
    _zone("localtime (the host's zone)", "localtime"),
    _zone("posixrules", "posixrules"),
    _zone("posix/ copy", "posix/Europe/Paris"),
    _zone("right/ copy", "right/UTC"),
    _zone("SQL", "UTC'; DROP TABLE scout_runs; --"),
    _zone("10,000 characters", exactly("A", TEN_THOUSAND)),
    _zone("300-character path", "America/" + exactly("A", 292)),
    _zone("NUL", "UTC\x00", cli=False),
    _zone("lone surrogate", "\ud800", cli=False),
    _zone("invalid UTF-8 byte", "\udcff"),
    _zone("null", None, cli=False),
    _zone("number", 0, cli=False),
    _zone("array", ["UTC"], cli=False),
    _zone("object", {"name": "UTC"}, cli=False),
]

# --- max_strategies (schedules and manual triggers) -------------------------------------------


def _max(label: str, value: Any, cli: bool = True) -> Bad:
    return Bad(label, "max_strategies", value, cli)


MAX_STRATEGIES: Final[list[Bad]] = [
    _max("0", 0),
    _max("-1", -1),
    _max("1001", 1001),
    _max("2**31", 2**31),
    _max("2**63", 2**63),
    _max("-2**63", -(2**63)),
    _max("10**30", 10**30),
    _max("1.5", 1.5),
    _max("1e3", "1e3"),
    _max("hex", "0x10"),
    _max("word", "ten"),
    _max("empty", ""),
    _max("10.0 (a float)", 10.0, cli=False),
    _max("'5' (a string)", "5", cli=False),
    _max("true", True, cli=False),
    _max("false", False, cli=False),
    _max("null", None, cli=False),
    _max("array", [5], cli=False),
    _max("object", {"n": 5}, cli=False),
]

# --- name, source, triggered_by -------------------------------------------------------------


def _text_cases(field: str, max_length: int, *, nullable: bool = False) -> list[Bad]:
    over = max_length + 1
    cases = [
        Bad("empty", field, ""),
        Bad("blank", field, "   "),
        Bad("tab and newline only", field, "\t\n"),
        Bad(f"{over} characters", field, exactly("x", over)),
        Bad("10,000 characters", field, exactly("x", TEN_THOUSAND)),
        Bad(f"{over} emoji", field, "🚀" * over),
        Bad(f"{over} code points of combining accents", field, exactly("e\u0301", over)),
        Bad("NUL", field, "a\x00b", cli=False),
        Bad("newline inside", field, "nl\nname"),
        Bad("tab inside", field, "a\tb"),
        Bad("escape sequence", field, "a\x1b[31mred"),
        Bad("C1 control", field, "a\x85b"),
        Bad("lone high surrogate", field, "a\ud800", cli=False),
        Bad("invalid UTF-8 byte", field, "a\udcff"),
        Bad("number", field, 5, cli=False),
        Bad("float", field, 5.5, cli=False),
        Bad("true", field, True, cli=False),
        Bad("array", field, ["a"], cli=False),
        Bad("object", field, {"a": 1}, cli=False),
    ]
    if not nullable:
        cases.append(Bad("null", field, None, cli=False))
    return cases


NAME: Final[list[Bad]] = [
    *_text_cases("name", 255),
    # It would shadow lookups by id.
    Bad("a UUID", "name", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    Bad("a UUID without dashes", "name", "0f8fad5bd9cb469fa16570867728950e"),
]
SOURCE: Final[list[Bad]] = _text_cases("source", 50)
TRIGGERED_BY: Final[list[Bad]] = _text_cases("triggered_by", 255, nullable=True)

# --- the other schedule fields ------------------------------------------------------------------

GRACE: Final[list[Bad]] = [
    Bad("-1", "misfire_grace_seconds", -1),
    Bad("a week and a second", "misfire_grace_seconds", 7 * 24 * 3600 + 1),
    Bad("2**63", "misfire_grace_seconds", 2**63),
    Bad("1.5", "misfire_grace_seconds", 1.5),
    Bad("word", "misfire_grace_seconds", "soon"),
    Bad("'60' (a string)", "misfire_grace_seconds", "60", cli=False),
    Bad("true", "misfire_grace_seconds", True, cli=False),
    Bad("null", "misfire_grace_seconds", None, cli=False),
]
POLICIES: Final[list[Bad]] = [
    Bad("unknown", "misfire_policy", "sometimes"),
    Bad("empty", "misfire_policy", ""),
    Bad("upper case", "misfire_policy", "COALESCE"),
    Bad("trailing space", "misfire_policy", "coalesce "),
    Bad("10,000 characters", "misfire_policy", exactly("coalesce", TEN_THOUSAND)),
    Bad("number", "misfire_policy", 1, cli=False),
    Bad("null", "misfire_policy", None, cli=False),
    Bad("unknown", "overlap_policy", "never"),
    Bad("empty", "overlap_policy", ""),
    Bad("upper case", "overlap_policy", "ALLOW"),
    Bad("10,000 characters", "overlap_policy", exactly("allow", TEN_THOUSAND)),
    Bad("array", "overlap_policy", ["allow"], cli=False),
]
ENABLED: Final[list[Bad]] = [
    Bad("'yes'", "enabled", "yes", cli=False),
    Bad("'true' (a string)", "enabled", "true", cli=False),
    Bad("1", "enabled", 1, cli=False),
    Bad("0", "enabled", 0, cli=False),
    Bad("null", "enabled", None, cli=False),
    Bad("array", "enabled", [True], cli=False),
]

# Columns a client must not set, and plain unknown keys: refused by name.
SCHEDULE_UNKNOWN: Final[list[Bad]] = [
    Bad("unknown key", "colour", "red", cli=False),
    Bad("id", "id", "00000000-0000-0000-0000-000000000001", cli=False),
    Bad("next_run_at", "next_run_at", "2020-01-01T00:00:00Z", cli=False),
    Bad("last_run_id", "last_run_id", "00000000-0000-0000-0000-000000000001", cli=False),
    Bad("created_at", "created_at", "2020-01-01T00:00:00Z", cli=False),
    Bad("skipped_slots", "skipped_slots", 0, cli=False),
    Bad("last_error", "last_error", None, cli=False),
    Bad("SQL as a key", SQL_INJECTION, 1, cli=False),
]
TRIGGER_UNKNOWN: Final[list[Bad]] = [
    Bad("unknown key", "priority", 1, cli=False),
    Bad("run_id", "run_id", "00000000-0000-0000-0000-000000000001", cli=False),
    Bad("trigger_type", "trigger_type", "scheduled", cli=False),
    Bad("schedule_id", "schedule_id", "00000000-0000-0000-0000-000000000001", cli=False),
    Bad("status", "status", "completed", cli=False),
]

SCHEDULE_MISSING: Final[list[Bad]] = [
    Bad("missing", field, MISSING) for field in ("name", "cron_expression", "source")
] + [Bad("missing", "max_strategies", MISSING)]
TRIGGER_MISSING: Final[list[Bad]] = [
    Bad("missing", "source", MISSING),
    Bad("missing", "max_strategies", MISSING),
]

# Every field case of a schedule (create; `update` takes all but the missing ones).
SCHEDULE_FIELDS: Final[list[Bad]] = [
    *CRON,
    *TIMEZONE,
    *NAME,
    *SOURCE,
    *MAX_STRATEGIES,
    *GRACE,
    *POLICIES,
    *ENABLED,
    *SCHEDULE_UNKNOWN,
]
TRIGGER_FIELDS: Final[list[Bad]] = [
    *SOURCE,
    *MAX_STRATEGIES,
    *TRIGGERED_BY,
    *TRIGGER_UNKNOWN,
    *TRIGGER_MISSING,
]


def schedule_update_fields() -> list[Bad]:
    """What a partial update must refuse: the create cases, plus null for every field."""
    nulls = [
        Bad("null", field, None, cli=False)
        for field in (*SCHEDULE_OPTIONS, "enabled")
        if not any(c.field == field and c.value is None for c in SCHEDULE_FIELDS)
    ]
    return [*SCHEDULE_FIELDS, *nulls]


def with_field(valid: dict[str, Any], case: Bad | Good) -> dict[str, Any]:
    """``valid`` with ``case``'s field set to its value (or left out when MISSING)."""
    body = {k: v for k, v in valid.items() if k != case.field}
    if case.value is not MISSING:
        body[case.field] = case.value
    return body


# --- whole bodies -----------------------------------------------------------------------------

BODIES: Final[list[RawBody]] = [
    RawBody("empty", b""),
    RawBody("whitespace", b"  \n\t "),
    RawBody("truncated object", b'{"name": "x", '),
    RawBody("trailing comma", b'{"name": "x",}'),
    RawBody("single quotes", b"{'name': 'x'}"),
    RawBody("unquoted key", b"{name: 1}"),
    RawBody("comment", b'{"name": "x"} // comment'),
    RawBody("two objects", b'{"name": "x"}{"name": "y"}'),
    RawBody("null", b"null"),
    RawBody("true", b"true"),
    RawBody("number", b"42"),
    RawBody("string", b'"a string"'),
    RawBody("array", b"[]"),
    RawBody("array of objects", b'[{"name": "x"}]'),
    RawBody("not UTF-8", b"\xff\xfe\x00"),
    RawBody("UTF-8 with a bad byte", b'{"name": "x\xff"}'),
    RawBody("lone surrogate as a key", b'{"\\ud800": 1}'),
    RawBody("100,000 nested arrays", b"[" * 100_000),
    RawBody("100,000 nested objects", b'{"a":' * 100_000),
    RawBody("NUL byte", b"\x00"),
]


def _raw(valid: dict[str, Any], tail: str) -> bytes:
    """The JSON of ``valid`` with ``tail`` (raw JSON members) appended before the ``}``."""
    return (json.dumps(valid)[:-1] + ", " + tail + "}").encode()


def raw_field_bodies(
    valid: dict[str, Any], *, int_field: str = "max_strategies", partial: bool = False
) -> list[RawBody]:
    """Bodies that json.dumps cannot make (NaN, Infinity, duplicate keys), and ``{}``
    unless the request is a ``partial`` update (where it means "change nothing").

    A duplicate key is ambiguous (RFC 8259 leaves it to the parser; Python keeps the
    last, many proxies and validators the first), so it must be refused by name rather
    than resolved silently.
    """
    without = {k: v for k, v in valid.items() if k != int_field}
    some_text = next(k for k, v in valid.items() if isinstance(v, str))
    empty = [] if partial else [RawBody("empty object", b"{}", next(iter(valid)))]
    return [
        *empty,
        RawBody("NaN", _raw(without, f'"{int_field}": NaN'), int_field),
        RawBody("Infinity", _raw(without, f'"{int_field}": Infinity'), int_field),
        RawBody("-Infinity", _raw(without, f'"{int_field}": -Infinity'), int_field),
        RawBody("1e999", _raw(without, f'"{int_field}": 1e999'), int_field),
        RawBody(
            f"{some_text} twice",
            _raw(valid, f'"{some_text}": {json.dumps(valid[some_text] + " again")}'),
            some_text,
        ),
        RawBody(f"{int_field} twice", _raw(valid, f'"{int_field}": 6'), int_field),
        RawBody(
            f"{int_field} twice, the first out of range",
            (
                f'{{"{int_field}": 5000, ' + json.dumps(without)[1:-1] + f', "{int_field}": 5}}'
            ).encode(),
            int_field,
        ),
    ]


# --- values that must be accepted, verbatim -------------------------------------------------------

LONGEST_NAME = exactly("n", 255)

VALID_SCHEDULE_VALUES: Final[list[Good]] = [
    Good("emoji", "name", "🚀 Scout run ✨"),
    Good("zero-width-joined emoji", "name", "👩\u200d👩\u200d👧\u200d👦 family run"),
    Good("Arabic (RTL)", "name", "تشغيل الكشاف اليومي"),
    Good("Hebrew with a right-to-left override", "name", "שלום \u202eabc\u202c run"),
    Good("combining characters", "name", "Cafe\u0301 Zu\u0308rich"),
    Good("255 combining code points", "name", exactly("e\u0301", 255)),
    Good("255 emoji", "name", "🚀" * 255),
    Good("255 characters", "name", LONGEST_NAME),
    Good("SQL", "name", SQL_INJECTION),
    Good(
        "quotes, backslashes, format specifiers",
        "name",
        "Robert'); DROP TABLE scout_schedules;-- %s %(name)s {0} \\ \" `",
    ),
    Good("SQL", "source", "x' OR '1'='1"),
    Good("50 characters", "source", exactly("s", 50)),
    Good("CJK", "source", "源"),
    Good("longest IANA name", "timezone", "America/Argentina/ComodRivadavia"),
    Good("Etc/GMT+5", "timezone", "Etc/GMT+5"),
    Good("quarter-hour offset", "timezone", "Asia/Kathmandu"),
    Good("29 February", "cron_expression", "0 0 29 2 *"),
    Good("7 is Sunday", "cron_expression", "0 0 * * 7"),
    Good("30 February OR Mondays", "cron_expression", "0 0 30 2 MON"),
    Good("lower-case names", "cron_expression", "0 9 * jan-mar mon-fri", "0 9 * JAN-MAR MON-FRI"),
    Good("tabs between fields", "cron_expression", "0\t12\t*\t*\t*", "0 12 * * *"),
    Good("255 characters of valid fields", "cron_expression", long_cron(255)),
    Good("1", "max_strategies", 1),
    Good("1000", "max_strategies", 1000),
    Good("0 seconds", "misfire_grace_seconds", 0),
    Good("a week", "misfire_grace_seconds", 7 * 24 * 3600),
]
VALID_TRIGGER_VALUES: Final[list[Good]] = [
    Good("SQL", "source", SQL_INJECTION),
    Good("emoji", "source", "🚀 scout"),
    Good("SQL", "triggered_by", "admin'--"),
    Good("RTL override", "triggered_by", "\u202eadmin"),
    Good("255 emoji", "triggered_by", "🚀" * 255),
    Good("null means the default", "triggered_by", None, "Manual trigger", cli=False),
    Good("1", "max_strategies", 1),
    Good("1000", "max_strategies", 1000),
]


def valid_schedule_body(case: Good) -> dict[str, Any]:
    """A valid create body carrying ``case`` (names made unique per case)."""
    body = with_field(VALID_SCHEDULE, case)
    if case.field != "name":
        body["name"] = f"valid {case.field} {case.label}"
    return body


# --- query and path parameters of the HTTP API ---------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A GET (or POST without body) whose parameter is bad; ``{schedule}``/``{run}`` are
    replaced by real ids. ``ok`` lists statuses other than 422 that are acceptable."""

    label: str
    method: str
    path: str
    params: dict[str, str]
    field: str
    ok: tuple[int, ...] = ()


SCHEDULES = "/api/scout/schedules"
RUNS = "/api/scout/runs"

QUERIES: Final[list[Query]] = [
    Query("page 0", "GET", SCHEDULES, {"page": "0"}, "page"),
    Query("page -1", "GET", SCHEDULES, {"page": "-1"}, "page"),
    Query("page 2**63", "GET", SCHEDULES, {"page": str(2**63)}, "page"),
    Query("page 1.5", "GET", SCHEDULES, {"page": "1.5"}, "page"),
    Query("page word", "GET", SCHEDULES, {"page": "two"}, "page"),
    Query("page_size 0", "GET", SCHEDULES, {"page_size": "0"}, "page_size"),
    Query("page_size 1001", "GET", SCHEDULES, {"page_size": "1001"}, "page_size"),
    Query("page_size 10**30", "GET", SCHEDULES, {"page_size": str(10**30)}, "page_size"),
    Query("enabled maybe", "GET", SCHEDULES, {"enabled": "maybe"}, "enabled"),
    Query("source with NUL", "GET", SCHEDULES, {"source": "a\x00b"}, "source"),
    Query("runs page 0", "GET", RUNS, {"page": "0"}, "page"),
    Query("status unknown", "GET", RUNS, {"status": "sleeping"}, "status"),
    Query("status SQL", "GET", RUNS, {"status": "pending' OR '1'='1"}, "status"),
    Query("trigger_type unknown", "GET", RUNS, {"trigger_type": "cosmic"}, "trigger_type"),
    Query("schedule_id not a UUID", "GET", RUNS, {"schedule_id": "x"}, "schedule_id"),
    Query(
        "schedule_id 10,000 characters",
        "GET",
        RUNS,
        {"schedule_id": exactly("a", TEN_THOUSAND)},
        "schedule_id",
    ),
    Query("created_after a word", "GET", RUNS, {"created_after": "yesterday"}, "created_after"),
    Query("created_after month 13", "GET", RUNS, {"created_after": "2024-13-01"}, "created_after"),
    # Python reads offsets up to +-23:59; PostgreSQL stores up to +-15:59.
    Query(
        "created_after offset +20:00",
        "GET",
        RUNS,
        {"created_after": "2024-01-01T00:00:00+20:00"},
        "created_after",
        ok=(200,),
    ),
    Query(
        "created_before year 9999 at -23:59",
        "GET",
        RUNS,
        {"created_before": "9999-12-31T23:59:59-23:59"},
        "created_before",
        ok=(200,),
    ),
    Query("source with NUL", "GET", RUNS, {"source": "\x00"}, "source"),
    Query("next n 0", "GET", SCHEDULES + "/{schedule}/next", {"n": "0"}, "n"),
    Query("next n 1001", "GET", SCHEDULES + "/{schedule}/next", {"n": "1001"}, "n"),
    Query("next n word", "GET", SCHEDULES + "/{schedule}/next", {"n": "many"}, "n"),
    # A valid expression that fires every 28 years: 1000 slots end after year 9999.
    Query(
        "next 1000 slots past year 9999",
        "GET",
        SCHEDULES + "/{rare}/next",
        {"n": "1000"},
        "n",
        ok=(200,),
    ),
    Query("schedule id not a UUID", "GET", SCHEDULES + "/not-a-uuid", {}, "id"),
    Query("schedule id 10,000 characters", "GET", SCHEDULES + "/" + "a" * 10_000, {}, "id"),
    Query("schedule id with NUL", "GET", SCHEDULES + "/%00", {}, "id"),
    Query("schedule id SQL", "GET", SCHEDULES + "/1%27%20OR%20%271%27%3D%271", {}, "id"),
    Query("delete id not a UUID", "DELETE", SCHEDULES + "/not-a-uuid", {}, "id"),
    Query("next id not a UUID", "GET", SCHEDULES + "/not-a-uuid/next", {}, "id"),
    Query("reload id not a UUID", "POST", SCHEDULES + "/not-a-uuid/reload", {}, "id"),
    Query("run id not a UUID", "GET", RUNS + "/not-a-uuid", {}, "id"),
    Query("cancel id not a UUID", "POST", RUNS + "/not-a-uuid/cancel", {}, "id"),
]

# Fires on 29 February when it is a Sunday: every 28 years.
RARE_CRON = "0 0 29 2 */7"

# --- the command line only ---------------------------------------------------------------------


@dataclass(frozen=True)
class Argv:
    """A whole command line that must exit 2 with one line naming one of ``names``.

    ``ok_exit_0`` marks commands for which a successful, empty answer is also correct.
    """

    label: str
    args: tuple[str, ...]
    names: tuple[str, ...]
    ok_exit_0: bool = False


CRON_NEXT: Final[list[Argv]] = [
    Argv("-n 0", ("cron", "next", "0 0 * * *", "-n", "0"), ("-n",)),
    Argv("-n 10001", ("cron", "next", "0 0 * * *", "-n", "10001"), ("-n",)),
    Argv("-n word", ("cron", "next", "0 0 * * *", "-n", "many"), ("-n",)),
    Argv("--after a word", ("cron", "next", "0 0 * * *", "--after", "noon"), ("after",)),
    Argv(
        "--after offset +24:00",
        ("cron", "next", "0 0 * * *", "--after", "2024-01-01T00:00:00+24:00"),
        ("after",),
    ),
    Argv(
        "--after the last minute of year 9999",
        ("cron", "next", "* * * * *", "--after", "9999-12-31T23:59:00Z"),
        ("after",),
        ok_exit_0=True,
    ),
    Argv(
        "--after the first hour of year 1, east of UTC",
        ("cron", "next", "0 0 * * *", "--after", "0001-01-01T00:00:00+01:00"),
        ("after",),
        ok_exit_0=True,
    ),
    Argv(
        "1000 slots past year 9999",
        ("cron", "next", RARE_CRON, "-n", "1000"),
        ("-n", "n:"),
        ok_exit_0=True,
    ),
]
LOOKUPS: Final[list[Argv]] = [
    Argv("show: invalid UTF-8 byte", ("schedules", "show", "\udcff"), ("schedule",)),
    Argv("show: unknown name", ("schedules", "show", SQL_INJECTION), ("schedule",)),
    Argv("list --source invalid UTF-8", ("schedules", "list", "--source", "\udcff"), ("source",)),
    Argv("runs list --source invalid UTF-8", ("runs", "list", "--source", "\udcff"), ("source",)),
    Argv("runs list --limit 0", ("runs", "list", "--limit", "0"), ("limit",)),
    Argv("runs list --status unknown", ("runs", "list", "--status", "sleeping"), ("status",)),
    Argv("runs show not a UUID", ("runs", "show", "not-a-uuid"), ("id",)),
    Argv("runs show 10,000 characters", ("runs", "show", exactly("a", 10_000)), ("id",)),
    Argv("runs cancel not a UUID", ("runs", "cancel", "x"), ("id",)),
]
