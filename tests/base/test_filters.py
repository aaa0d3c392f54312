"""Tests for the shared filter language (sandbox `q=`, sink `match`, alert rules)."""

from __future__ import annotations

import pickle
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from runflow_tail.filters import Filter, FilterSyntaxError, parse_filter
from runflow_tail.times import format_instant, parse_instant

ENTRIES: list[dict[str, Any]] = [
    {
        "id": "e1",
        "run_id": "0190f2a4-7c1e-7b3a-9d2e-4f5a6b7c8d01",
        "timestamp": "2026-04-01T10:00:00Z",
        "level_code": "info",
        "message": "run started",
        "client_ref": "nightly-etl",
        "run": {"status_code": "running", "attempt": 1},
        "meta": {"node": "llm", "tokens": 1200, "tags": ["etl", "nightly"], "cached": False},
    },
    {
        "id": "e2",
        "run_id": "0190f2a4-7c1e-7b3a-9d2e-4f5a6b7c8d01",
        "timestamp": "2026-04-01T10:00:00.500000+00:00",
        "level_code": "warning",
        "message": 'retrying "fetch" step',
        "client_ref": "nightly-etl",
        "run": {"status_code": "running", "attempt": 2},
        "meta": {"node": "http", "tokens": 12.5, "tags": ["etl"], "cached": True},
    },
    {
        "id": "e3",
        "run_id": "0190f2a4-9a00-7c3a-8d2e-4f5a6b7c8d02",
        "timestamp": "2026-04-01T10:00:01.123456789Z",
        "level_code": "error",
        "message": "it's broken: C:\\tmp\\x",
        "client_ref": "adhoc",
        "run": {"status_code": "failed", "attempt": 1},
        "meta": {"node": "llm", "tags": [], "error": None},
    },
    {
        "id": "e4",
        "run_id": "0190f2a5-0000-7000-8000-000000000003",
        # 22:00 on April 1st in UTC, although its local date is April 2nd.
        "timestamp": "2026-04-02T00:00:00+02:00",
        "level_code": "info",
        "message": "ANDROID build done",
        "client_ref": "ANDROID",
        "run": {"status_code": "succeeded", "attempt": 1},
    },
]
ALL = "e1 e2 e3 e4"

