"""`checkpoint show|set|reset` and `status` as an operator runs them: real subprocesses next
to a real daemon subprocess and the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from runflow_tail.sandbox import SandboxThread
from runflow_tail.times import NS_PER_SECOND, format_instant, now_ns, parse_instant

from tests.support.harness import (
    config_toml,
    count_lines,
    daemon_process,
    read_jsonl,
    wait_for_sync,
)

pytestmark = [pytest.mark.slow, pytest.mark.sandbox_options(timestamp_style="z")]


@dataclass
class Setup:
    sandbox: SandboxThread
    tmp: Path
    config: Path
    output: Path
    state: Path

    def write_config(self, **sections: Any) -> None:
        self.config.write_text(config_toml(self.sandbox, self.state, self.output, **sections))

    def env(self) -> dict[str, str]:
        return {"RUNFLOW_API_KEY": self.sandbox.api_key}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """One operator command against this setup's config (no API key needed)."""
        return subprocess.run(
            [sys.executable, "-m", "runflow_tail", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            env=_base_env(),
        )

    def ids(self) -> list[str]:
        return [entry["id"] for entry in read_jsonl(self.output)]


@pytest.fixture
def setup(sandbox_thread: SandboxThread, tmp_path: Path) -> Setup:
    result = Setup(
        sandbox_thread,
        tmp_path,
        tmp_path / "runflow-tail.toml",
        tmp_path / "out.jsonl",
        tmp_path / "state",
    )
    result.write_config()
    return result


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUNFLOW_", "NO_COLOR"))}


def _stamp(ns: int) -> str:
    return format_instant(ns)


def _generate(sandbox: SandboxThread, count: int, first_ns: int) -> list[str]:
    """``count`` entries one second apart from ``first_ns``; returns their ids."""
    response = sandbox.generate(count, timestamp=_stamp(first_ns), step_ms=1000, full_run=False)
    ids: list[str] = response["ids"]
    return ids


def _whole_second(seconds_ago: int) -> int:
    return (now_ns() // NS_PER_SECOND - seconds_ago) * NS_PER_SECOND


# -- reading while the daemon runs ---------------------------------------------------------


def _run_with_a_stalled_hook(setup: Setup, port: int) -> str:
    """Config with two sinks: `out` (a file) and `hook` (a webhook nobody answers)."""
    setup.write_config(
        sinks=f"""
[sinks.out]
type = "file"
path = "{setup.output}"
fsync = "never"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
timeout = 1
"""
    )
    return str(setup.state)


def _status_json(setup: Setup, *args: str) -> dict[str, Any]:
    result = setup.cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _wait_until_out_is_committed(setup: Setup, count: int) -> dict[str, Any]:
    """Poll `status --json` until the file sink's offset covers the ``count`` entries the
    file holds (a fresh journal numbers its first entries 1, 2, ...)."""
    wait_for_sync(lambda: count_lines(setup.output) >= count)
    snapshot: dict[str, Any] = {}

    def committed() -> bool:
        nonlocal snapshot
        snapshot = _status_json(setup, "status")
        out = next(s for s in snapshot["sinks"] if s["sink"] == "out")
        return bool(out["offset"] == count_lines(setup.output) == count)

    wait_for_sync(committed, timeout=30)
    return snapshot


def test_status_json_while_running_reports_health_watermark_offsets_and_backlog(
    setup: Setup, refused_port: int
) -> None:
    """While the daemon runs, `status --json` shows the stream healthy at the newest
    entry's timestamp, the file sink at the file's end and the stalled webhook's backlog."""
    state = _run_with_a_stalled_hook(setup, refused_port)
    setup.sandbox.generate(10, step_ms=5, full_run=False)
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        snapshot = _wait_until_out_is_committed(setup, 10)
        assert daemon.terminate() == 0
    entries = read_jsonl(setup.output)
    assert snapshot["daemon_running"] is True
    assert snapshot["state_dir"] == state
    assert snapshot["journal_entries"] == len(entries) == 10
    [stream] = snapshot["streams"]
    assert stream["stream"] == "all" and stream["healthy"] is True and stream["problem"] is None
    assert stream["strategy"] == "range"
    assert parse_instant(stream["watermark"]) == parse_instant(entries[-1]["timestamp"])
    assert stream["lag_seconds"] >= 0
    sinks = {s["sink"]: s for s in snapshot["sinks"]}
    assert sinks["out"] == {
        "sink": "out",
        "streams": ["all"],
        "offset": len(entries),
        "backlog": 0,
        "dead_letters": 0,
    }
    assert sinks["hook"]["offset"] == 0 and sinks["hook"]["backlog"] == len(entries)
    assert sinks["hook"]["dead_letters"] == 0


def test_checkpoint_show_while_running_prints_a_readable_summary(
    setup: Setup, refused_port: int
) -> None:
    """`checkpoint show` (no --json) names the running daemon, the stream's health and
    watermark, and each sink's offset and backlog in plain text."""
    _run_with_a_stalled_hook(setup, refused_port)
    setup.sandbox.generate(7, step_ms=5, full_run=False)
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        snapshot = _wait_until_out_is_committed(setup, 7)
        result = setup.cli("checkpoint", "show")
        assert daemon.terminate() == 0
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    text = result.stdout
    assert f"state {setup.state} (daemon running)" in text
    assert "journal: 7 entries" in text
    stream_line = next(line for line in text.splitlines() if line.strip().startswith("all "))
    assert stream_line.split()[-1] == "ok"
    assert f"strategy=range watermark={snapshot['streams'][0]['watermark']}" in text
    sink_lines = {line.split()[0]: line for line in text.splitlines() if "offset=" in line}
    assert "offset=7 backlog=0 dead_letters=0" in sink_lines["out"]
    assert "offset=0 backlog=7 dead_letters=0" in sink_lines["hook"]


def test_checkpoint_show_json_for_one_stream_after_the_daemon_stopped(setup: Setup) -> None:
    """After a clean stop, `checkpoint show --stream all --json` parses, lists only that
    stream with its strategy, watermark and API cursor, and says the daemon is not running."""
    setup.sandbox.generate(5, step_ms=5, full_run=False)
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 5)
        assert daemon.terminate() == 0
    snapshot = _status_json(setup, "checkpoint", "show", "--stream", "all")
    assert snapshot["daemon_running"] is False
    [stream] = snapshot["streams"]
    assert stream["stream"] == "all" and stream["strategy"] == "range"
    assert "api_cursor" in stream
    last = read_jsonl(setup.output)[-1]["timestamp"]
    assert parse_instant(stream["watermark"]) == parse_instant(last)
    assert [(s["sink"], s["offset"], s["backlog"]) for s in snapshot["sinks"]] == [("out", 5, 0)]


def test_checkpoint_show_of_an_unknown_stream_exits_2(setup: Setup) -> None:
    """`checkpoint show --stream nope` names the stream it has no checkpoint for and exits 2."""
    setup.sandbox.generate(2, step_ms=5, full_run=False)
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 2)
        assert daemon.terminate() == 0
    result = setup.cli("checkpoint", "show", "--stream", "nope")
    assert result.returncode == 2
    assert "'nope'" in result.stderr and "Traceback" not in result.stderr


