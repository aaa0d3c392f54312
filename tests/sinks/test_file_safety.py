"""The file sink on a shared machine: where intent records live and whom they are
trusted from, symbolic links, exact modes whatever the umask, errors that name the file,
and path templates fuzzed with hostile values."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runflow_tail.errors import SinkRetryableError
from runflow_tail.journal import Journal, StateDirLock
from runflow_tail.journal.store import JOURNAL_NAME
from runflow_tail.models import Entry
from runflow_tail.sinks.file import FileSink, FileSinkConfig
from runflow_tail.sinks.rotation import RotationSettings, rotated_files

from tests.support.filesystems import NOBODY, as_nobody, small_filesystem

pytestmark = pytest.mark.anyio


def entries(first_seq: int, count: int, run_id: str = "r1") -> list[Entry]:
    return [
        Entry(
            seq,
            "s",
            f"id-{seq}",
            1_795_000_000_000_000_000 + seq,
            json.dumps({"id": f"id-{seq}", "run_id": run_id}).encode(),
        )
        for seq in range(first_seq, first_seq + count)
    ]


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A directory under /tmp that other users may traverse (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        base.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def intent(path: Path, first_seq: int, sizes: dict[str, int]) -> None:
    path.write_bytes(msgspec.json.encode({"first_seq": first_seq, "last_seq": 9, "sizes": sizes}))


# -- case 7: where the intent record lives --------------------------------------------


@pytest.mark.parametrize("template", ["{date}.jsonl", "{run_id}/out.jsonl"])
async def test_the_intent_record_lives_in_the_sink_directory_not_its_parent(
    template: str,
) -> None:
    """A writable sink directory under a parent this user cannot write: batches are
    written, and the intent record is in the sink's directory."""
    with shared_directory() as base:
        logs = base / "logs"
        logs.mkdir()
        logs.chmod(0o777)
        base.chmod(0o555)
        sink = FileSink(FileSinkConfig(path=logs / template), name="out")
        with as_nobody():
            sink._write_batch(entries(1, 2))
        assert (logs / ".out.runflow-tail-intent").exists()
        assert not (base / ".out.runflow-tail-intent").exists()


def test_a_path_ending_in_a_slash_or_naming_an_unknown_placeholder_is_refused() -> None:
    """check-config refuses a directory as path, an unknown placeholder and '..' in a
    template, each with what is expected."""
    for path, expected in (
        ("/var/log/runflow/", "not a directory"),
        ("/var/log/{run}.jsonl", "unknown placeholder {run}"),
        ("/var/log/{run_id}/../../etc/x", "'..'"),
    ):
        with pytest.raises(ValueError, match=expected):
            FileSinkConfig(path=path)


# -- case 8: intent records and links from other users ---------------------------------


async def test_an_intent_record_planted_by_another_user_truncates_nothing() -> None:
    """In a shared sticky directory, another user's intent record naming this user's file:
    on restart the file keeps every byte."""
    with shared_directory() as base:
        base.chmod(0o1777)
        victim = base / "out.jsonl"
        victim.write_bytes(b"precious\n" * 10)
        planted = base / ".out.runflow-tail-intent"
        intent(planted, 1, {str(victim): 0})
        os.chown(planted, NOBODY, NOBODY)
        sink = FileSink(FileSinkConfig(path=victim), name="out")
        await sink.send(entries(1, 1))
        assert victim.read_bytes().startswith(b"precious\n" * 10)


async def test_an_own_intent_record_naming_a_file_elsewhere_truncates_nothing(
    tmp_path: Path,
) -> None:
    """An intent record (ours) that names a file outside the sink's directory: that file
    is left alone."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_bytes(b"keep me\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    intent(logs / ".out.runflow-tail-intent", 1, {str(elsewhere): 0})
    sink = FileSink(FileSinkConfig(path=logs / "out.jsonl"), name="out")
    await sink.send(entries(1, 1))
    assert elsewhere.read_bytes() == b"keep me\n"


async def test_a_symbolic_link_at_the_intent_path_is_never_written_through(
    tmp_path: Path,
) -> None:
    """A link planted where the intent record goes: the linked file is untouched, and the
    record is a file of the sink's own, mode 0600."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / ".out.runflow-tail-intent").symlink_to(victim)
    sink = FileSink(FileSinkConfig(path=logs / "out.jsonl"), name="out")
    await sink.send(entries(1, 2))
    assert victim.read_bytes() == b"keep me\n"
    record = (logs / ".out.runflow-tail-intent").lstat()
    assert stat.S_ISREG(record.st_mode) and stat.S_IMODE(record.st_mode) == 0o600


