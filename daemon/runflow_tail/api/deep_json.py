"""Reading a page that nests deeper than the JSON decoder goes, without recursion.

msgspec (like every recursive decoder) gives up at Python's recursion limit, about 1,000
levels, even when it only skips a value. A hostile or broken API can nest that deep inside
one entry's ``meta``; one such entry must not make the whole page unreadable (the stream
would retry it forever). These helpers find the page's items and an item's top-level
``id`` and ``timestamp`` by scanning for brackets and strings, iteratively. They find
boundaries and do not validate what lies between them: such an entry is journaled and
delivered as received, and a sink that needs its fields dead-letters it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import msgspec

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_STRUCTURE = re.compile(rb'["\[\]{}]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
"""The rest of a string after its opening quote, through its closing quote."""
_SCALAR = re.compile(rb"[^,\]}\s]+")
_decode_string = msgspec.json.Decoder(str | None).decode


def _fail(data: bytes, position: int, what: str) -> msgspec.DecodeError:
    return msgspec.DecodeError(f"{what} at byte {position} (of {len(data)})")


def _skip_space(data: bytes, position: int) -> int:
    match = _WHITESPACE.match(data, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def skip_value(data: bytes, position: int) -> int:
    """The end of the JSON value that starts at ``position``."""
    first = data[position : position + 1]
    if first == b'"':
        string = _STRING_REST.match(data, position + 1)
        if string is None:
            raise _fail(data, position, "unterminated string")
        return string.end()
    if first in (b"{", b"["):
        depth = 0
        cursor = position
        while True:
            found = _STRUCTURE.search(data, cursor)
            if found is None:
                raise _fail(data, position, "unterminated object or array")
            cursor = found.end()
            mark = found.group()
            if mark == b'"':
                string = _STRING_REST.match(data, cursor)
                if string is None:
                    raise _fail(data, found.start(), "unterminated string")
                cursor = string.end()
            elif mark in (b"{", b"["):
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return cursor
    scalar = _SCALAR.match(data, position)
    if scalar is None:
        raise _fail(data, position, "expected a value")
    return scalar.end()


def members(data: bytes, position: int = 0) -> Iterator[tuple[str, int, int]]:
    """(key, start, end) of each member of the object at ``position``."""
    position = _skip_space(data, position)
    if data[position : position + 1] != b"{":
        raise _fail(data, position, "expected an object")
    position = _skip_space(data, position + 1)
    if data[position : position + 1] == b"}":
        return
    while True:
        if data[position : position + 1] != b'"':
            raise _fail(data, position, "expected a member name")
        key_end = skip_value(data, position)
        key = _decode_string(data[position:key_end]) or ""
        position = _skip_space(data, key_end)
        if data[position : position + 1] != b":":
            raise _fail(data, position, "expected ':'")
        start = _skip_space(data, position + 1)
        end = skip_value(data, start)
        yield key, start, end
        position = _skip_space(data, end)
        mark = data[position : position + 1]
        if mark == b"}":
            return
        if mark != b",":
            raise _fail(data, position, "expected ',' or '}'")
        position = _skip_space(data, position + 1)


def elements(data: bytes, position: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each element of the array at ``position``."""
    if data[position : position + 1] != b"[":
        raise _fail(data, position, "expected an array")
    position = _skip_space(data, position + 1)
    if data[position : position + 1] == b"]":
        return
    while True:
        end = skip_value(data, position)
        yield position, end
        position = _skip_space(data, end)
        mark = data[position : position + 1]
        if mark == b"]":
            return
        if mark != b",":
            raise _fail(data, position, "expected ',' or ']'")
        position = _skip_space(data, position + 1)


def split_page(body: bytes) -> tuple[list[bytes], str | None, str | None]:
    """A page's items (bytes as sent), and its ``next`` and ``next_pq`` cursors."""
    items: list[bytes] | None = None
    cursors: dict[str, str | None] = {}
    for key, start, end in members(body):
        if key == "items":
            items = [body[a:b] for a, b in elements(body, start)]
        elif key in ("next", "next_pq"):
            cursors[key] = _decode_string(body[start:end])
    if items is None:
        raise msgspec.DecodeError("Object missing required field `items`")
    return items, cursors.get("next"), cursors.get("next_pq")


def top_level_strings(item: bytes, names: tuple[str, ...]) -> dict[str, str | None]:
    """The values of an object's members ``names`` (strings or null; absent: missing)."""
    found: dict[str, str | None] = {}
    for key, start, end in members(item):
        if key in names:
            found[key] = _decode_string(item[start:end])
    return found


def compact(item: bytes) -> bytes:
    """``item`` without whitespace outside strings (one JSON Lines line)."""
    parts: list[bytes] = []
    position = 0
    while position < len(item):
        quote = item.find(b'"', position)
        outside = item[position:] if quote < 0 else item[position:quote]
        parts.append(re.sub(rb"[ \t\r\n]+", b"", outside))
        if quote < 0:
            break
        string = _STRING_REST.match(item, quote + 1)
        end = len(item) if string is None else string.end()
        parts.append(item[quote:end])
        position = end
    return b"".join(parts)