def test_status_before_the_daemon_ever_ran_explains_there_is_no_journal(setup: Setup) -> None:
    """`status` on a fresh state directory exits 2 naming the missing journal."""
    result = setup.cli("status")
    assert result.returncode == 2
    assert str(setup.state / "journal.sqlite3") in result.stderr
    assert "Traceback" not in result.stderr


WRITES = [
    ("checkpoint", "set", "--stream", "all", "--to", "2026-01-01T00:00:00Z"),
    ("checkpoint", "reset", "--stream", "all"),
    ("checkpoint", "reset", "--all"),
]


def test_writes_are_refused_while_the_daemon_runs(setup: Setup) -> None:
    """`checkpoint set`, `reset --stream` and `reset --all` each exit 3 while the daemon
    holds the lock, name the state directory, change nothing, and leave the daemon up."""
    setup.sandbox.generate(3, step_ms=5, full_run=False)
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        before = _wait_until_out_is_committed(setup, 3)
        for command in WRITES:
            result = setup.cli(*command)
            assert result.returncode == 3, (command, result.stderr)
            assert str(setup.state) in result.stderr
            assert "checkpoint changes need the daemon stopped" in result.stderr
            assert "Traceback" not in result.stderr
        after = _status_json(setup, "status")
        assert after["streams"][0]["watermark"] == before["streams"][0]["watermark"]
        assert after["sinks"] == before["sinks"]
        assert (setup.state / "journal.sqlite3").exists()
        assert list(setup.state.glob("*.bak")) == []
        assert daemon.process is not None and daemon.process.poll() is None
        assert daemon.terminate() == 0


# -- moving checkpoints with the daemon stopped --------------------------------------------


def test_checkpoint_set_resumes_from_the_timestamp(setup: Setup) -> None:
    """After `checkpoint set --to T`, a restarted daemon fetches entries at and after T, and
    none of the never-fetched entries before T."""
    first = _generate(setup.sandbox, 3, _whole_second(60))
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 3)
        assert daemon.terminate() == 0
    assert setup.ids() == first
    target = _whole_second(20)
    skipped = _generate(setup.sandbox, 3, target - 10 * NS_PER_SECOND)
    wanted = _generate(setup.sandbox, 3, target)  # the first one exactly at T
    moved = setup.cli("checkpoint", "set", "--stream", "all", "--to", _stamp(target))
    assert moved.returncode == 0, moved.stderr
    assert _stamp(target) in moved.stdout
    shown = _status_json(setup, "checkpoint", "show", "--stream", "all")
    assert parse_instant(shown["streams"][0]["watermark"]) == target
    with daemon_process(setup.config, setup.tmp / "daemon2.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 6)
        assert daemon.terminate() == 0
    ids = setup.ids()
    assert ids == first + wanted
    assert not set(skipped) & set(ids)


def test_checkpoint_set_refuses_a_bad_timestamp_and_an_unknown_stream(setup: Setup) -> None:
    """`checkpoint set` with an unparsable --to, or for a stream without a checkpoint,
    exits 2 with the reason and no traceback."""
    setup.sandbox.generate(2, step_ms=5, full_run=False)
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 2)
        assert daemon.terminate() == 0
    bad_time = setup.cli("checkpoint", "set", "--stream", "all", "--to", "yesterday-ish")
    assert bad_time.returncode == 2 and "--to" in bad_time.stderr
    unknown = setup.cli("checkpoint", "set", "--stream", "nope", "--to", "2026-01-01T00:00:00Z")
    assert unknown.returncode == 2 and "'nope'" in unknown.stderr
    assert "Traceback" not in bad_time.stderr + unknown.stderr


