"""Instants and durations: parse_instant, format_instant, parse_duration, parse_start."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from runflow_tail.times import (
    NS_PER_SECOND,
    TimeValueError,
    format_instant,
    parse_duration,
    parse_instant,
    parse_start,
    parse_timestamp,
    validate_start,
)

# 2023-11-07T05:31:56Z, the example timestamp of the Runflow API documentation.
BASE_S = int(datetime(2023, 11, 7, 5, 31, 56, tzinfo=UTC).timestamp())
BASE = BASE_S * NS_PER_SECOND
NOW = 1_800_000_000 * NS_PER_SECOND


@pytest.mark.parametrize(
    "text",
    [
        "2023-11-07T05:31:56Z",
        "2023-11-07T05:31:56z",
        "2023-11-07t05:31:56Z",
        "2023-11-07 05:31:56Z",
        "2023-11-07T05:31:56+00:00",
        "2023-11-07T05:31:56-00:00",
        "2023-11-07T05:31:56",
        "  2023-11-07T05:31:56Z  ",
    ],
)
def test_utc_spellings_are_the_same_instant(text: str) -> None:
    """Z, z, +00:00, no zone, a space or lowercase separator all read as the same UTC instant."""
    assert parse_instant(text) == BASE


@pytest.mark.parametrize(
    ("text", "utc_seconds"),
    [
        ("2023-11-07T00:01:56-05:30", BASE_S),
        ("2023-11-07T11:01:56+05:30", BASE_S),
        ("2023-11-07T11:01:56+0530", BASE_S),
        ("2023-11-06T05:32:56-23:59", BASE_S),
    ],
)
def test_offsets_are_converted_to_utc(text: str, utc_seconds: int) -> None:
    """A numeric offset is subtracted: 00:01:56-05:30 is 05:31:56Z."""
    assert parse_instant(text) == utc_seconds * NS_PER_SECOND


@pytest.mark.parametrize(
    ("fraction", "nanoseconds"),
    [
        ("", 0),
        (".1", 100_000_000),
        (".12", 120_000_000),
        (".123", 123_000_000),
        (".1234", 123_400_000),
        (".12345", 123_450_000),
        (".123456", 123_456_000),
        (".1234567", 123_456_700),
        (".12345678", 123_456_780),
        (".123456789", 123_456_789),
        (".1234567899", 123_456_789),
        (".12345678999", 123_456_789),
        (".123456789999", 123_456_789),
        (",5", 500_000_000),
    ],
)
def test_fractions_of_any_precision_are_kept_to_the_nanosecond(
    fraction: str, nanoseconds: int
) -> None:
    """Fractions of 0 to 12 digits keep nanoseconds exactly and truncate beyond them."""
    assert parse_instant(f"2023-11-07T05:31:56{fraction}Z") == BASE + nanoseconds


def test_bare_date_is_midnight_utc() -> None:
    """A date without a time is midnight UTC when dates are allowed."""
    assert parse_instant("2023-11-07") == (BASE_S - (5 * 3600 + 31 * 60 + 56)) * NS_PER_SECOND


def test_bare_date_rejected_when_a_time_is_required() -> None:
    """With date_only_ok=False a bare date is refused with an example of what is expected."""
    with pytest.raises(TimeValueError, match=r"'2023-11-07' is not an RFC 3339.*2026-04-01T"):
        parse_instant("2023-11-07", date_only_ok=False)


def test_leap_day_is_valid_in_a_leap_year() -> None:
    """February 29th exists in 2024."""
    assert parse_instant("2024-02-29T00:00:00Z") == 1_709_164_800 * NS_PER_SECOND


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2023-11-07T05:31:56.Z",
        "2023-11-07T05Z",
        "2023-11-07T05:31:56+5",
        "2023/11/07",
        "2023-02-29",
        "2023-11-31T00:00:00Z",
        "2023-13-01T00:00:00Z",
        "2023-00-10T00:00:00Z",
        "2023-11-00T00:00:00Z",
        "2023-11-07T24:00:00Z",
        "2023-11-07T05:60:00Z",
        "2023-11-07T05:31:61Z",
        "2023-11-07T05:31:56+24:00",
        "2023-11-07T05:31:56+05:60",
        "0000-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff13-11-07",
    ],
)
def test_invalid_instants_are_refused_naming_the_input(text: str) -> None:
    """Malformed or impossible dates, times and offsets raise TimeValueError quoting the input."""
    with pytest.raises(TimeValueError) as raised:
        parse_instant(text)
    assert repr(text) in str(raised.value)


def test_format_instant_truncates_and_never_rounds_up() -> None:
    """The last nanosecond of a second formats inside that second, not the next."""
    assert format_instant(BASE + 999_999_999) == "2023-11-07T05:31:56.999999Z"
    assert format_instant(BASE + 999_999_999, digits=3) == "2023-11-07T05:31:56.999Z"


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        (0, "2023-11-07T05:31:56Z"),
        (3, "2023-11-07T05:31:56.012Z"),
        (6, "2023-11-07T05:31:56.012345Z"),
        (9, "2023-11-07T05:31:56.012345678Z"),
    ],
)
def test_format_instant_digits(digits: int, expected: str) -> None:
    """The fraction has exactly the requested number of digits, leading zeros kept."""
    assert format_instant(BASE + 12_345_678, digits=digits) == expected


def test_format_instant_custom_zone_suffix() -> None:
    """The zone suffix is written as given (the instant stays UTC)."""
    assert format_instant(BASE, digits=0, zone="+00:00") == "2023-11-07T05:31:56+00:00"


@pytest.mark.parametrize("ns", [0, BASE, BASE + 1, BASE + 999_999_999, NOW + 123_456_789])
def test_format_then_parse_round_trips_at_nine_digits(ns: int) -> None:
    """Nine digits carry every nanosecond through a format/parse round trip."""
    assert parse_instant(format_instant(ns, digits=9)) == ns


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (2, 2.0),
        (2.5, 2.5),
        ("2", 2.0),
        ("0.25", 0.25),
        (".5", 0.5),
        ("10ns", 10e-9),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("500ms", 0.5),
        ("2s", 2.0),
        ("2 s", 2.0),
        (" 2s ", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
    ],
)
def test_parse_duration_forms(value: str | float, seconds: float) -> None:
    """Numbers are seconds; strings take ns/us/ms/s/m/h/d/w units and may be combined."""
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", " ", "abc", "5 parsecs", "2s garbage", "-5s", "1e3s", "s", "\uff15s", "9" * 400 + "s"],
)
def test_parse_duration_rejects_malformed_text(value: str) -> None:
    """Text that is not a non-negative finite duration raises TimeValueError."""
    with pytest.raises(TimeValueError):
        parse_duration(value)


def test_parse_duration_message_says_what_is_expected() -> None:
    """The error quotes the input and gives examples of valid durations."""
    with pytest.raises(TimeValueError, match=r"'soon' is not a duration .*'500ms', '2s', '5m'"):
        parse_duration("soon")


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, -math.inf, 10**400, True])
def test_parse_duration_rejects_bad_numbers(value: float) -> None:
    """Negative, NaN, infinite, overflowing and boolean values are refused."""
    with pytest.raises(TimeValueError):
        parse_duration(value)


def test_parse_start_now() -> None:
    """'now' resolves to the given clock."""
    assert parse_start("now", now_ns=NOW) == NOW


def test_parse_start_beginning() -> None:
    """'beginning' means no lower bound."""
    assert parse_start("beginning", now_ns=NOW) is None


def test_parse_start_rfc3339() -> None:
    """An RFC 3339 timestamp resolves to itself, whatever the clock."""
    assert parse_start("2023-11-07T05:31:56.5Z", now_ns=NOW) == BASE + 500_000_000


def test_parse_start_bare_date() -> None:
    """A bare date is accepted as midnight UTC."""
    assert parse_start("2023-11-07", now_ns=NOW) == parse_instant("2023-11-07T00:00:00Z")


@pytest.mark.parametrize(
    ("text", "back_seconds"), [("-15m", 900), ("-1h30m", 5400), ("-500ms", 0.5), ("-90", 90)]
)
def test_parse_start_relative(text: str, back_seconds: float) -> None:
    """'-15m' and friends count back from the clock."""
    assert parse_start(text, now_ns=NOW) == NOW - int(back_seconds * NS_PER_SECOND)


@pytest.mark.parametrize("text", ["yesterday", "-", "-soon", "+15m", "NOW", "2023-13-01"])
def test_parse_start_rejects_other_text(text: str) -> None:
    """Anything else is refused with TimeValueError."""
    with pytest.raises(TimeValueError):
        parse_start(text, now_ns=NOW)


def test_validate_start_strips_and_accepts_without_a_clock() -> None:
    """validate_start checks a value without resolving it and returns it stripped."""
    assert validate_start("  -15m ") == "-15m"


@given(
    st.integers(min_value=0, max_value=4_102_444_799),
    st.integers(min_value=0, max_value=999_999_999),
    st.integers(min_value=0, max_value=9),
    st.sampled_from(["Z", "z", "+00:00", "-05:30", "+14:00", "+0530"]),
)
def test_the_fast_timestamp_parser_agrees_with_the_full_one(
    seconds: int, nanos: int, digits: int, zone: str
) -> None:
    """parse_timestamp (the per-entry fast path) equals parse_instant on every shape it takes."""
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f".{nanos:09d}"[: digits + 1] if digits else ""
    text = base + fraction + zone
    assert parse_timestamp(text) == parse_instant(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00.5Z",
        "2026-11-28T24:00:00+00:00",
        "2026-11-28T20:00:00.12a+00:00",
        "2026-11-28T20:00:00.Z",
        "2026-11-28T20:00:61Z",
        # 19 characters that the lenient parser would take for a second: "YYYY-MM-DDTHH:MM"
        # behind spaces, then a fraction as if the seconds had been there.
        "   2026-11-28T20:00.5Z",
        "\t\t\t2026-11-28T20:00.5+00:00",
    ],
)
def test_a_bad_timestamp_in_the_fast_paths_shape_is_rejected_naming_all_of_it(text: str) -> None:
    with pytest.raises(TimeValueError) as raised:
        parse_timestamp(text)
    assert repr(text) in str(raised.value)
