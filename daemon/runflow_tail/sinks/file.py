"""The file sink: JSON Lines, each entry's bytes exactly as the API sent them.

Exactly once across crashes without help from the delivery loop: before a batch is
written, the sink records a small *intent* in its directory (which files the batch
touches, their sizes before it, and the batch's seq range). After a crash, the first
batch re-sent starts where the crashed one did; if its first seq is the intent's, the
crashed batch was never committed, so each file is cut back to its recorded size and
the batch is written whole. If the batch is later than the intent, the crashed batch
had been committed and the intent is simply dropped.

On a shared machine the sink trusts nothing it did not make: the intent record is
created anew for each batch (``O_EXCL | O_NOFOLLOW``, mode 0600), and on restart it is
believed only if this user owns it, and only for files under the sink's directory that
this user owns. Output files are opened without following symbolic links unless
``follow_symlinks = true``. Every file the sink creates gets ``mode`` exactly (rotated and
compressed ones too), whatever the umask; directories it creates get the same bits plus
search where read is granted.
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
from pydantic import field_validator

from runflow_tail.directories import make_directories
from runflow_tail.errors import SinkRejectedError, SinkRetryableError
from runflow_tail.models import Entry, FileMode, PositiveDuration
from runflow_tail.observability import get_logger
from runflow_tail.sinks.base import BatchSettings, SinkConfigBase
from runflow_tail.sinks.file_paths import PathTemplate, check_template
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
    follow_symlinks: bool = False
    """Write through a symbolic link at the output path (off: such a path is an error)."""
    fsync: Literal["batch", "interval", "never"] = "batch"
    fsync_interval: PositiveDuration = 1.0
    rotate: RotationSettings = RotationSettings()
    """[sinks.NAME.rotate] max_bytes, interval, keep, compress (default: never rotate)."""
    batch: BatchSettings | bool = BatchSettings(max_events=10_000)
    # Large batches (still capped at 4 MiB): one write, one fsync and one offset commit
    # per batch, and the offset commit waits its turn behind the poller's page commits.

    @field_validator("path", mode="before")
    @classmethod
    def _path_is_a_safe_template(cls, value: object) -> object:
        if isinstance(value, str | Path):
            check_template(str(value))
        return value

    def needs_fields(self) -> bool:
        return False  # bytes as received; {run_id} is read leniently (file_paths)

    def build(self, name: str) -> FileSink:
        return FileSink(self, name=name)


class _Intent(msgspec.Struct):
    first_seq: int
    last_seq: int
    sizes: dict[str, int]


class FileSink:
    def __init__(self, config: FileSinkConfig, *, name: str) -> None:
        self._config = config
        self._paths = PathTemplate(str(config.path))
        self._intent_path = self._paths.directory / f".{name}{INTENT_SUFFIX}"
        self._intent_checked = False
        self._last_fsync = 0.0
        self._mode = config.mode
        self._dir_mode = config.mode | ((config.mode & 0o444) >> 2) | 0o700
        self._nofollow = 0 if config.follow_symlinks else os.O_NOFOLLOW

    async def send(self, batch: Sequence[Entry]) -> None:
        await anyio.to_thread.run_sync(self._write_batch, batch)

    async def aclose(self) -> None:
        return None

    def _write_batch(self, batch: Sequence[Entry]) -> None:
        # Any OS error names its file and what to do; the delivery loop retries (a full
        # disk or a permission problem stalls only this sink, until it can write again).
        where = str(self._paths.directory)
        try:
            if not self._intent_checked:
                where = str(self._intent_path)
                self._recover(batch[0].seq)
            lines: dict[str, list[bytes]] = {}
            try:
                for entry in batch:
                    lines.setdefault(self._paths.path_for(entry), []).append(entry.raw)
            except ValueError as exc:
                raise SinkRejectedError(f"file sink path: {exc}") from exc
            self._rotate_if_due(lines)
            sizes = {path: self._size(path) for path in lines}
            where = str(self._intent_path)
            self._write_intent(_Intent(batch[0].seq, batch[-1].seq, sizes))
        except OSError as exc:
            raise SinkRetryableError(describe_os_error(exc, exc.filename or where)) from exc
        path = ""
        try:
            for path, chunk in lines.items():
                # One copy of the batch, not one per entry and another to join them (the
                # empty last item gives the last line its newline).
                chunk.append(b"")
                self._append(path, b"\n".join(chunk))
        except OSError as exc:
            # Leave the files as they were before this batch: the retry writes it whole.
            for written, size in sizes.items():
                with contextlib.suppress(OSError):
                    self._truncate_to(written, size)
            raise SinkRetryableError(describe_os_error(exc, exc.filename or path)) from exc

    def _rotate_if_due(self, lines: dict[str, list[bytes]]) -> None:
        settings = self._config.rotate
        if settings.max_bytes is None and settings.interval is None:
            return
        now = time.time()
        for path, chunk in lines.items():
            incoming = sum(len(line) + 1 for line in chunk)
            if needs_rotation(Path(path), incoming, settings, now):
                moved = rotate(Path(path), settings, now, mode=self._mode)
                log.info("sink.file_rotated", path=path, rotated_to=str(moved))

    def _size(self, path: str) -> int:
        try:
            return Path(path).stat(follow_symlinks=not self._nofollow).st_size
        except FileNotFoundError:
            return 0

    def _open_for_append(self, path: str) -> int:
        flags = os.O_WRONLY | os.O_APPEND | self._nofollow
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            make_directories(Path(path).parent, self._dir_mode)
        try:
            descriptor = os.open(path, flags | os.O_CREAT | os.O_EXCL, self._mode)
        except FileExistsError:
            return os.open(path, flags)  # created meanwhile (logrotate's create)
        os.fchmod(descriptor, self._mode)
        return descriptor

    def _append(self, path: str, payload: bytes) -> None:
        descriptor = self._open_for_append(path)
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
        make_directories(self._intent_path.parent, self._dir_mode)
        # Made anew each time (never opened through whatever sits at its name): unlink
        # removes a link itself, and O_EXCL | O_NOFOLLOW refuse anything planted meanwhile.
        with contextlib.suppress(FileNotFoundError):
            self._intent_path.unlink()
        descriptor = os.open(
            self._intent_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
        )
        try:
            os.write(descriptor, msgspec.json.encode(intent))
            if self._config.fsync == "batch":
                os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _recover(self, first_seq: int) -> None:
        """Undo the part of a batch that a crash left written but uncommitted."""
        intent = self._read_intent()
        self._intent_checked = True
        if intent is not None and intent.first_seq == first_seq:
            for path, size in intent.sizes.items():
                if not self._paths.holds(path):
                    log.warning(
                        "sink.file_intent_path_ignored",
                        intent=str(self._intent_path),
                        path=path,
                        reason="not under the sink's directory; left untouched",
                    )
                    continue
                self._truncate_to(path, size)
        if not self._paths.templated:
            self._repair_torn_line(self._paths.template)

    def _read_intent(self) -> _Intent | None:
        """The intent record, if this user made it (a record someone else planted is
        ignored: it could name any file)."""
        try:
            descriptor = os.open(self._intent_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            log.warning(
                "sink.file_intent_ignored",
                intent=str(self._intent_path),
                reason="a symbolic link, not a record this sink wrote",
            )
            return None
        try:
            if not self._owned_regular(descriptor):
                log.warning(
                    "sink.file_intent_ignored",
                    intent=str(self._intent_path),
                    reason=f"not a regular file owned by this user (uid {os.geteuid()})",
                )
                return None
            with os.fdopen(os.dup(descriptor), "rb") as handle:
                content = handle.read(1024 * 1024)
        finally:
            os.close(descriptor)
        try:
            return msgspec.json.decode(content, type=_Intent)
        except msgspec.DecodeError:
            return None

    @staticmethod
    def _owned_regular(descriptor: int) -> bool:
        status = os.fstat(descriptor)
        return status.st_uid == os.geteuid() and (status.st_mode & 0o170000) == 0o100000

    def _truncate_to(self, path: str, size: int) -> None:
        """Cut ``path`` back to ``size``: never extend (logrotate's copytruncate may have
        emptied it meanwhile), never through a link, only a file this user owns."""
        try:
            descriptor = os.open(path, os.O_WRONLY | self._nofollow)
        except FileNotFoundError:
            return
        try:
            if not self._owned_regular(descriptor):
                log.warning(
                    "sink.file_truncate_refused",
                    path=path,
                    reason=f"not a regular file owned by this user (uid {os.geteuid()})",
                )
                return
            if os.fstat(descriptor).st_size > size:
                os.ftruncate(descriptor, size)
        finally:
            os.close(descriptor)

    def _repair_torn_line(self, path: str) -> None:
        """Cut an unterminated last line so the file stays valid JSON Lines."""
        try:
            descriptor = os.open(path, os.O_RDWR | self._nofollow)
        except FileNotFoundError:
            return
        with os.fdopen(descriptor, "rb+") as handle:
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


def describe_os_error(exc: OSError, path: str) -> str:
    """An OS error as one line: which file, what happened, what to do."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {path}: the disk is full; will retry"
    if code == errno.EFBIG:
        return f"cannot write {path}: the file size limit is reached; will retry"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"cannot write {path}: permission denied (the daemon runs as uid {os.geteuid()}); "
            "fix the permissions of the file or its directory; will retry"
        )
    if code == errno.EROFS:
        return f"cannot write {path}: the file system is read-only; will retry"
    if code == errno.ELOOP:
        return (
            f"cannot write {path}: it is a symbolic link, which the file sink does not follow "
            "(set follow_symlinks = true to allow it); will retry"
        )
    if code == errno.EISDIR:
        return f"cannot write {path}: it is a directory; will retry"
    return f"cannot write {path}: {exc.strerror or exc}; will retry"