def test_checkpoint_reset_stream_makes_start_at_apply_again(setup: Setup) -> None:
    """A changed `start_at` alone does not apply to a stream with a checkpoint; after
    `checkpoint reset --stream`, it does, and entries the journal holds are not re-sent."""
    middle = _whole_second(40)
    older = _generate(setup.sandbox, 3, middle - 10 * NS_PER_SECOND)
    newer = _generate(setup.sandbox, 3, middle + 5 * NS_PER_SECOND)
    setup.write_config(stream={"start_at": _stamp(middle)})
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 3)
        assert daemon.terminate() == 0
    assert setup.ids() == newer

    setup.write_config(stream={"start_at": "beginning"})
    marker = _generate(setup.sandbox, 1, _whole_second(1))
    with daemon_process(setup.config, setup.tmp / "daemon2.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 4)
        assert daemon.terminate() == 0
    assert setup.ids() == newer + marker

    reset = setup.cli("checkpoint", "reset", "--stream", "all")
    assert reset.returncode == 0, reset.stderr
    assert _status_json(setup, "status")["streams"] == []
    with daemon_process(setup.config, setup.tmp / "daemon3.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 7)
        assert daemon.terminate() == 0
    assert setup.ids() == newer + marker + older


def test_reset_all_is_the_way_out_of_a_corrupt_journal(setup: Setup) -> None:
    """A corrupt journal stops `run` (exit 3); `checkpoint reset --all` moves it aside with
    its bytes intact (exit 0); then `run` starts afresh and delivers."""
    setup.state.mkdir()
    journal = setup.state / "journal.sqlite3"
    garbage = b"this is not a database" * 100
    journal.write_bytes(garbage)
    stopped = subprocess.run(
        [sys.executable, "-m", "runflow_tail", "run", "--config", str(setup.config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**_base_env(), **setup.env()},
    )
    assert stopped.returncode == 3
    assert "checkpoint reset --all" in stopped.stderr and "Traceback" not in stopped.stderr

    status = setup.cli("status")
    assert status.returncode == 3 and "checkpoint reset --all" in status.stderr

    reset = setup.cli("checkpoint", "reset", "--all")
    assert reset.returncode == 0, reset.stderr
    [aside] = list(setup.state.glob("journal.sqlite3.*.bak"))
    assert str(aside) in reset.stdout
    assert aside.read_bytes() == garbage
    assert not journal.exists()

    setup.sandbox.generate(4, step_ms=5, full_run=False)
    with daemon_process(setup.config, setup.tmp / "daemon.log", env=setup.env()) as daemon:
        wait_for_sync(lambda: count_lines(setup.output) >= 4)
        assert daemon.terminate() == 0
    assert count_lines(setup.output) == 4
    assert aside.read_bytes() == garbage


def test_reset_all_never_overwrites_an_earlier_backup(setup: Setup) -> None:
    """`checkpoint reset --all` picks a new name when a backup from the same second exists."""
    setup.state.mkdir()
    now = time.time()
    earlier = {
        setup.state / f"journal.sqlite3.{time.strftime('%Y%m%dT%H%M%S', time.localtime(t))}.bak"
        for t in range(int(now) - 1, int(now) + 30)
    }
    for path in earlier:
        path.write_bytes(b"an earlier backup")
    (setup.state / "journal.sqlite3").write_bytes(b"a broken journal")
    reset = setup.cli("checkpoint", "reset", "--all")
    assert reset.returncode == 0, reset.stderr
    assert all(path.read_bytes() == b"an earlier backup" for path in earlier)
    [new] = set(setup.state.glob("journal.sqlite3.*.bak")) - earlier
    assert new.read_bytes() == b"a broken journal" and str(new) in reset.stdout


def test_reset_all_without_a_journal_says_there_is_nothing_to_move(setup: Setup) -> None:
    """`checkpoint reset --all` on a state directory without a journal exits 0 and says so,
    instead of claiming to have moved a file."""
    result = setup.cli("checkpoint", "reset", "--all")
    assert result.returncode == 0, result.stderr
    assert "nothing to move" in result.stdout and "moved" not in result.stdout
    assert not setup.state.exists() or list(setup.state.glob("*.bak")) == []
