"""The daemon as a real subprocess: crashes, signals, restarts and state-directory guards."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from runflow_tail.sandbox import SandboxThread

from tests.support.harness import (
    config_toml,
    count_lines,
    daemon_process,
    read_jsonl,
    sandbox_ids,
    settled_ids,
    wait_for_sync,
)

pytestmark = pytest.mark.slow


def _write_config(tmp_path: Path, sandbox: SandboxThread, **sections: Any) -> tuple[Path, Path]:
    output = tmp_path / "out.jsonl"
    config = tmp_path / "runflow-tail.toml"
    config.write_text(config_toml(sandbox, tmp_path / "state", output, **sections))
    return config, output


def _env(sandbox: SandboxThread) -> dict[str, str]:
    return {"RUNFLOW_API_KEY": sandbox.api_key}


def test_backlog_of_20000_arrives_once_in_order_and_sigterm_exits_cleanly(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """20,000 backlog entries reach the file exactly once in (timestamp, id) order; SIGTERM
    exits 0 well within 10 s, and a restart adds nothing."""
    sandbox_thread.generate(20_000, step_ms=0.5, full_run=False)
    config, output = _write_config(tmp_path, sandbox_thread)
    with daemon_process(config, tmp_path / "daemon.log", env=_env(sandbox_thread)) as daemon:
        wait_for_sync(lambda: count_lines(output) >= 20_000, timeout=120)
        assert daemon.terminate(timeout=10) == 0
    assert [e["id"] for e in read_jsonl(output)] == sandbox_ids(sandbox_thread)
    with daemon_process(config, tmp_path / "daemon2.log", env=_env(sandbox_thread)) as again:
        wait_for_sync(
            lambda: any(e.get("event") == "stream.resuming" for e in again.events()), timeout=30
        )
        assert again.terminate(timeout=10) == 0
    assert count_lines(output) == 20_000


@pytest.mark.parametrize(
    "sandbox_thread",
    [{"world_rate": 25.0, "world_seed": 11, "timestamp_style": "z"}],
    indirect=True,
)
def test_eight_sigkills_lose_nothing_and_double_nothing(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """SIGKILL at random moments eight times while the world keeps producing: after the last
    restart the file holds every entry exactly once, every line intact."""
    config, output = _write_config(tmp_path, sandbox_thread, stream={"page_size": 50, "fields": []})
    rng = random.Random(5)
    log = tmp_path / "daemon.log"
    for _ in range(8):
        with daemon_process(config, log, env=_env(sandbox_thread)) as daemon:
            before = count_lines(output)
            wait_for_sync(lambda before=before: count_lines(output) > before, timeout=30)
            # a random moment: anywhere within the next half second of heavy output
            target = count_lines(output) + rng.randint(1, 200)
            wait_for_sync(lambda target=target: count_lines(output) >= target, timeout=30)
            daemon.kill()
    sandbox_thread.patch_options(world_rate=0.0)
    with daemon_process(config, log, env=_env(sandbox_thread)) as daemon:
        expected = settled_ids(sandbox_thread)
        wait_for_sync(lambda: count_lines(output) >= len(expected), timeout=60)
        assert daemon.terminate() == 0
    lines = output.read_bytes().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert [entry_id for entry_id, n in Counter(ids).items() if n > 1] == []
    assert set(ids) == set(expected)


def test_a_corrupt_journal_stops_the_daemon_with_a_clear_message(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """A journal that is not a database: exit 3, naming the file and the way out."""
    config, _ = _write_config(tmp_path, sandbox_thread)
    (tmp_path / "state").mkdir()
    journal = tmp_path / "state" / "journal.sqlite3"
    journal.write_bytes(b"this is not a database" * 100)
    result = _run_to_exit(config, sandbox_thread)
    assert result.returncode == 3
    assert str(journal) in result.stderr and "checkpoint reset --all" in result.stderr
    assert "Traceback" not in result.stderr
    assert journal.read_bytes().startswith(b"this is not a database")


def test_a_second_daemon_on_the_same_state_dir_is_refused(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """While one daemon runs, another on the same state directory exits 3 with a clear line."""
    config, output = _write_config(tmp_path, sandbox_thread)
    sandbox_thread.generate(10, step_ms=1, full_run=False)
    with daemon_process(config, tmp_path / "daemon.log", env=_env(sandbox_thread)) as first:
        wait_for_sync(lambda: count_lines(output) >= 10)
        result = _run_to_exit(config, sandbox_thread)
        assert result.returncode == 3
        assert "another runflow-tail" in result.stderr and str(tmp_path / "state") in result.stderr
        assert "Traceback" not in result.stderr
        assert first.terminate() == 0


def test_a_wrong_key_logs_one_line_stays_up_and_status_says_unhealthy(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """A rejected key: one clear error line, fewer than 30 requests, `status` shows the stream
    unhealthy, and the daemon keeps running."""
    config, _ = _write_config(tmp_path, sandbox_thread)
    sandbox_thread.reset_stats()
    env = {"RUNFLOW_API_KEY": "wrong-key-123"}
    with daemon_process(config, tmp_path / "daemon.log", env=env) as daemon:
        wait_for_sync(
            lambda: any(e.get("event") == "stream.configuration_problem" for e in daemon.events())
        )
        status = subprocess.run(
            [sys.executable, "-m", "runflow_tail", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            env=_base_env(),
        )
        assert status.returncode == 0, status.stderr
        stream = json.loads(status.stdout)["streams"][0]
        assert stream["healthy"] is False and "401" in stream["problem"]
        assert daemon.process is not None and daemon.process.poll() is None
        assert daemon.terminate() == 0
    problems = [e for e in daemon.events() if e.get("event") == "stream.configuration_problem"]
    assert len(problems) == 1
    assert "wrong-key-123" not in (tmp_path / "daemon.log").read_text()
    assert sandbox_thread.stats()["logs_requests"] < 30


def _run_to_exit(config: Path, sandbox: SandboxThread) -> subprocess.CompletedProcess[str]:
    """`runflow-tail run` expected to stop on its own (a refused start)."""
    return subprocess.run(
        [sys.executable, "-m", "runflow_tail", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**_base_env(), **_env(sandbox)},
    )


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUNFLOW_", "NO_COLOR"))}