CASES: list[tuple[str, str]] = [
    ("", ALL),
    ("   ", ALL),
    ("level_code:error", "e3"),
    ("level_code=error", "e3"),
    ("level_code : error", "e3"),
    ("level_code!=info", "e2 e3"),
    ("level_code:Error", ""),
    ("client_ref.EQ:'nightly-etl'", "e1 e2"),
    ("client_ref.eq:'adhoc'", "e3"),
    ("level_code.NE:info", "e2 e3"),
    ("run.attempt.GTE:2", "e2"),
    ("run.attempt.LT:2", "e1 e3 e4"),
    ("run.status_code.EQ:'succeeded'", "e4"),
    ("level_code:info OR level_code:warning AND meta.cached:false", "e1 e4"),
    ("(level_code:info OR level_code:warning) AND meta.cached:false", "e1"),
    ("level_code:warning AND meta.cached:true OR id:e4", "e2 e4"),
    ("NOT level_code:info", "e2 e3"),
    ("NOT (level_code:info OR level_code:error)", "e2"),
    ("NOT NOT level_code:info", "e1 e4"),
    ("NOT(level_code:info)", "e2 e3"),
    ("id:e1 OR id:e3", "e1 e3"),
    ('message:"retrying \\"fetch\\" step"', "e2"),
    ("message:'retrying \"fetch\" step'", "e2"),
    (r"message:'it\'s broken: C:\\tmp\\x'", "e3"),
    (r"message:'it\'s broken: C:\tmp\x'", "e3"),
    ("message:'run started'", "e1"),
    ("message:run", ""),
    ("client_ref:ANDROID", "e4"),
    ("client_ref:ANDROID AND message:'ANDROID build done'", "e4"),
    ("run.status_code:failed", "e3"),
    ("meta.node:llm", "e1 e3"),
    ("meta.node!=llm", "e2 e4"),
    ("meta:llm", ""),
    ("timestamp=2026-04-01T10:00:00.000000+00:00", "e1"),
    ("timestamp:'2026-04-01T10:00:00Z'", "e1"),
    ("timestamp:2026-04-01T12:00:00+02:00", "e1"),
    ("timestamp>=2026-04-01T10:00:00.5Z", "e2 e3 e4"),
    ("timestamp>2026-04-01T10:00:00.5Z", "e3 e4"),
    ("timestamp>2026-04-01T10:00:01.123456Z", "e3 e4"),
    ("timestamp.GT:'2026-04-01T10:00:01.123456789Z'", "e4"),
    ("timestamp<=2026-04-01T12:00:00+02:00", "e1"),
    ("timestamp<2026-04-02", ALL),
    ("timestamp>=2026-04-01T21:00:00-01:00", "e4"),
    ("timestamp>=2026-04-01 AND timestamp<2026-04-01T10:00:01", "e1 e2"),
    ("meta.tokens>=1200", "e1"),
    ("meta.tokens<100", "e2"),
    ("meta.tokens:12.5", "e2"),
    ("meta.tokens:1.2e3", "e1"),
    ("meta.tokens:lots", ""),
    ("meta.tokens!=1200", "e2 e3 e4"),
    ("meta.tags:etl", "e1 e2"),
    ("meta.tags:nightly", "e1"),
    ("meta.tags!=etl", "e3 e4"),
    ("meta.error:null", "e1 e2 e3 e4"),
    ("meta.tokens:null", "e3 e4"),
    ("meta.tokens!=null", "e1 e2"),
    ("meta.error:'null'", ""),
    ("nonexistent:x", ""),
    ("nonexistent!=x", ALL),
    ("nonexistent>0", ""),
    ("meta.cached:true", "e2"),
    ("meta.cached:false", "e1"),
    ("level_code>info", "e2"),
    ("client_ref<b", "e3 e4"),
]


def _matching(text: str) -> str:
    flt = parse_filter(text)
    return " ".join(entry["id"] for entry in ENTRIES if flt.matches(entry))


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_expression_matches_expected_entries(text: str, expected: str) -> None:
    """Each expression selects exactly the expected fixture entries."""
    assert _matching(text) == expected


ERRORS: list[tuple[str, int, str]] = [
    ("level_code>= AND x:1", 12, "expected a value after '>='"),
    ("level_code:", 11, "expected a value after ':'"),
    ("client_ref.EQ:", 14, "expected a value after '.EQ:'"),
    ("a:(b)", 2, "expected a value after ':'"),
    ("level_code:info level_code:error", 17, "not joined implicitly"),
    ("level_code:info and level_code:error", 17, "uppercase"),
    ("(level_code:info x:1)", 18, "not joined implicitly"),
    ("(level_code:info", 1, "'(' is never closed"),
    ("level_code:info)", 16, "')' has no matching '('"),
    (")", 1, "')' has no matching '('"),
    ("()", 1, "empty group"),
    ("x:1 AND ( )", 9, "empty group"),
    ("level_code==info", 11, "unknown operator '=='"),
    ("level_code~info", 11, "unknown operator '~'"),
    (":info", 1, "expected a field name"),
    ("x:1 AND 5:x", 9, "expected a field name"),
    ("level_code info", 10, "expected an operator"),
    ("level_code", 10, "expected an operator"),
    ("message:'unterminated", 9, "unterminated quoted value"),
    ('x:1 AND message:"it\\"s', 17, "unterminated quoted value"),
    ("level_code:info AND", 19, "expected a condition after 'AND'"),
    ("x:1 OR", 6, "expected a condition after 'OR'"),
    ("NOT", 3, "expected a condition after 'NOT'"),
    ("AND x:1", 1, "expected a condition, found 'AND'"),
    ("x:1 AND OR y:2", 7, "expected a condition after 'AND'"),
    ("level_code:'x'y", 15, "after the closing '"),
    ('level_code:info "x"', 17, "expected AND, OR or the end"),
    ('(level_code:info "x")', 18, "expected ')' to close '(' at column 1"),
]


