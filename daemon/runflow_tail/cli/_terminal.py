"""What the command line shows a person at a terminal, and only there: a progress line on
stderr for long work, and tables. Pipes and files get the plain output unchanged."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

PROGRESS_AFTER = 1.0
"""Seconds of work before a progress line appears: quick commands never flash one."""
REDRAW_EVERY = 0.25


class Progress:
    """One line on stderr, redrawn in place while work goes on, when stderr is a terminal;
    nothing at all otherwise. ``done`` leaves a one-line summary if a line was shown."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = isatty(self._stream) if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self.shown = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def show(self, text: str) -> None:
        now = time.monotonic()
        if not self.enabled or self.elapsed < PROGRESS_AFTER or now - self._drawn_at < REDRAW_EVERY:
            return
        self._drawn_at = now
        self.shown = True
        self._stream.write(f"\r\x1b[K{text}")
        self._stream.flush()

    def clear(self) -> None:
        if self.shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def done(self, summary: str) -> None:
        """Replace the progress line with ``summary`` (only if a progress line was shown)."""
        if self.shown:
            self._stream.write(f"\r\x1b[K{summary}\n")
            self._stream.flush()
            self.shown = False


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned under their headers; numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max([len(header), *(len(row[index]) for row in cells)])
        for index, header in enumerate(headers)
    ]
    numeric = [
        bool(rows) and all(isinstance(row[index], int | float) for row in rows if row[index] != "")
        for index in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = ["-" * width for width in widths]
    return "\n".join([line(list(headers)), line(rule), *(line(row) for row in cells)])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def isatty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a closed or unusual stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
