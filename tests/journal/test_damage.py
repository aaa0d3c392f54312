"""A damaged journal and a full disk under it: the documented message and exit 3 for the
first, wherever it is found; a pause that loses nothing for the second."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from runflow_tail import journal as journal_module
from runflow_tail.config.model import Settings
from runflow_tail.errors import JournalUnreadable
from runflow_tail.journal import CursorState, Journal, JournalStore
from runflow_tail.journal import store as store_module
from runflow_tail.journal.store import JOURNAL_NAME
from runflow_tail.models import FetchedEntry
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.file import FileSinkConfig

from tests.support.filesystems import small_filesystem
from tests.support.harness import run_cli, settings_for, wait_for
from tests.support.hostile import hostile_api, item


def filled_journal(state_dir: Path, entries: int = 4000) -> Path:
    """A closed journal of ``entries`` entries (dozens of pages)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    store = JournalStore(state_dir / JOURNAL_NAME)
    rows = [
        FetchedEntry(f"id-{i:06d}", (1_700_000_000 + i) * 10**9, b'{"m":"' + b"x" * 400 + b'"}')
        for i in range(entries)
    ]
    # A second apart, so retention (10 minutes) drops most of them at the next prune.
    store.append("all", rows, CursorState("fp").advanced(rows))
    store.close()
    return state_dir / JOURNAL_NAME


def damage_middle(path: Path) -> None:
    """Overwrite the start of every page in the middle third of the file (b-tree pages'
    headers, whichever tree each belongs to): off the path of the few reads a start makes,
    on the path of reading the entries and of the next prune."""
    with path.open("rb") as handle:
        # The file header's page size (1 stands for 65536).
        page_size = int.from_bytes(handle.read(18)[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = path.stat().st_size // page_size
    with path.open("r+b") as handle:
        for page in range(pages // 3, 2 * pages // 3):
            handle.seek(page * page_size)
            handle.write(b"\xff" * 64)


@pytest.mark.slow
def test_damage_in_the_middle_of_the_journal_stops_run_with_exit_3(tmp_path: Path) -> None:
    """A journal damaged mid-file: `run` exits 3 with one message naming the file and
    `checkpoint reset --all`, no traceback, before logging that it started."""
    damage_middle(filled_journal(tmp_path / "state"))
    config = tmp_path / "c.toml"
    config.write_text(
        f'[api]\nbase_url = "http://127.0.0.1:9"\n[state]\ndir = "{tmp_path / "state"}"\n'
        "[server]\nenabled = false\n"
    )
    result = run_cli("run", "--config", str(config), env={"RUNFLOW_API_KEY": "rf_0123456789"})
    assert result.returncode == 3, result.stderr
    assert str(tmp_path / "state" / JOURNAL_NAME) in result.stderr
    assert "checkpoint reset --all" in result.stderr
    assert "Traceback" not in result.stderr and "daemon.started" not in result.stderr


@pytest.mark.anyio
async def test_damage_found_after_start_is_the_same_unreadable_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage that the start-up check did not cover (a journal past its size limit) and a
    later read finds: JournalUnreadable with the same message, not a database error."""
    path = filled_journal(tmp_path)
    damage_middle(path)
    monkeypatch.setattr(store_module, "QUICK_CHECK_MAX_BYTES", 0)
    journal = await Journal.open(tmp_path, max_bytes=1 << 30, dedup_window=600)
    try:
        with pytest.raises(JournalUnreadable, match="checkpoint reset --all"):
            await journal.read_after(0, ["all"], max_events=100_000, max_bytes=1 << 30)
    finally:
        await journal.aclose()


def _disk_full() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = 13  # SQLITE_FULL
    error.sqlite_errorname = "SQLITE_FULL"
    return error


def _settings(api: object, tmp_path: Path, state: Path, output: Path) -> Settings:
    settings = settings_for(
        api, state, output, strategy="cursor", sinks={"out": FileSinkConfig(path=output)}
    )
    return settings


@pytest.mark.anyio
async def test_a_full_disk_under_the_journal_pauses_polling_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """A real 4 MB file system, filled: polling pauses with /readyz naming the full disk,
    the daemon keeps running, and once space returns every entry arrives exactly once."""
    output = tmp_path / "out.jsonl"
    with small_filesystem(tmp_path / "small") as small, hostile_api() as api:
        ballast = small / "ballast"
        # Room for a new journal (about 550 KiB with its WAL and shared memory) and not for
        # the entries.
        ballast.write_bytes(b"\0" * (3 * 1024 * 1024 + 256 * 1024))
        api.items = [item(f"e{i:04d}", message="m" * 2000) for i in range(300)]
        settings = _settings(api, tmp_path, small / "state", output)
        daemon = Daemon(settings, small / "state", RunOptions(handle_signals=False))
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            try:
                await wait_for(lambda: bool(daemon.journal and daemon.journal.disk_full))
                assert any("full" in p for p in daemon.readiness_problems())
                ballast.unlink()
                await wait_for(
                    lambda: output.exists() and len(output.read_bytes().splitlines()) == 300
                )
                await wait_for(lambda: not daemon.readiness_problems())
            finally:
                daemon.request_stop("test done")
    ids = [line[8:13] for line in output.read_bytes().splitlines()]
    assert ids == [f"e{i:04d}".encode() for i in range(300)]


@pytest.mark.anyio
async def test_a_full_disk_at_the_store_seam_pauses_and_retries_the_same_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLITE_FULL from the store, as on any machine where no small file system can be
    mounted: the page's append waits and is retried whole; every entry arrives once."""
    failures = {"left": 5}
    append = JournalStore.append

    def full_then_fine(self: JournalStore, *args: object, **kwargs: object) -> object:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise _disk_full()
        return append(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JournalStore, "append", full_then_fine)
    monkeypatch.setattr(journal_module, "DISK_FULL_RETRY_INITIAL", 0.01)
    output = tmp_path / "out.jsonl"
    with hostile_api() as api:
        api.items = [item(f"e{i:04d}") for i in range(50)]
        settings = _settings(api, tmp_path, tmp_path / "state", output)
        daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
        seen_paused = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            try:
                await wait_for(lambda: bool(daemon.journal and daemon.journal.disk_full))
                seen_paused.append(daemon.readiness_problems())
                await wait_for(
                    lambda: output.exists() and len(output.read_bytes().splitlines()) == 50
                )
            finally:
                daemon.request_stop("test done")
    assert any("disk" in p and "paused" in p for p in seen_paused[0])
    assert [line[8:13] for line in output.read_bytes().splitlines()] == [
        f"e{i:04d}".encode() for i in range(50)
    ]
