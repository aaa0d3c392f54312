"""The file sink: JSON Lines, each entry's bytes exactly as the API sent them.

Exactly once across crashes without help from the delivery loop: before a batch is
written, the sink records a small *intent* beside the file (which files the batch
touches, their sizes before it, and the batch's seq range). After a crash, the first
batch re-sent starts where the crashed one did; if its first seq is the intent's, the
crashed batch was never committed, so each file is cut back to its recorded size and
the batch is written whole. If the batch is later than the intent, the crashed batch
had been committed and the intent is simply dropped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anyio
import msgspec

from runflow_tail.errors import SinkRetryableError
from runflow_tail.models import Entry, FileMode, PositiveDuration
from runflow_tail.observability import get_logger
from runflow_tail.sinks.base import BatchSettings, SinkConfigBase
from runflow_tail.sinks.rotation import RotationSettings, needs_rotation, rotate

DEFAULT_FILE_MODE = 0o640
INTENT_SUFFIX = ".runflow-tail-intent"

log = get_logger(__name__)


class FileSinkConfig(SinkConfigBase):
    type: Literal["file"] = "file"
    path: Path
    """Where to write; may contain {stream}, {run_id} and {date} (UTC, YYYY-MM-DD)."""
    mode: FileMode = DEFAULT_FILE_MODE
    """Permission bits for new files (0640 by default: the group may read, others not)."""
    fsync: Literal["batch", "interval", "never"] = "batch"
    fsync_interval: PositiveDuration = 1.0
    rotate: RotationSettings = RotationSettings()
    """[sinks.NAME.rotate] max_bytes, interval, keep, compress (default: never rotate)."""
    batch: BatchSettings | bool = BatchSettings(max_events=10_000)
    # Large batches (still capped at 4 MiB): one write, one fsync and one offset commit
    # per batch, and the offset commit waits its turn behind the poller's page commits.

    def build(self, name: str) -> FileSink:
        return FileSink(self, name=name)


class _Intent(msgspec.Struct):
    first_seq: int
    last_seq: int
    sizes: dict[str, int]


class FileSink:
    def __init__(self, config: FileSinkConfig, *, name: str) -> None:
        self._config = config
        self._template = str(config.path)
        self._templated = "{" in self._template
        anchor = Path(self._template.split("{", 1)[0] or ".")
        intent_dir = anchor.parent if self._templated else config.path.parent
        self._intent_path = intent_dir / f".{name}{INTENT_SUFFIX}"
        self._intent_checked = False
        self._last_fsync = 0.0

    async def send(self, batch: Sequence[Entry]) -> None:
        await anyio.to_thread.run_sync(self._write_batch, batch)

    async def aclose(self) -> None:
        return None

    def _path_for(self, entry: Entry) -> str:
        if not self._templated:
            return self._template
        data = entry.data() if "{run_id}" in self._template else {}
        return self._template.format(
            stream=entry.stream,
            run_id=str(data.get("run_id") or "unknown"),
            date=time.strftime("%Y-%m-%d", time.gmtime(entry.timestamp_ns // 1_000_000_000)),
        )

    def _write_batch(self, batch: Sequence[Entry]) -> None:
        if not self._intent_checked:
            self._recover(batch[0].seq)
        lines: dict[str, list[bytes]] = {}
        if self._templated:
            for entry in batch:
                lines.setdefault(self._path_for(entry), []).append(entry.raw)
        else:
            lines[self._template] = [entry.raw for entry in batch]
        self._rotate_if_due(lines)
        sizes = {path: _size(path) for path in lines}
        self._write_intent(_Intent(batch[0].seq, batch[-1].seq, sizes))
        try:
            for path, chunk in lines.items():
                # One copy of the batch, not one per entry and another to join them (the
                # empty last item gives the last line its newline).
                chunk.append(b"")
                self._append(path, b"\n".join(chunk))
        except OSError as exc:
            # Leave the files as they were before this batch: the retry writes it whole.
            for path, size in sizes.items():
                _truncate_to(path, size)
            raise SinkRetryableError(_describe_os_error(exc, path)) from exc

    def _rotate_if_due(self, lines: dict[str, list[bytes]]) -> None:
        settings = self._config.rotate
        if settings.max_bytes is None and settings.interval is None:
            return
        now = time.time()
        for path, chunk in lines.items():
            incoming = sum(len(line) + 1 for line in chunk)
            if needs_rotation(Path(path), incoming, settings, now):
                try:
                    moved = rotate(Path(path), settings, now)
                except OSError as exc:
                    raise SinkRetryableError(_describe_os_error(exc, path)) from exc
                log.info("sink.file_rotated", path=path, rotated_to=str(moved))

    def _append(self, path: str, payload: bytes) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self._config.mode)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(descriptor, view)
                view = view[written:]
            if self._should_fsync():
                os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _should_fsync(self) -> bool:
        if self._config.fsync == "batch":
            return True
        if self._config.fsync == "interval":
            now = time.monotonic()
            if now - self._last_fsync >= self._config.fsync_interval:
                self._last_fsync = now
                return True
        return False

    def _write_intent(self, intent: _Intent) -> None:
        self._intent_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self._intent_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, msgspec.json.encode(intent))
            if self._config.fsync == "batch":
                os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _recover(self, first_seq: int) -> None:
        """Undo the part of a batch that a crash left written but uncommitted."""
        self._intent_checked = True
        try:
            intent = msgspec.json.decode(self._intent_path.read_bytes(), type=_Intent)
        except (FileNotFoundError, msgspec.DecodeError):
            intent = None
        if intent is not None and intent.first_seq == first_seq:
            for path, size in intent.sizes.items():
                _truncate_to(path, size)
        if not self._templated:
            _repair_torn_line(self._template)


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0


def _truncate_to(path: str, size: int) -> None:
    # Never extend: logrotate's copytruncate may have emptied the file meanwhile.
    with contextlib.suppress(FileNotFoundError):
        if Path(path).stat().st_size > size:
            os.truncate(path, size)


def _repair_torn_line(path: str) -> None:
    """Cut an unterminated last line so the file stays valid JSON Lines."""
    try:
        with Path(path).open("rb+") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end == 0:
                return
            handle.seek(end - 1)
            if handle.read(1) == b"\n":
                return
            position = end
            while position > 0:
                step = min(65536, position)
                position -= step
                handle.seek(position)
                chunk = handle.read(step)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    handle.truncate(position + newline + 1)
                    return
            handle.truncate(0)
    except FileNotFoundError:
        return


def _describe_os_error(exc: OSError, path: str) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {path}: the disk is full; will retry"
    if exc.errno == errno.EFBIG:
        return f"cannot write {path}: the file size limit is reached; will retry"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {path}: permission denied; fix the file's permissions"
    return f"cannot write {path}: {exc.strerror or exc}; will retry"
