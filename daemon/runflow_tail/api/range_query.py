"""The range conditions the poller adds to a stream's query, in the form the API accepts."""

from __future__ import annotations

from typing import Literal

from runflow_tail.times import format_instant

RangeForm = Literal["bare", "quoted"]
PROBE_FUTURE_NS = 86_400 * 1_000_000_000
"""Probes ask about a day ahead: no entry can be there, so any item means a filter was ignored."""


def _literal(instant_ns: int, form: RangeForm) -> str:
    instant = format_instant(instant_ns)
    return f'"{instant}"' if form == "quoted" else instant


def with_range(query: str, lower_ns: int, form: RangeForm, upper_ns: int | None = None) -> str:
    """``(query) AND timestamp>=lower [AND timestamp<upper]``; no parentheses for no query."""
    clause = f"timestamp>={_literal(lower_ns, form)}"
    if upper_ns is not None:
        clause += f" AND timestamp<{_literal(upper_ns, form)}"
    return f"({query}) AND {clause}" if query.strip() else clause
