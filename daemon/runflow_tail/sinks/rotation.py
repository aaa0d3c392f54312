"""Rotating a file sink's files: by size and/or by time, keeping the newest N, optionally gzipped.

Rotated files are named ``<path>.<UTC time>`` (plus ``.gz``), so their names sort by age and
a crash in the middle of a rotation never leaves a half-shifted numbered series behind.
Rotation happens only between batches; a batch never straddles two files.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import time
from pathlib import Path

from pydantic import Field

from runflow_tail.models import ByteSize, Duration, FrozenModel


class RotationSettings(FrozenModel):
    max_bytes: ByteSize | None = None
    """Rotate before a batch would take the file past this size."""
    interval: Duration | None = Field(None, gt=0)
    """Rotate at the first write after each wall-clock boundary of this length (e.g. 1h, 1d)."""
    keep: int | None = Field(10, ge=1)
    """How many rotated files to keep (oldest deleted first); unset keeps all."""
    compress: bool = False
    """gzip rotated files."""


def needs_rotation(path: Path, incoming: int, settings: RotationSettings, now: float) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if stat.st_size == 0:
        return False
    if settings.max_bytes is not None and stat.st_size + incoming > settings.max_bytes:
        return True
    if settings.interval is not None:
        return int(stat.st_mtime // settings.interval) != int(now // settings.interval)
    return False


def rotate(path: Path, settings: RotationSettings, now: float, *, mode: int = 0o640) -> Path:
    """Move ``path`` aside; returns where it went (compressed if asked, with ``mode``)."""
    # Microseconds keep names unique and in order even after pruning freed older names.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:] + "Z"
    target = path.with_name(f"{path.name}.{stamp}")
    serial = 1
    while target.exists() or target.with_name(target.name + ".gz").exists():
        target = path.with_name(f"{path.name}.{stamp}.{serial}")
        serial += 1
    path.rename(target)
    if settings.compress:
        target = _compress(target, mode)
    _prune(path, settings.keep)
    return target


def _compress(source: Path, mode: int) -> Path:
    compressed = source.with_name(source.name + ".gz")
    partial = source.with_name(source.name + ".gz.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # left by a crash mid-compression
    # The sink's mode exactly, whatever the umask; never through a planted link.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    descriptor = os.open(partial, flags, mode)
    os.fchmod(descriptor, mode)
    with (
        source.open("rb") as raw,
        os.fdopen(descriptor, "wb") as out,
        gzip.GzipFile(filename=source.name, mode="wb", fileobj=out) as packed,
    ):
        shutil.copyfileobj(raw, packed, 1024 * 1024)
    partial.rename(compressed)
    source.unlink()
    return compressed


def rotated_files(path: Path) -> list[Path]:
    """The rotated siblings of ``path``, oldest first."""
    prefix = path.name + "."
    found = [
        candidate
        for candidate in path.parent.glob(prefix + "*")
        if candidate.name[len(prefix) : len(prefix) + 1].isdigit()
        and not candidate.name.endswith(".partial")
    ]
    return sorted(found, key=lambda p: _sort_key(p.name[len(prefix) :]))


def _sort_key(suffix: str) -> tuple[str, int]:
    stamp, _, serial = suffix.removesuffix(".gz").partition("Z")
    return stamp, int(serial.lstrip(".") or 0) if serial.lstrip(".").isdigit() else 0


def _prune(path: Path, keep: int | None) -> None:
    if keep is None:
        return
    rotated = rotated_files(path)
    for old in rotated[: max(0, len(rotated) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
