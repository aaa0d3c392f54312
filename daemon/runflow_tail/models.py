"""Small value types shared across modules: config building blocks, and an entry's two shapes.

An entry is a ``FetchedEntry`` from the API client until the journal gives it a place
(``seq``) in a stream; from then on it is an ``Entry``. Both carry its bytes exactly as
the API sent them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple

import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from runflow_tail.times import parse_duration


class FrozenModel(BaseModel):
    """Config flows in once, top-down: every config model is immutable and strict about keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _duration(value: Any) -> float:
    if isinstance(value, str | int | float):
        return parse_duration(value)
    raise ValueError("expected a duration: seconds as a number, or e.g. '500ms', '2s', '5m', '1h'")


Duration = Annotated[float, BeforeValidator(_duration)]
"""Seconds, written in config as a number or as ``500ms`` / ``2s`` / ``5m`` / ``1h``."""

PositiveDuration = Annotated[Duration, Field(gt=0)]

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2}
_SIZE_UNITS["gib"] = 1024**3


def _byte_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number) :]
        if number and unit in _SIZE_UNITS:
            try:
                return int(float(number) * _SIZE_UNITS[unit])
            except (ValueError, OverflowError):  # not a number; 'inf'/'1e999' overflow int
                pass
    raise ValueError("expected a size: bytes as an integer, or e.g. '512KiB', '10MB', '1GiB'")


ByteSize = Annotated[int, BeforeValidator(_byte_size), Field(ge=0)]


def _file_mode(value: Any) -> int:
    """Permission bits as people write them. Integers are exact (TOML's ``0o640``, or its
    decimal 416); text is octal, as in chmod: ``"0640"`` or ``"0o640"``, so an environment
    variable can say what the TOML file says. Text without the leading 0 is refused rather
    than guessed: ``"640"`` as chmod means rw-r-----, as a number it is not a mode at all."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("0o"):
            digits = text[2:]
        elif text.startswith("0"):
            digits = text[1:] or "0"
        else:
            digits = ""
        if not digits or any(ch not in "01234567" for ch in digits):
            raise ValueError(
                "expected permission bits in octal with a leading 0, as chmod takes them: "
                "'0640' (rw-r-----) or '0o640'"
            )
        value = int(digits, 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    raise ValueError(
        "expected permission bits from 0 to 0o777: '0640' or '0o640' as text, 0o640 in TOML"
    )


FileMode = Annotated[
    int, BeforeValidator(_file_mode), PlainSerializer(lambda mode: f"{mode:04o}", when_used="json")
]
"""File permission bits: ``0o640`` (TOML), ``"0640"`` or ``"0o640"``; shown as ``"0640"``."""


class FetchedEntry(NamedTuple):
    """An entry as a page brought it: identity, order, bytes; what the journal appends."""

    # A tuple, not a frozen dataclass: one is built per entry fetched, and a frozen
    # dataclass's __init__ costs several times more. The client's hot path builds it with
    # tuple.__new__: a NamedTuple's own __new__ is a Python function, measured at 12 % of
    # the event loop's time in a projected drain.
    id: str
    timestamp_ns: int
    raw: bytes


class RejectedEntry(NamedTuple):
    """An item of a page that cannot be journaled as an entry (no timestamp it can be
    ordered by): kept as a dead letter of each sink of its stream, with the reason."""

    id: str
    raw: bytes
    reason: str


class EntryUndecodable(ValueError):
    """An entry whose bytes cannot be decoded into fields (invalid UTF-8, nesting deeper
    than the decoder goes, not JSON): sinks that ship bytes still deliver it; a sink that
    needs its fields dead-letters it alone."""

    def __init__(self, entry: Entry, reason: str) -> None:
        self.entry = entry
        self.reason = reason
        super().__init__(f"entry {entry.id} (seq {entry.seq}) cannot be decoded: {reason}")


@dataclass(slots=True)
class Entry:
    """One log entry as journaled: identity, order, and the bytes exactly as the API sent them."""

    seq: int
    stream: str
    id: str
    timestamp_ns: int
    raw: bytes
    _decoded: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def data(self) -> dict[str, Any]:
        """The decoded entry, for filters and formatting; decoded once, on demand.

        Raises ``EntryUndecodable`` when the bytes cannot be decoded."""
        if self._decoded is None:
            try:
                decoded = msgspec.json.decode(self.raw)
            except msgspec.DecodeError as exc:
                raise EntryUndecodable(self, str(exc)) from exc
            except RecursionError as exc:
                raise EntryUndecodable(self, "nested deeper than the JSON decoder goes") from exc
            self._decoded = decoded if isinstance(decoded, dict) else {"value": decoded}
        return self._decoded
