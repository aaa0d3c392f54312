"""Instants and durations as the Runflow API and our config write them.

Instants are integer nanoseconds since the Unix epoch (UTC). Runflow timestamps come as
``2023-11-07T05:31:56Z`` or ``2023-11-07T05:31:56.123456+00:00`` with any fractional
precision, and are never unique, so we never compare them as strings and never round
them through ``datetime`` (which stops at microseconds).
"""

from __future__ import annotations

import calendar
import functools
import math
import re
import time

NS_PER_SECOND = 1_000_000_000
MIN_NS = -(2**63)
MAX_NS = 2**63 - 1
"""Instants are signed 64-bit nanoseconds (SQLite's INTEGER, OTLP's and Loki's time): from
1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z."""
REPRESENTABLE = "1677-09-21T00:12:44Z to 2262-04-11T23:47:16Z"

_INSTANT = re.compile(
    r"""
    (?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})
    (?:
        [Tt\ ]
        (?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?
        (?P<zone>[Zz]|[+-]\d{2}:?\d{2})?
    )?
    """,
    re.VERBOSE | re.ASCII,
)

_DURATION = re.compile(
    r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ns|us|µs|ms|s|m|h|d|w)?", re.ASCII
)
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}


class TimeValueError(ValueError):
    """A timestamp or duration that cannot be read; the message says what is expected."""


def parse_instant(text: str, *, date_only_ok: bool = True) -> int:
    """Parse an RFC 3339 timestamp (or a bare date, midnight UTC) into epoch nanoseconds.

    A timestamp without a zone is read as UTC: Runflow always writes UTC, and a user who
    types ``2026-04-01T10:00`` in a filter means the same clock the API shows.
    """
    match = _INSTANT.fullmatch(text.strip())
    if match is None or (not date_only_ok and match["hour"] is None):
        raise TimeValueError(
            f"{text!r} is not an RFC 3339 timestamp (expected e.g. 2026-04-01T10:00:00Z)"
        )
    try:
        seconds = calendar.timegm(
            (
                int(match["year"]),
                int(match["month"]),
                int(match["day"]),
                int(match["hour"] or 0),
                int(match["minute"] or 0),
                int(match["second"] or 0),
            )
        )
        _check_fields(match)
    except (ValueError, OverflowError) as exc:
        raise TimeValueError(f"{text!r} is not a valid date or time: {exc}") from exc
    fraction = (match["fraction"] or "")[:9].ljust(9, "0")
    offset = _zone_offset_seconds(match["zone"])
    return representable((seconds - offset) * NS_PER_SECOND + int(fraction), text)


def representable(ns: int, text: str) -> int:
    """``ns`` if it fits a signed 64-bit integer, else a ``TimeValueError`` naming ``text``."""
    if MIN_NS <= ns <= MAX_NS:
        return ns
    raise TimeValueError(f"{text!r} is outside the times runflow-tail can store ({REPRESENTABLE})")


_FAST_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:([0-9]{2})(?:[.,]([0-9]+))?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)


@functools.lru_cache(maxsize=4096)
def _minute_ns(prefix: str) -> int:
    # Keyed by the "YYYY-MM-DDTHH:MM" prefix: log timestamps cluster, so nearly every entry
    # hits, and the cache is bounded by minutes of data, never by the number of entries.
    return parse_instant(prefix)


@functools.lru_cache(maxsize=4096)
def _second_ns(prefix: str) -> int:
    # Keyed by "YYYY-MM-DDTHH:MM:SS": a busy log has many entries per second. Only that
    # exact shape: the general parser is lenient (it strips spaces, for one).
    if _FAST_INSTANT.fullmatch(prefix) is None:
        raise TimeValueError(f"{prefix!r} is not a date and time to the second")
    return _parse_common_shapes(prefix + "Z")


def parse_timestamp(text: str) -> int:
    """``parse_instant`` for full timestamps, five to seven times faster on the shapes the API
    writes (it runs for every entry fetched); other shapes take the full parser."""
    # UTC as "Z" or "+00:00", with or without a fraction: the whole second is cached.
    end = -1 if text[-1:] in ("Z", "z") else -6 if text.endswith("+00:00") else 0
    if end and len(text) >= 19 - end:
        fraction = text[19:end]
        nanos = 0
        if fraction:
            digits = fraction[1:]
            if fraction[0] != "." or not (digits.isdigit() and digits.isascii()):
                return _parse_common_shapes(text)
            nanos = int(digits[:9].ljust(9, "0"))
        try:
            ns = _second_ns(text[:19]) + nanos
        except TimeValueError:
            pass  # reported below, naming the whole timestamp
        else:
            if MIN_NS <= ns <= MAX_NS:
                return ns
            return representable(ns, text)
    return representable(_parse_common_shapes(text), text)


