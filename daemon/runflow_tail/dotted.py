"""Dotted paths into decoded JSON: ``run.status_code`` in filters' neighbours, templates,
group keys and the sandbox's sorts, looked up one way everywhere."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any


def lookup(data: Any, path: str) -> Any:
    """The value at ``path`` (``"run.model.name"``), or None where any step is missing."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class DottedFormatter(string.Formatter):
    """``str.format`` that reads ``{run.failure_message}`` as a path into nested mappings
    and prints a missing value as empty, so a template never fails on absent data."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        value = lookup(kwargs, field_name)
        return ("" if value is None else value), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            return str(super().format_field(value, format_spec))
        except (TypeError, ValueError):
            # A spec that does not fit the value (":.1f" on an empty field) must not lose
            # the line or the alert it belongs to.
            return str(value)
