"""Entries the product cannot fully handle never stop the daemon and never block the
stream: a hostile API on loopback, the real daemon in this process, restarted on the
same journal (where such an entry used to crash it again on every start)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runflow_tail.config.model import Settings
from runflow_tail.journal import JournalStore
from runflow_tail.journal.store import JOURNAL_NAME
from runflow_tail.service.daemon import Daemon
from runflow_tail.sinks.file import FileSinkConfig
from runflow_tail.sinks.stdout import StdoutSinkConfig

from tests.support.harness import run_daemon_until, settings_for
from tests.support.hostile import HostileApi, hostile_api, item

pytestmark = pytest.mark.anyio

DEEP = 5_000


async def run_until(settings: Settings, condition: Callable[[Daemon], bool]) -> Daemon:
    """The daemon until ``condition(daemon)`` holds; an error it raises fails the test."""
    return await run_daemon_until(settings, condition, timeout=30)


def polled_at_least(times: int) -> Callable[[Daemon], bool]:
    return lambda daemon: bool(daemon.pollers) and daemon.pollers[0].health.requests >= times


def hostile_settings(api: HostileApi, tmp_path: Path, sinks: dict[str, Any]) -> Settings:
    return settings_for(
        api, tmp_path / "state", tmp_path / "unused", strategy="cursor", sinks=sinks
    )


def dead_letters(tmp_path: Path, sink: str) -> list[tuple[str, str]]:
    store = JournalStore(tmp_path / "state" / JOURNAL_NAME)
    try:
        return [
            (entry.id, letter.reason)
            for letter in store.dead_letters(sink)
            for entry in letter.entries
        ]
    finally:
        store.close()


async def test_timestamps_outside_1677_to_2262_are_dead_lettered_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    """Entries stamped 2263 and 1600 become dead letters of the sink with the reason; the
    others are delivered; a restart on the same journal polls on and adds no second copy."""
    output = tmp_path / "out.jsonl"
    with hostile_api() as api:
        api.items = [
            item("a", "2026-01-01T00:00:00Z"),
            item("future", "2263-01-01T00:00:00Z"),
            item("past", "1600-01-01T00:00:00Z"),
            item("b", "2026-01-01T00:00:01Z"),
        ]
        settings = hostile_settings(api, tmp_path, {"out": FileSinkConfig(path=output)})
        for _ in range(2):
            await run_until(settings, polled_at_least(3))
    delivered = [line[:9] for line in output.read_bytes().splitlines()]
    assert delivered == [b'{"id": "a', b'{"id": "b']
    letters = dict(dead_letters(tmp_path, "out"))
    assert sorted(letters) == ["future", "past"]
    assert "outside the times runflow-tail can store" in letters["future"]


async def test_invalid_utf8_reaches_byte_sinks_and_is_dead_lettered_by_a_match(
    tmp_path: Path,
) -> None:
    """An entry holding invalid UTF-8 reaches a plain file sink byte for byte; a sink with
    a match dead-letters it alone and gets the matching neighbours; a restart is clean."""
    bad = b'{"id": "bad", "timestamp": "2026-01-01T00:00:01Z", "level_code": "error", ' + (
        b'"message": "\xff\xfe"}'
    )
    everything, errors = tmp_path / "all.jsonl", tmp_path / "errors.jsonl"
    with hostile_api() as api:
        api.items = [
            item("a", "2026-01-01T00:00:00Z", level_code="error"),
            bad,
            item("c", "2026-01-01T00:00:02Z", level_code="error"),
        ]
        sinks = {
            "all": FileSinkConfig(path=everything),
            "errors": FileSinkConfig(path=errors, match="level_code:error"),
        }
        settings = hostile_settings(api, tmp_path, sinks)
        for _ in range(2):
            await run_until(settings, polled_at_least(3))
    assert everything.read_bytes().splitlines()[1] == bad
    assert [line[:9] for line in errors.read_bytes().splitlines()] == [
        b'{"id": "a',
        b'{"id": "c',
    ]
    [(entry_id, reason)] = dead_letters(tmp_path, "errors")
    assert entry_id == "bad" and "UTF-8" in reason


async def test_invalid_utf8_is_dead_lettered_alone_by_a_pretty_stdout_sink(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A pretty stdout sink needs the entry's fields: it dead-letters the undecodable entry
    alone and prints its neighbours, instead of retrying the same batch forever."""
    bad = b'{"id": "bad", "timestamp": "2026-01-01T00:00:01Z", "message": "\xff\xfe"}'
    with hostile_api() as api:
        api.items = [
            item("a", "2026-01-01T00:00:00Z", message="first neighbour"),
            bad,
            item("c", "2026-01-01T00:00:02Z", message="second neighbour"),
        ]
        pretty = StdoutSinkConfig(format="pretty", color="never", utc=True)
        settings = hostile_settings(api, tmp_path, {"screen": pretty})
        for _ in range(2):
            await run_until(settings, polled_at_least(3))
    printed = capfdbinary.readouterr().out
    assert printed.count(b"first neighbour") == 1 and printed.count(b"second neighbour") == 1
    [(entry_id, reason)] = dead_letters(tmp_path, "screen")
    assert entry_id == "bad" and "UTF-8" in reason


async def test_an_entry_nested_5000_deep_is_delivered_as_received(tmp_path: Path) -> None:
    """An entry nested 5,000 levels deep (past the JSON decoder's limit) does not make its
    page unreadable: a file sink gets it byte for byte, with its neighbours."""
    deep = (
        b'{"id": "deep", "timestamp": "2026-01-01T00:00:01Z", "meta": '
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}"
    )
    output = tmp_path / "out.jsonl"
    with hostile_api() as api:
        api.items = [item("a", "2026-01-01T00:00:00Z"), deep, item("c", "2026-01-01T00:00:02Z")]
        settings = hostile_settings(api, tmp_path, {"out": FileSinkConfig(path=output)})
        await run_until(settings, polled_at_least(3))
    assert output.read_bytes().splitlines()[1] == deep
    assert len(output.read_bytes().splitlines()) == 3


async def test_path_like_run_ids_stay_inside_the_sink_directory(tmp_path: Path) -> None:
    """Run ids like ../../x, one with a NUL and one of 5,000 characters land in escaped
    files under the sink's directory, and nothing is written outside it."""
    logs = tmp_path / "logs"
    with hostile_api() as api:
        api.items = [
            item("a", run_id="../../../../outside"),
            item("b", run_id="nul\u0000byte"),
            item("c", run_id="x" * 5000),
            item("d", run_id="0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"),
        ]
        sink = FileSinkConfig(path=logs / "{run_id}.jsonl")
        settings = hostile_settings(api, tmp_path, {"out": sink})
        await run_until(settings, lambda _: len(list(logs.glob("*.jsonl"))) == 4)
    names = sorted(path.name for path in logs.glob("*.jsonl"))
    assert "%2E.%2F..%2F..%2F..%2Foutside.jsonl" in names
    assert "nul%00byte.jsonl" in names
    assert "0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b.jsonl" in names
    assert max(len(name) for name in names) <= 100 + len(".jsonl")
    assert not (tmp_path.parent.parent / "outside.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "state"]
