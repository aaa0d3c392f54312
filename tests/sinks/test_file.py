"""The file sink: JSON Lines as received, crash repair, templates, rotation."""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from pathlib import Path

import pytest
from runflow_tail.models import Entry
from runflow_tail.sinks.file import FileSink, FileSinkConfig, _Intent
from runflow_tail.sinks.rotation import RotationSettings, rotated_files

pytestmark = pytest.mark.anyio

DAY_NS = 86_400 * 1_000_000_000


def _entries(first_seq: int, count: int, *, stream: str = "s", run_id: str = "r1") -> list[Entry]:
    return [
        Entry(
            seq,
            stream,
            f"id-{seq}",
            1_795_000_000_000_000_000 + seq,
            json.dumps({"id": f"id-{seq}", "run_id": run_id, "message": "x" * 20}).encode(),
        )
        for seq in range(first_seq, first_seq + count)
    ]


def _ids(*paths: Path) -> list[str]:
    ids = []
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            ids.extend(json.loads(line)["id"] for line in handle.read().splitlines())
    return ids


async def test_lines_are_the_entries_bytes_and_new_files_are_0640(tmp_path: Path) -> None:
    """Each line is an entry's bytes exactly; a new file gets mode 0640."""
    path = tmp_path / "out.jsonl"
    sink = FileSink(FileSinkConfig(path=path), name="out")
    batch = _entries(1, 3)
    await sink.send(batch)
    assert path.read_bytes() == b"".join(e.raw + b"\n" for e in batch)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


async def test_path_templates_split_by_stream_run_and_date(tmp_path: Path) -> None:
    """{stream}, {run_id} and {date} choose the file per entry."""
    template = tmp_path / "{stream}" / "{run_id}-{date}.jsonl"
    sink = FileSink(FileSinkConfig(path=template), name="out")
    await sink.send(
        _entries(1, 2, stream="a", run_id="r1") + _entries(3, 1, stream="b", run_id="r2")
    )
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert files == ["a/r1-2026-11-18.jsonl", "b/r2-2026-11-18.jsonl"]


async def test_a_batch_cut_short_by_a_crash_is_written_once_on_restart(tmp_path: Path) -> None:
    """A crash mid-batch leaves part of it (and a torn line); the restarted sink, sent the same
    batch, leaves every entry exactly once and every line whole."""
    path = tmp_path / "out.jsonl"
    first = FileSink(FileSinkConfig(path=path), name="out")
    await first.send(_entries(1, 5))
    # the crash: the intent for batch 6..10 is written, then half a batch and a torn line
    crashed = _entries(6, 5)
    first._write_intent(_Intent(6, 10, {str(path): path.stat().st_size}))
    with path.open("ab") as handle:
        handle.write(crashed[0].raw + b"\n" + crashed[1].raw[:10])
    restarted = FileSink(FileSinkConfig(path=path), name="out")
    await restarted.send(crashed)
    assert _ids(path) == [f"id-{n}" for n in range(1, 11)]


async def test_a_committed_batch_is_not_cut_back(tmp_path: Path) -> None:
    """If the crash came after the offset was committed, the next batch starts later and the
    file is left as it is."""
    path = tmp_path / "out.jsonl"
    sink = FileSink(FileSinkConfig(path=path), name="out")
    await sink.send(_entries(1, 5))
    restarted = FileSink(FileSinkConfig(path=path), name="out")
    await restarted.send(_entries(6, 2))
    assert _ids(path) == [f"id-{n}" for n in range(1, 8)]


async def test_a_torn_last_line_without_an_intent_is_repaired(tmp_path: Path) -> None:
    """A file ending in half a line (no intent record) is cut back to its last whole line."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "old"}\n{"id": "to')
    sink = FileSink(FileSinkConfig(path=path), name="out")
    await sink.send(_entries(1, 1))
    assert _ids(path) == ["old", "id-1"]


async def test_size_rotation_keeps_every_entry_once_and_prunes(tmp_path: Path) -> None:
    """Rotating by size moves files aside between batches; the newest `keep` remain, and the
    rotated plus current files hold every entry of those batches once."""
    path = tmp_path / "out.jsonl"
    rotation = RotationSettings(max_bytes=600, keep=3, compress=True)
    sink = FileSink(FileSinkConfig(path=path, rotate=rotation), name="out")
    for first in range(1, 101, 5):
        await sink.send(_entries(first, 5))
    rotated = rotated_files(path)
    assert len(rotated) == 3 and all(p.suffix == ".gz" for p in rotated)
    ids = _ids(*rotated, path)
    assert ids == [f"id-{n}" for n in range(101 - len(ids), 101)]
    assert all(p.stat().st_size <= 600 for p in [path])


async def test_time_rotation_moves_a_file_from_an_earlier_period_aside(tmp_path: Path) -> None:
    """With an interval, the first batch in a new period starts a new file."""
    path = tmp_path / "out.jsonl"
    sink = FileSink(FileSinkConfig(path=path, rotate=RotationSettings(interval=3600)), name="out")
    await sink.send(_entries(1, 2))
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    await sink.send(_entries(3, 2))
    assert [_ids(p) for p in rotated_files(path)] == [["id-1", "id-2"]]
    assert _ids(path) == ["id-3", "id-4"]


async def test_disk_errors_leave_the_file_as_before_and_ask_for_a_retry(tmp_path: Path) -> None:
    """A write that fails (here: the directory is read-only) raises a retryable error that
    says what is wrong, and leaves no partial batch behind."""
    from runflow_tail.errors import SinkRetryableError

    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    sink = FileSink(FileSinkConfig(path=directory / "out.jsonl"), name="out")
    with pytest.raises(SinkRetryableError, match="permission denied"):
        await sink.send(_entries(1, 2))
