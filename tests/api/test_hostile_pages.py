"""Page parsing against what a broken or hostile API can send: timestamps no 64-bit
instant holds, nesting past the decoder, bytes that are not UTF-8, and anything at all."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runflow_tail.api.client import parse_page

DEEP = 100_000
MIN_NS, MAX_NS = -(2**63), 2**63 - 1
"""What the journal (SQLite INTEGER) can hold."""


def page(*items: bytes, next_cursor: str | None = None) -> bytes:
    return b'{"items":[' + b",".join(items) + b'],"next":' + json.dumps(next_cursor).encode() + b"}"


@pytest.mark.parametrize(
    "timestamp", ["2263-01-01T00:00:00Z", "1600-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00"]
)
def test_a_timestamp_outside_the_64_bit_range_is_rejected_with_the_range(timestamp: str) -> None:
    """An item stamped outside 1677-2262 is rejected with a reason naming the range; its
    neighbour is kept."""
    parsed = page(
        b'{"id":"ok","timestamp":"2026-01-01T00:00:00Z"}',
        b'{"id":"odd","timestamp":"' + timestamp.encode() + b'"}',
    )
    result = parse_page(parsed)
    assert [entry.id for entry in result.entries] == ["ok"]
    [rejected] = result.rejected
    assert (
        rejected.id == "odd" and "1677-09-21" in rejected.reason and "2262-04-11" in rejected.reason
    )


def test_a_page_nested_past_the_decoder_keeps_every_item_and_its_cursor() -> None:
    """One item nested 100,000 levels deep: the page still yields all three items (the deep
    one byte for byte, with its id and timestamp) and the next cursor."""
    deep = (
        b'{"id":"deep","meta":{"x":' + b"[" * DEEP + b"]" * DEEP + b'},"timestamp":'
        b'"2026-01-01T00:00:01Z"}'
    )
    result = parse_page(
        page(
            b'{"id":"a","timestamp":"2026-01-01T00:00:00Z"}',
            deep,
            b'{"id":"c","timestamp":"2026-01-01T00:00:02Z"}',
            next_cursor="tok",
        )
    )
    assert [entry.id for entry in result.entries] == ["a", "deep", "c"]
    assert result.entries[1].raw == deep and result.next_cursor == "tok"


def test_a_deep_item_with_line_breaks_is_compacted_to_one_line() -> None:
    """A deep item spread over lines becomes one line, its strings untouched."""
    deep = (
        b'{\n "id": "d",\n "timestamp": "2026-01-01T00:00:01Z",\n "m": "a\\nb c",\n "x": '
        + b"[\n" * 3000
        + b"]" * 3000
        + b"\n}"
    )
    [entry] = parse_page(page(deep)).entries
    assert b"\n" not in entry.raw and b'"m":"a\\nb c"' in entry.raw


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_timestamps = st.one_of(
    st.text(max_size=40),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        fullmatch=True,
    ),
    st.integers(),
    st.none(),
)
_items = (
    st.builds(
        lambda entry_id, timestamp, extra: {"id": entry_id, "timestamp": timestamp, **extra},
        st.one_of(st.text(max_size=60), st.integers(), st.none()),
        _timestamps,
        st.dictionaries(st.text(max_size=8), _json_values, max_size=4),
    )
    | _json_values
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_items, max_size=8), st.binary(max_size=40), st.integers(0, 8))
def test_any_page_is_split_into_entries_and_reasons_never_an_unexpected_error(
    items: list[object], noise: bytes, where: int
) -> None:
    """Any list of items parses: each item is an entry (timestamp in range, bytes as sent)
    or rejected with a reason; corrupted bytes are at worst a DecodeError for the page."""
    body = json.dumps({"items": items, "next": None}).encode()
    result = parse_page(body)
    assert len(result.entries) + len(result.rejected) == len(items) == result.item_count
    for entry in result.entries:
        assert MIN_NS <= entry.timestamp_ns <= MAX_NS
        assert msgspec.json.decode(entry.raw) in items
    for rejected in result.rejected:
        assert rejected.reason and rejected.id
    spoiled = body[: where * 7] + noise + body[where * 7 :]
    with contextlib.suppress(msgspec.DecodeError):
        parse_page(spoiled)
