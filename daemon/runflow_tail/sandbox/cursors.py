"""Keyset cursors: the sort-key values of a page's edge item, bound to one query.

A cursor names a position, not an offset, so pages stay correct while entries are
inserted concurrently: the next page is whatever lies strictly beyond that position.
It is signed so that a garbled cursor is told apart from a valid one, and it carries a
fingerprint of (run_id, q, sort) so that it is never silently applied to another query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import msgspec

from runflow_tail.sandbox.store import SortKey

# Fixed rather than random so that a cursor survives a sandbox restart, like a real API's.
_SECRET = b"runflow-tail sandbox cursor v1"
_SIGNATURE_BYTES = 9


class CursorError(ValueError):
    """A cursor the API refuses; ``code`` is the error code to answer with."""

    code = "INVALID_CURSOR"


class CursorExpiredError(CursorError):
    code = "CURSOR_EXPIRED"


class _Payload(msgspec.Struct, array_like=True):
    key: list[Any] | None
    fingerprint: str
    issued_ns: int
    backwards: bool


@dataclass(frozen=True, slots=True)
class Cursor:
    key: list[Any] | None  # None: the start of the results (the "first" cursor)
    fingerprint: str
    issued_ns: int
    backwards: bool = False


def query_fingerprint(run_id: str, q: str, sort: tuple[SortKey, ...]) -> str:
    text = "\x00".join((run_id, q.strip(), ",".join(str(key) for key in sort)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(cursor: Cursor) -> str:
    payload = msgspec.json.encode(
        _Payload(cursor.key, cursor.fingerprint, cursor.issued_ns, cursor.backwards)
    )
    signature = hmac.digest(_SECRET, payload, "sha256")[:_SIGNATURE_BYTES]
    return f"{_b64(payload)}.{_b64(signature)}"


def decode_cursor(token: str, *, fingerprint: str, now_ns: int, ttl: float | None) -> Cursor:
    """Check and read a cursor; raises CursorError (or CursorExpiredError)."""
    body, _, signature = token.strip().partition(".")
    try:
        payload = _unb64(body)
        expected = hmac.digest(_SECRET, payload, "sha256")[:_SIGNATURE_BYTES]
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise CursorError("the cursor is not one this API issued")
        decoded = msgspec.json.decode(payload, type=_Payload)
    except CursorError:
        raise
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise CursorError(f"the cursor is malformed: {exc}") from exc
    if decoded.fingerprint != fingerprint:
        raise CursorError("the cursor belongs to another query (run_id, q or sort_by differ)")
    if ttl is not None and now_ns - decoded.issued_ns > ttl * 1e9:
        raise CursorExpiredError(f"the cursor expired (cursors are valid for {ttl:g}s)")
    return Cursor(decoded.key, decoded.fingerprint, decoded.issued_ns, decoded.backwards)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text:
        raise ValueError("empty cursor part")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