def _parse_common_shapes(text: str) -> int:
    match = _FAST_INSTANT.fullmatch(text)
    if match is None:
        return parse_instant(text, date_only_ok=False)
    second, fraction, zone = match.groups()
    seconds = int(second)
    if seconds > 60:
        raise TimeValueError(f"{text!r} is not a valid date or time: second out of range")
    if zone and zone[0] in "+-":
        offset = int(zone[1:3]) * 3600 + int(zone[-2:]) * 60
        if int(zone[1:3]) > 23 or int(zone[-2:]) > 59:
            raise TimeValueError(f"{text!r} has an invalid UTC offset")
        seconds -= -offset if zone[0] == "-" else offset
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    try:
        minute_ns = _minute_ns(text[:16])
    except TimeValueError:
        return parse_instant(text, date_only_ok=False)  # raises, naming the whole text
    return minute_ns + seconds * NS_PER_SECOND + nanos


def _check_fields(match: re.Match[str]) -> None:
    month, day = int(match["month"]), int(match["day"])
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} out of range")
    if not 1 <= day <= calendar.monthrange(int(match["year"]), month)[1]:
        raise ValueError(f"day {day} out of range")
    if int(match["hour"] or 0) > 23 or int(match["minute"] or 0) > 59:
        raise ValueError("hour or minute out of range")
    if int(match["second"] or 0) > 60:
        raise ValueError("second out of range")
    zone = match["zone"]
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        if int(digits[:2]) > 23 or int(digits[2:]) > 59:
            raise ValueError(f"UTC offset {zone} out of range")


def _zone_offset_seconds(zone: str | None) -> int:
    if zone is None or zone in ("Z", "z"):
        return 0
    digits = zone[1:].replace(":", "")
    offset = int(digits[:2]) * 3600 + int(digits[2:]) * 60
    return -offset if zone[0] == "-" else offset


def format_instant(ns: int, *, digits: int = 6, zone: str = "Z") -> str:
    """Format epoch nanoseconds as RFC 3339 in UTC.

    Fractions are truncated (never rounded up), so a formatted lower bound never
    excludes the instant it came from.
    """
    seconds, remainder = divmod(ns, NS_PER_SECOND)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if digits > 0:
        base += "." + f"{remainder:09d}"[:digits]
    return base + zone


def parse_duration(value: str | float | int) -> float:
    """Seconds from a number or a string like ``500ms``, ``2s``, ``5m``, ``1h30m``."""
    if isinstance(value, bool):
        raise TimeValueError("a duration must be a number of seconds or a string like '2s'")
    try:
        seconds = float(value) if isinstance(value, int | float) else _parse_duration_text(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise TimeValueError(f"duration {value!r} is not a finite number of seconds")
    if seconds < 0:
        raise TimeValueError(f"duration {value!r} must not be negative")
    return seconds


def _parse_duration_text(text: str) -> float:
    stripped = text.strip()
    position, total, parts = 0, 0.0, 0
    while position < len(stripped):
        match = _DURATION.match(stripped, position)
        if match is None or match.end() == position:
            break
        unit = match["unit"] or "s"
        total += float(match["number"]) * _UNIT_SECONDS[unit]
        position = match.end()
        parts += 1
        while position < len(stripped) and stripped[position] == " ":
            position += 1
    if parts == 0 or position != len(stripped):
        raise TimeValueError(
            f"{text!r} is not a duration (expected seconds as a number, or e.g. "
            "'500ms', '2s', '5m', '1h', '1h30m')"
        )
    return total


def parse_start(text: str, *, now_ns: int) -> int | None:
    """Resolve a stream's ``start_at``: ``now``, ``beginning`` (None), RFC 3339, or ``-15m``."""
    stripped = text.strip()
    if stripped == "now":
        return now_ns
    if stripped == "beginning":
        return None
    if stripped.startswith("-"):
        return representable(now_ns - int(parse_duration(stripped[1:]) * NS_PER_SECOND), text)
    return parse_instant(stripped)


def validate_start(text: str) -> str:
    """Check a ``start_at`` value, a relative one against the clock now (it only moves on,
    so a value valid now resolves within range when a stream starts)."""
    parse_start(text, now_ns=now_ns())
    return text.strip()


def now_ns() -> int:
    return time.time_ns()
