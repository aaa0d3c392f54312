"""Where a file sink writes: its path template, filled with values that cannot escape it.

``{run_id}`` comes from the API's data, so it is escaped before it becomes part of a path:
every character but ASCII letters, digits, ``_``, ``-`` and ``.`` becomes ``%XX`` (its
UTF-8 bytes, so ``/`` is ``%2F``, NUL is ``%00`` and ``%`` itself ``%25``), a leading
``.`` becomes ``%2E`` (no ``.``, ``..`` or hidden names), an empty value is ``unknown``,
and a value that would be longer than 100 characters keeps its first 83 and ends in
``~`` and 16 hex digits of the value's SHA-256 (``~`` never appears otherwise, so a cut
name never equals another value's). ``{stream}`` (a configured name) is escaped the
same way; ``{date}`` is the entry's UTC date. After filling, the path must still lie
under the template's static directory (the part before the first ``{``).
"""

from __future__ import annotations

import hashlib
import os
import re
import string
import time
from pathlib import Path
from typing import Any

import msgspec

from runflow_tail.models import Entry

PLACEHOLDERS = ("stream", "run_id", "date")
MAX_VALUE_CHARS = 100
UNKNOWN = "unknown"
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", re.ASCII)
_SAFE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


class _RunIdOnly(msgspec.Struct):
    run_id: Any = None


_decode_run_id = msgspec.json.Decoder(_RunIdOnly).decode


def escape(value: str) -> str:
    """``value`` as one safe path component (see the module's docstring)."""
    if _PLAIN.fullmatch(value):
        return value  # a UUID, a stream name: the usual case, unchanged
    if not value:
        return UNKNOWN
    parts = [
        character
        if character in _SAFE_CHARACTERS
        else "".join(f"%{byte:02X}" for byte in character.encode("utf-8", "surrogatepass"))
        for character in value
    ]
    text = "".join(parts)
    if text.startswith("."):
        text = "%2E" + text[1:]
    if len(text) > MAX_VALUE_CHARS:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        text = text[: MAX_VALUE_CHARS - 17] + "~" + digest
    return text


def check_template(template: str) -> str:
    """A configured ``path``: a file (not a directory), known placeholders only, and no
    ``..`` that could lead a filled path out of its directory."""
    if "\0" in template:
        raise ValueError("the path holds a NUL character")
    if template.endswith(("/", os.sep)):
        raise ValueError("expected a file path, not a directory (it ends in '/')")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(
            f"not a valid template ({exc}); use {{stream}}, {{run_id}}, {{date}}"
        ) from None
    unknown = sorted({name for name in names if name not in PLACEHOLDERS})
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}}; expected {{stream}}, {{run_id}} or {{date}}"
        )
    if names and ".." in Path(template).parts:
        raise ValueError("a path with placeholders must not contain '..'")
    return template


class PathTemplate:
    """A sink's ``path``: which file an entry goes to, and the directory it is all under."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.templated = "{" in template
        static = template.split("{", 1)[0] if self.templated else template
        # dirname, not Path.parent: the directory of "/x/logs/" is "/x/logs".
        self.directory = Path(os.path.dirname(static) or ".")  # noqa: PTH120
        """Every file of the sink lies under this directory (intent records live here)."""
        self._prefix = static
        # Lexical, not Path.resolve(): whether a name is under the directory, not where
        # links point (following them is the decision of the open that comes later).
        self._inside = os.path.normpath(os.path.abspath(self.directory))  # noqa: PTH100
        self._needs_run_id = "{run_id}" in template

    def path_for(self, entry: Entry) -> str:
        if not self.templated:
            return self.template
        run_id = _run_id(entry) if self._needs_run_id else ""
        path = self.template.format(
            stream=escape(entry.stream),
            run_id=escape(run_id),
            date=time.strftime("%Y-%m-%d", time.gmtime(entry.timestamp_ns // 1_000_000_000)),
        )
        if not (path.startswith(self._prefix) and self.holds(path)):
            # Cannot happen with an escaped value and a checked template; never write there.
            raise ValueError(f"{path!r} is not under {str(self.directory)!r}")
        return path

    def holds(self, path: str) -> bool:
        """Whether ``path`` lies under the sink's directory (for intent records on restart)."""
        resolved = os.path.normpath(os.path.abspath(path))  # noqa: PTH100 - lexical
        return resolved.startswith(self._inside.rstrip(os.sep) + os.sep)


def _run_id(entry: Entry) -> str:
    """The entry's run id as text; read leniently (only that field is decoded), so an entry
    whose other fields are broken still lands in its run's file."""
    try:
        value = _decode_run_id(entry.raw).run_id
    except (msgspec.DecodeError, RecursionError):
        return UNKNOWN
    if value is None or value == "":
        return UNKNOWN
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()