@pytest.mark.parametrize(("text", "column", "reason"), ERRORS)
def test_syntax_error_reports_column_and_reason(text: str, column: int, reason: str) -> None:
    """Each malformed expression fails at the expected column with a reason naming what was due."""
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)
    assert (caught.value.column, caught.value.text) == (column, text)
    assert reason in caught.value.reason


def test_syntax_error_message_is_one_line() -> None:
    """The message carries column, reason and text on one line, even for multi-line input."""
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("level_code>= AND x:1")
    assert str(caught.value) == (
        "invalid filter at column 12: expected a value after '>=' (in: level_code>= AND x:1)"
    )
    with pytest.raises(FilterSyntaxError) as multi:
        parse_filter("x:1\nAND\ty")
    assert "\n" not in str(multi.value) and "\t" not in str(multi.value)


def test_syntax_error_is_a_value_error_and_pickles() -> None:
    """Callers catching ValueError see it, and it survives pickling with its attributes."""
    with pytest.raises(FilterSyntaxError, match="column 1") as caught:
        parse_filter("()")
    assert isinstance(caught.value, ValueError)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.text, copy.column, copy.reason) == ("()", 1, caught.value.reason)


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    """Absurd nesting is rejected with a syntax error instead of exhausting the stack."""
    with pytest.raises(FilterSyntaxError, match="nested too deeply"):
        parse_filter("(" * 500 + "x:1" + ")" * 500)
    with pytest.raises(FilterSyntaxError, match="nested too deeply"):
        parse_filter("NOT " * 500 + "x:1")


def test_keyword_prefixes_are_plain_words() -> None:
    """Fields or values that start with a keyword (ANDROID, ORDER, NOTE) are not keywords."""
    assert parse_filter("ORDER:1 AND NOTE:x").fields() == frozenset({"ORDER", "NOTE"})
    assert parse_filter("client_ref:ANDROID").matches({"client_ref": "ANDROID"})


def test_field_segment_named_like_a_suffix_is_a_field_without_colon() -> None:
    """`x.ne=1` compares field `x.ne`; only `.NE:` is the suffix operator form."""
    assert parse_filter("geo.ne=1").matches({"geo": {"ne": 1}})
    assert parse_filter("geo.NE:1").matches({"geo": 2})


def test_fields_lists_dotted_paths() -> None:
    """fields() names every referenced path once, with suffix operators stripped."""
    flt = parse_filter(
        "run.status_code:failed AND (meta.node:llm OR NOT level_code:info) "
        "AND client_ref.EQ:'x' AND level_code!=debug"
    )
    assert flt.fields() == frozenset({"run.status_code", "meta.node", "level_code", "client_ref"})
    assert parse_filter("").fields() == frozenset()


def test_filter_pickles_by_recompiling_its_text() -> None:
    """A Filter survives pickling (e.g. to a worker process) and still matches the same entries."""
    copy = pickle.loads(pickle.dumps(parse_filter("meta.node:llm AND NOT level_code:info")))
    assert copy.text == "meta.node:llm AND NOT level_code:info"
    assert [copy.matches(entry) for entry in ENTRIES] == [False, False, True, False]


def test_filter_is_immutable_and_hashable() -> None:
    """A Filter cannot be changed after parsing and equal texts give equal, hashable filters."""
    flt = parse_filter("level_code:info")
    with pytest.raises(AttributeError):
        flt.text = "x:1"  # type: ignore[misc]
    assert flt == parse_filter("level_code:info")
    assert len({flt, parse_filter("level_code:info")}) == 1
    assert isinstance(flt, Filter)