async def test_an_output_path_that_is_a_link_is_refused_unless_allowed(tmp_path: Path) -> None:
    """A link at the output path: a retryable error naming it and the option, the target
    untouched; with follow_symlinks = true the entries go through it."""
    target = tmp_path / "target"
    target.write_bytes(b"")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    sink = FileSink(FileSinkConfig(path=link), name="out")
    with pytest.raises(SinkRetryableError, match=f"{link}.*symbolic link.*follow_symlinks"):
        await sink.send(entries(1, 2))
    assert target.read_bytes() == b""
    allowed = FileSink(FileSinkConfig(path=link, follow_symlinks=True), name="out")
    await allowed.send(entries(1, 2))
    assert len(target.read_bytes().splitlines()) == 2


# -- case 9: modes ----------------------------------------------------------------------


async def test_rotated_and_compressed_files_have_the_sink_mode_whatever_the_umask(
    tmp_path: Path,
) -> None:
    """mode = 0o640 under umask 022 and 0o644 under umask 077: the live file, the rotated
    file and its .gz all have exactly the sink's mode."""
    for mode, mask in ((0o640, 0o022), (0o644, 0o077)):
        path = tmp_path / f"out-{mode:o}.jsonl"
        config = FileSinkConfig(
            path=path, mode=mode, rotate=RotationSettings(max_bytes=100, compress=True)
        )
        sink = FileSink(config, name=f"out{mode:o}")
        with umask(mask):
            await sink.send(entries(1, 2))
            await sink.send(entries(3, 2))
        [rotated] = rotated_files(path)
        assert rotated.suffix == ".gz"
        assert stat.S_IMODE(path.stat().st_mode) == mode
        assert stat.S_IMODE(rotated.stat().st_mode) == mode


async def test_the_state_directory_is_0700_and_the_journal_0600_whatever_the_umask(
    tmp_path: Path,
) -> None:
    """Under umask 0 a new state directory is created 0700 and the journal (with its WAL)
    0600."""
    state = tmp_path / "deep" / "state"
    with umask(0), StateDirLock(state):
        journal = await Journal.open(state, max_bytes=1 << 30, dedup_window=600)
        try:
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            for name in (JOURNAL_NAME, JOURNAL_NAME + "-wal"):
                assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
        finally:
            await journal.aclose()


# -- case 10: errors name the file -------------------------------------------------------


async def test_a_read_only_file_system_is_a_clear_retryable_error(tmp_path: Path) -> None:
    """A sink directory on a read-only mount: a retryable error that names the file and
    says the file system is read-only (never a bare repr)."""
    with small_filesystem(tmp_path / "ro", read_only=True) as ro:
        sink = FileSink(FileSinkConfig(path=ro / "out.jsonl"), name="out")
        with pytest.raises(SinkRetryableError) as raised:
            await sink.send(entries(1, 1))
    assert str(ro) in str(raised.value) and "read-only" in str(raised.value)


async def test_permission_denied_names_the_file_and_the_user() -> None:
    """A file this user may not write: the error names it, says permission denied and
    which uid the daemon runs as."""
    with shared_directory() as base:
        path = base / "out.jsonl"
        path.write_bytes(b"")
        path.chmod(0o600)
        sink = FileSink(FileSinkConfig(path=path), name="out")
        base.chmod(0o777)
        with as_nobody(), pytest.raises(SinkRetryableError) as raised:
            sink._write_batch(entries(1, 1))
    assert str(path) in str(raised.value) and f"uid {NOBODY}" in str(raised.value)


# -- path templating, fuzzed ------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")), st.just("..")))
def test_any_run_id_lands_in_one_file_directly_under_the_sink_directory(run_id: str) -> None:
    """Whatever the run id (slashes, dots, NUL, any length, any script), its entries land
    in a file directly in the sink's directory, named at most 100 characters plus suffix."""
    with tempfile.TemporaryDirectory() as directory:
        logs = Path(directory) / "logs"
        sink = FileSink(FileSinkConfig(path=logs / "{run_id}.jsonl", fsync="never"), name="o")
        anyio.run(sink.send, entries(1, 1, run_id=run_id))
        [written] = list(Path(directory).rglob("*.jsonl"))
        assert written.parent == logs and len(written.name) <= 100 + len(".jsonl")
        assert not written.name.startswith(".")
