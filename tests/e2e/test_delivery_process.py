"""Delivery with the daemon as a real subprocess: outages, logrotate, a full disk."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from runflow_tail.sandbox import SandboxThread

from tests.support.harness import (
    config_toml,
    count_lines,
    read_jsonl,
    sandbox_ids,
    settled_ids,
    wait_for_sync,
)
from tests.support.receivers import Receiver, running_receiver

pytestmark = pytest.mark.slow

LIVE_WORLD = {"world_rate": 6.0, "world_seed": 3, "timestamp_style": "z", "world_run_seconds": 2.0}


def _start(config: Path, log: Path, **popen: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RUNFLOW_API_KEY": "rf_sandbox_0123456789abcdef"}
    env["RUNFLOW_TAIL_LOG__FORMAT"] = "json"
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "runflow_tail", "run", "--config", str(config)],
        stderr=log.open("ab"),
        env=env,
        **{"stdout": subprocess.DEVNULL, **popen},
    )


def _since(ids: list[str], first: str) -> list[str]:
    """The ids from ``first`` on: what a stream that started at ``now`` should deliver."""
    return ids[ids.index(first) :]


@pytest.mark.parametrize("sandbox_thread", [LIVE_WORLD], indirect=True)
def test_a_webhook_outage_holds_back_nothing_else_and_loses_nothing(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """The webhook receiver fails for 30 s: file and stdout keep up in real time; afterwards
    the webhook has every entry in order, and every retry reused its original key."""
    output, stdout_copy = tmp_path / "out.jsonl", tmp_path / "stdout.jsonl"
    with running_receiver(Receiver(status=503)) as receiver:
        sinks = (
            f'[sinks.file]\ntype = "file"\npath = "{output}"\nfsync = "never"\n'
            '[sinks.console]\ntype = "stdout"\nformat = "json"\n'
            f'[sinks.hook]\ntype = "webhook"\nurl = "{receiver.url}"\nbackoff_max = 2\n'
            "[sinks.hook.batch]\nmax_events = 50\nmax_wait = 0.2\n"
        )
        config = tmp_path / "c.toml"
        config.write_text(
            config_toml(
                sandbox_thread, tmp_path / "state", output, sinks=sinks, stream={"start_at": "now"}
            )
        )
        daemon = _start(config, tmp_path / "daemon.log", stdout=stdout_copy.open("wb"))
        try:
            wait_for_sync(lambda: count_lines(output) > 0)
            first = read_jsonl(output)[0]["id"]
            outage_ends = time.monotonic() + 30
            while time.monotonic() < outage_ends:
                # in real time: what the API showed a moment ago is already in both
                visible = set(_since(sandbox_ids(sandbox_thread), first))
                wait_for_sync(
                    lambda v=visible: v <= {e["id"] for e in read_jsonl(output)}, timeout=5
                )
                wait_for_sync(
                    lambda v=visible: v <= {e["id"] for e in read_jsonl(stdout_copy)}, timeout=5
                )
                time.sleep(2)  # pacing the checks through the outage, not synchronising
            assert not receiver.delivered() and len(receiver.requests) >= 5
            receiver.set(200)
            expected = _since(settled_ids(sandbox_thread), first)
            wait_for_sync(lambda: len(receiver.delivered_ids()) >= len(expected), timeout=60)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
    assert receiver.delivered_ids() == expected
    assert [e["id"] for e in read_jsonl(output)] == expected
    assert [e["id"] for e in read_jsonl(stdout_copy)] == expected
    sent_under: dict[str, set[bytes]] = defaultdict(set)
    for request in receiver.requests:
        sent_under[request.headers["idempotency-key"]].add(request.body)
    assert all(len(bodies) == 1 for bodies in sent_under.values())


@pytest.mark.parametrize("sandbox_thread", [LIVE_WORLD], indirect=True)
def test_logrotate_create_and_copytruncate_with_sighup_lose_and_double_nothing(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """logrotate's `create` (move aside, new file) and `copytruncate` (copy, then empty the file),
    each followed by SIGHUP: across all files every entry appears exactly once."""
    output = tmp_path / "out.jsonl"
    config = tmp_path / "c.toml"
    config.write_text(
        config_toml(sandbox_thread, tmp_path / "state", output, stream={"start_at": "now"})
    )
    daemon = _start(config, tmp_path / "daemon.log")
    try:
        wait_for_sync(lambda: count_lines(output) >= 20)
        first = read_jsonl(output)[0]["id"]
        output.rename(tmp_path / "out.jsonl.1")  # create mode: move aside ...
        daemon.send_signal(signal.SIGHUP)  # ... and tell the daemon
        wait_for_sync(lambda: count_lines(output) >= 20)
        # copytruncate copies and then truncates; entries written between those two steps
        # are lost by design of that mode, so do it while the daemon has nothing to write
        caught_up = _since(settled_ids(sandbox_thread), first)
        wait_for_sync(lambda: _all_ids(tmp_path) >= set(caught_up))
        shutil.copyfile(output, tmp_path / "out.jsonl.2")
        with output.open("r+b") as handle:
            handle.truncate(0)
        daemon.send_signal(signal.SIGHUP)
        sandbox_thread.patch_options(world_rate=6.0)
        wait_for_sync(lambda: count_lines(output) >= 20)
        expected = _since(settled_ids(sandbox_thread), first)
        wait_for_sync(lambda: _all_ids(tmp_path) >= set(expected))
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    ids = [
        e["id"]
        for name in ("out.jsonl.1", "out.jsonl.2", "out.jsonl")
        for e in read_jsonl(tmp_path / name)
    ]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))


def _all_ids(directory: Path) -> set[str]:
    return {e["id"] for path in directory.glob("out.jsonl*") for e in read_jsonl(path)}


@pytest.mark.parametrize("sandbox_thread", [LIVE_WORLD], indirect=True)
def test_a_full_disk_stalls_the_file_sink_only_and_it_recovers_without_loss(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """The file hits a size limit (RLIMIT_FSIZE): the file sink stalls with a clear error while
    the webhook keeps delivering; with space back the file catches up, nothing lost or doubled."""
    output = tmp_path / "out.jsonl"
    limit = 8 * 1024 * 1024
    old = json.dumps({"id": "old", "message": "x" * 1000}).encode() + b"\n"
    output.write_bytes(old * ((limit - 40_000) // len(old)))
    before = count_lines(output)
    with running_receiver() as receiver:
        sinks = (
            f'[sinks.file]\ntype = "file"\npath = "{output}"\nfsync = "never"\nbackoff_max = 0.5\n'
            f'[sinks.hook]\ntype = "webhook"\nurl = "{receiver.url}"\n'
            "[sinks.hook.batch]\nmax_wait = 0.1\n"
        )
        config = tmp_path / "c.toml"
        config.write_text(
            config_toml(
                sandbox_thread, tmp_path / "state", output, sinks=sinks, stream={"start_at": "now"}
            )
        )

        def limit_file_size() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        log = tmp_path / "daemon.log"
        daemon = _start(config, log, preexec_fn=limit_file_size)
        try:
            wait_for_sync(lambda: count_lines(output) > before)
            first = read_jsonl(output)[before]["id"]
            wait_for_sync(lambda: "file size limit" in log.read_text(), timeout=60)
            stalled_at = count_lines(output)
            delivered = len(receiver.delivered_ids())
            wait_for_sync(lambda: len(receiver.delivered_ids()) > delivered + 20, timeout=30)
            assert count_lines(output) == stalled_at
            resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            expected = _since(settled_ids(sandbox_thread), first)
            wait_for_sync(lambda: count_lines(output) - before >= len(expected), timeout=60)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
    written = [e["id"] for e in read_jsonl(output)][before:]
    assert written == expected
    assert receiver.delivered_ids() == expected