T0 = parse_instant("2026-04-01T10:00:00Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp>=2026-04-01T10:00:00Z", T0),
        ("timestamp>2026-04-01T10:00:00Z AND level_code:error", T0),
        ("timestamp:2026-04-01T12:00:00+02:00", T0),
        ("timestamp.GTE:'2026-04-01T10:00:00Z'", T0),
        ("timestamp>=2026-04-01 AND (level_code:info AND timestamp>2026-04-01T10:00:00Z)", T0),
        ("timestamp>=2026-04-01T10:00:00Z AND timestamp>=2026-03-01", T0),
        ("timestamp<2026-04-01T10:00:00Z", None),
        ("timestamp!=2026-04-01T10:00:00Z", None),
        ("timestamp>=2026-04-01T10:00:00Z OR level_code:info", None),
        ("NOT timestamp<2026-04-01T10:00:00Z", None),
        ("(timestamp>=2026-04-01T10:00:00Z OR x:1) AND level_code:info", None),
        ("timestamp>=yesterday", None),
        ("timestamp>=5", None),
        ("level_code:info", None),
        ("", None),
    ],
)
def test_timestamp_lower_bound(text: str, expected: int | None) -> None:
    """Only top-level AND conjuncts with an instant literal contribute, and the largest wins."""
    assert parse_filter(text).timestamp_lower_bound() == expected


def test_timestamp_lower_bound_on_another_field() -> None:
    """The bound can be asked for any field, as in the documented `created_at>2026-04-01`."""
    flt = parse_filter("status_code:succeeded AND created_at>2026-04-01")
    assert flt.timestamp_lower_bound("created_at") == parse_instant("2026-04-01")
    assert flt.timestamp_lower_bound() is None


@pytest.mark.parametrize(("text", "_expected"), CASES)
def test_timestamp_lower_bound_never_excludes_a_match(text: str, _expected: str) -> None:
    """Every fixture entry an expression matches lies at or after its lower bound."""
    flt = parse_filter(text)
    bound = flt.timestamp_lower_bound()
    for entry in ENTRIES:
        if bound is not None and flt.matches(entry):
            assert parse_instant(entry["timestamp"]) >= bound


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp>=2026-04-01", True),
        ("level_code:info AND NOT (timestamp.LT:'2026-04-01')", True),
        ("x:1 OR timestamp<=2026-04-01", True),
        ("timestamp.le:2026-04-01", True),
        ("timestamp:2026-04-01", False),
        ("timestamp!=2026-04-01", False),
        ("created_at>2026-04-01", False),
        ("meta.timestamp>2026-04-01", False),
        ("", False),
    ],
)
def test_has_range_on(text: str, expected: bool) -> None:
    """Any ordering comparison on the field, at any depth, counts as a range."""
    assert parse_filter(text).has_range_on("timestamp") is expected


FIELDS = ["level_code", "meta.tokens", "meta.tags", "meta.node", "missing", "timestamp", "flag"]
OPS = [":", "=", "!=", ">", "<", ">=", "<=", ".EQ:", ".GTE:", ".NE:"]
VALUES = ["info", "error", "30", "40.5", "llm", "etl", "null", "true", "'x y'", '"null"']
VALUES += ["2026-04-01", "2026-04-01T10:00:00.5Z", "2026-04-01T12:00:00+02:00"]

comparisons = st.builds(
    lambda f, o, v: f"{f}{o}{v}",
    st.sampled_from(FIELDS),
    st.sampled_from(OPS),
    st.sampled_from(VALUES),
)
expressions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
        st.builds(lambda a, b: f"{a} OR {b}", inner, inner),
        st.builds(lambda a: f"NOT {a}", inner),
        st.builds(lambda a: f"({a})", inner),
    ),
    max_leaves=8,
)
entries = st.one_of(
    st.sampled_from(ENTRIES),
    st.fixed_dictionaries(
        {},
        optional={
            "level_code": st.sampled_from(["info", "error", "", None]),
            "timestamp": st.sampled_from(
                ["2026-04-01T10:00:00.5Z", "2026-04-01T10:00:00.500+00:00", "2026-04-01", "x"]
            ),
            "flag": st.booleans(),
            "meta": st.fixed_dictionaries(
                {},
                optional={
                    "tokens": st.one_of(st.integers(-50, 50), st.floats(), st.just("30")),
                    "tags": st.lists(st.sampled_from(["etl", "llm", "x y"]), max_size=3),
                    "node": st.sampled_from(["llm", "http", None]),
                },
            ),
        },
    ),
)


