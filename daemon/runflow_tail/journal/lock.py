"""One daemon per state directory: an exclusive, non-blocking ``flock`` on ``<dir>/lock``.

The kernel drops the lock when the process dies, so a SIGKILLed daemon never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from runflow_tail.directories import make_directories
from runflow_tail.errors import StateError, StateLocked

LOCK_NAME = "lock"


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._descriptor: int | None = None

    def acquire(self) -> None:
        try:
            # Private: the journal holds every entry fetched.
            make_directories(self.path.parent, 0o700)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot use state directory {self.path.parent}: {exc.strerror}; "
                "check state.dir and its permissions"
            ) from exc
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise StateLocked(
                f"another runflow-tail{holder} is using the state directory "
                f"{self.path.parent}; stop it first, or give this one its own state.dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def is_locked(state_dir: Path) -> bool:
    """Whether a daemon currently holds ``state_dir`` (for read-only operator commands)."""
    try:
        descriptor = os.open(state_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def _read_holder(descriptor: int) -> str:
    try:
        pid = os.pread(descriptor, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
