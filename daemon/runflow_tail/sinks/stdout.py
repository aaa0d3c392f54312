"""The stdout sink: JSON Lines as received, logfmt, a readable pretty view, or a template."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, Literal

import anyio
import msgspec

from runflow_tail.dotted import DottedFormatter
from runflow_tail.errors import SinkClosedError
from runflow_tail.models import Entry
from runflow_tail.sinks.base import BatchSettings, SinkConfigBase
from runflow_tail.times import NS_PER_SECOND

Color = Literal["auto", "always", "never"]

_LEVEL_STYLE = {
    "fatal": "\x1b[1;97;41m",
    "critical": "\x1b[1;97;41m",
    "error": "\x1b[1;31m",
    "warning": "\x1b[33m",
    "warn": "\x1b[33m",
    "info": "\x1b[32m",
    "debug": "\x1b[2m",
    "trace": "\x1b[2m",
}
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"
_ERROR_LEVELS = frozenset({"error", "fatal", "critical"})


class StdoutSinkConfig(SinkConfigBase):
    type: Literal["stdout"] = "stdout"
    format: Literal["json", "logfmt", "pretty", "template"] = "pretty"
    template: str = "{timestamp} {level_code} {message}"
    """Used by format = "template": `{field}`, `{run.failure_code}`; missing fields print empty."""
    color: Color = "auto"
    """Color for `pretty`: only on a TTY (auto), always, or never. NO_COLOR turns auto off."""
    utc: bool = False
    """Show pretty timestamps in UTC instead of local time."""
    meta_keys: tuple[str, ...] | None = None
    """Which `meta` keys `pretty` shows (default: all)."""
    batch: BatchSettings = BatchSettings(max_events=500)

    def needs_fields(self) -> bool:
        return self.format != "json"  # JSON Lines are the entries' bytes

    def build(self, name: str) -> StdoutSink:
        return StdoutSink(self, sys.stdout.buffer)


class StdoutSink:
    """Writes each batch in one write and flushes, so a pipe sees lines at once."""

    def __init__(self, config: StdoutSinkConfig, stream: BinaryIO) -> None:
        self._stream = stream
        self._render = make_renderer(config, isatty=_isatty(stream))

    async def send(self, batch: Sequence[Entry]) -> None:
        payload = b"".join(self._render(entry) for entry in batch)
        await anyio.to_thread.run_sync(self._write, payload)

    def _write(self, payload: bytes) -> None:
        try:
            self._stream.write(payload)
            self._stream.flush()
        except (BrokenPipeError, ValueError) as exc:
            # The reader went away (`| head`) or the stream was closed: a clean end.
            raise SinkClosedError("standard output was closed by the reader") from exc

    async def aclose(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            await anyio.to_thread.run_sync(self._stream.flush)


def _isatty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_renderer(config: StdoutSinkConfig, *, isatty: bool) -> Any:
    """One function per format, turning an entry into the bytes of one output line."""
    if config.format == "json":
        return _render_json
    if config.format == "logfmt":
        return _render_logfmt
    if config.format == "template":
        formatter = DottedFormatter()
        return lambda entry: (formatter.format(config.template, **entry.data()) + "\n").encode()
    use_color = config.color == "always" or (config.color == "auto" and isatty)
    return PrettyRenderer(utc=config.utc, color=use_color, meta_keys=config.meta_keys).render


def _render_json(entry: Entry) -> bytes:
    return entry.raw + b"\n"


def _render_logfmt(entry: Entry) -> bytes:
    parts = [f"{key}={_logfmt_value(value)}" for key, value in entry.data().items()]
    return (" ".join(parts) + "\n").encode()


def _logfmt_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif value is None:
        return ""
    else:
        text = msgspec.json.encode(value).decode()
    if text and not any(ch in text for ch in ' ="\\\n\t'):
        return text
    return msgspec.json.encode(text).decode()


_LABEL_WIDTH_MAX = 24


class PrettyRenderer:
    """``12:04:05.123 ERROR  7f3a9c21 message  node=llm step=3`` with levels in color; an
    entry that carries its run (the stream fetches ``run``) also shows the run's label,
    ``[its model's name]``, beside the short run id: the API gives runs no name of their own."""

    def __init__(self, *, utc: bool, color: bool, meta_keys: tuple[str, ...] | None) -> None:
        self._utc = utc
        self._color = color
        self._meta_keys = meta_keys
        self._label_width = 0
        """The widest label so far: labels line up without knowing every run ahead."""

    def render(self, entry: Entry) -> bytes:
        data = entry.data()
        level = str(data.get("level_code") or "-")
        run_id = str(data.get("run_id") or "")
        short_run = run_id.replace("-", "")[-8:] if run_id else "-"
        message = str(data.get("message", "")).replace("\n", "\n    ")
        meta = data.get("meta")
        details = ""
        if isinstance(meta, Mapping):
            keys = self._meta_keys if self._meta_keys is not None else tuple(meta)
            details = " ".join(f"{key}={_logfmt_value(meta[key])}" for key in keys if key in meta)
        stamp = self._clock(entry.timestamp_ns)
        label = run_label(data.get("run"))
        if label:
            if len(label) > _LABEL_WIDTH_MAX:
                label = label[: _LABEL_WIDTH_MAX - 1] + "…"
            label = f"[{label}]"
            self._label_width = max(self._label_width, len(label))
            label = label.ljust(self._label_width)
        level_text = f"{level.upper():<7}"
        if self._color:
            style = _LEVEL_STYLE.get(level.lower(), "")
            level_text = f"{style}{level_text}{_RESET}"
            stamp = f"{_DIM}{stamp}{_RESET}"
            short_run = f"{_DIM}{short_run}{_RESET}"
            label = f"{_BOLD}{label}{_RESET}" if label else ""
            if level.lower() in _ERROR_LEVELS:
                message = f"{_BOLD}{message}{_RESET}"
            if details:
                details = f"{_DIM}{details}{_RESET}"
        line = f"{stamp} {level_text} {short_run} {label + ' ' if label else ''}{message}"
        if details:
            line += f"  {details}"
        return (line + "\n").encode("utf-8", "replace")

    def _clock(self, timestamp_ns: int) -> str:
        seconds, remainder = divmod(timestamp_ns, NS_PER_SECOND)
        parts = time.gmtime(seconds) if self._utc else time.localtime(seconds)
        suffix = "Z" if self._utc else ""
        return time.strftime("%H:%M:%S", parts) + f".{remainder // 1_000_000:03d}{suffix}"


def run_label(run: Any) -> str:
    """What a person calls a run: its model's name (the current run schema embeds the
    model; the older one only has ids, so no label)."""
    model = run.get("model") if isinstance(run, Mapping) else None
    name = model.get("name") if isinstance(model, Mapping) else None
    return name.strip() if isinstance(name, str) else ""