@given(expressions, entries)
def test_not_is_exact_negation(text: str, entry: dict[str, Any]) -> None:
    """`NOT (e)` matches exactly the entries `e` does not, whatever the types involved."""
    assert parse_filter(f"NOT ({text})").matches(entry) is (not parse_filter(text).matches(entry))


@given(st.text(), st.sampled_from(['"', "'"]))
def test_quoting_round_trips_arbitrary_strings(value: str, quote: str) -> None:
    """Any string, quoted with backslash escapes, matches itself and nothing longer."""
    escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    flt = parse_filter(f"message:{quote}{escaped}{quote}")
    assert flt.matches({"message": value})
    assert not flt.matches({"message": value + "x"})


timestamps = st.builds(
    lambda moment, sep, digits, zone: (
        moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (f".{digits}" if digits else "") + zone
    ),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31)),
    st.sampled_from(["T", "t", " "]),
    st.text("0123456789", max_size=12),
    st.sampled_from(["", "Z", "z", "+00:00", "-05:30", "+0200", "+14:00", "-1200"]),
)


@given(timestamps)
def test_entry_timestamps_compare_by_instant_in_every_shape(value: str) -> None:
    """An entry timestamp in any accepted shape equals its canonical UTC form and nothing later."""
    canonical = format_instant(parse_instant(value), digits=9)
    assert parse_filter(f"timestamp={canonical}").matches({"timestamp": value})
    assert not parse_filter(f"timestamp>{canonical}").matches({"timestamp": value})
    assert parse_filter(f"timestamp<={canonical}").matches({"timestamp": value})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp<2026-01-01T00:00:01Z", "2026-01-01T00:00:01Z"),
        ("timestamp>=2026-01-01 AND timestamp<=2026-01-02", "2026-01-02"),
        ("timestamp<2026-01-03 AND timestamp<2026-01-02", "2026-01-02"),
        ("timestamp<2026-01-02 OR level_code:error", None),
        ("NOT timestamp<2026-01-02", None),
        ("timestamp>2026-01-02", None),
    ],
)
def test_timestamp_upper_bound(text: str, expected: str | None) -> None:
    """Only a top-level AND conjunct bounds timestamp from above; the smallest bound wins."""
    bound = parse_filter(text).timestamp_upper_bound()
    assert bound == (parse_instant(expected) if expected else None)


_ATOMS = [
    "level_code:error",
    "level_code:info",
    "meta.node:llm",
    "run.status_code:failed",
    "run.failure_code!=null",
    "run.outcome:failed",
]
_QUERIES = st.recursive(
    st.sampled_from(_ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]} AND {pair[1]})"),
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]} OR {pair[1]})"),
        inner.map(lambda query: f"NOT ({query})"),
    ),
    max_leaves=6,
)
_ENTRIES = st.fixed_dictionaries(
    {
        "level_code": st.sampled_from(["error", "info"]),
        "meta": st.fixed_dictionaries({"node": st.sampled_from(["llm", "ocr"])}),
        "run": st.fixed_dictionaries(
            {
                "status_code": st.sampled_from(["failed", "succeeded"]),
                "failure_code": st.sampled_from([None, "NODE_TIMEOUT"]),
                "outcome": st.sampled_from(["failed", "succeeded"]),
            }
        ),
    }
)


def _is_run_field(field: str) -> bool:
    return field.startswith("run.")


@given(query=_QUERIES, entry=_ENTRIES)
def test_a_relaxed_filter_keeps_every_entry_the_filter_could_match(
    query: str, entry: dict[str, Any]
) -> None:
    """With its run fields unknown, a filter still matches every entry that it matches with
    them known; without run fields it is the same filter."""
    compiled = parse_filter(query)
    relaxed = compiled.relaxed(_is_run_field)
    without_run = {key: value for key, value in entry.items() if key != "run"}
    if compiled.matches(entry):
        assert relaxed.matches(without_run)
    if not any(_is_run_field(field) for field in compiled.fields()):
        assert relaxed.matches(without_run) == compiled.matches(entry)
