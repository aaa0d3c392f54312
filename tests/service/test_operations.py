"""Operating the daemon: readiness that tells the truth, metrics that agree with deliveries,
systemd's notify protocol, SIGHUP reload, and the deploy files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runflow_tail.config.model import ServerSettings
from runflow_tail.sandbox import SandboxHandle, SandboxThread
from runflow_tail.service import http
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.webhook import WebhookSinkConfig

from tests.support.harness import config_toml, count_lines, settings_for, wait_for, wait_for_sync
from tests.support.receivers import Receiver, running_receiver

ROOT = Path(__file__).resolve().parents[2]


async def _ready(address: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{address}/readyz")
    return response.status_code, response.json()


def _with_server(settings: Any, **server: Any) -> Any:
    options = {"listen": "127.0.0.1:0", "ready_sink_failing_after": 1.0, **server}
    return settings.model_copy(update={"server": ServerSettings(**options)})


async def _poll_until(address: str, status: int, timeout: float = 20) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            code, body = await _ready(address)
            if code == status:
                return body
            await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_readyz_follows_a_rejected_key_and_its_recovery(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """/readyz is 200 while polling works, 503 naming the stream once the API answers 401,
    and 200 again after the key works again."""
    output = tmp_path / "out.jsonl"
    settings = _with_server(
        settings_for(sandbox, tmp_path / "state", output, api={"config_error_retry_interval": 0.5})
    )
    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: daemon.server_address is not None)
        assert daemon.server_address is not None
        await _poll_until(daemon.server_address, 200)
        sandbox.world.options = sandbox.world.options.updated({"api_key": "rotated"})
        body = await _poll_until(daemon.server_address, 503)
        assert any("stream all" in p and "401" in p for p in body["problems"])
        sandbox.world.options = sandbox.world.options.updated({"api_key": sandbox.api_key})
        await _poll_until(daemon.server_address, 200)
        daemon.request_stop()


@pytest.mark.anyio
async def test_readyz_reports_a_sink_that_keeps_failing(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A sink failing for longer than ready_sink_failing_after makes /readyz 503 with its
    name; once it delivers again, 200."""
    sandbox.world.generate(3, step_ms=1, full_run=False)
    with running_receiver(Receiver(status=503)) as receiver:
        sinks = {"hook": WebhookSinkConfig(url=receiver.url, backoff_max=0.2)}
        settings = _with_server(
            settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
        )
        daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await wait_for(lambda: daemon.server_address is not None)
            assert daemon.server_address is not None
            body = await _poll_until(daemon.server_address, 503)
            assert any(p.startswith("sink hook: failing for") for p in body["problems"])
            receiver.set(200)
            await _poll_until(daemon.server_address, 200)
            daemon.request_stop()


@pytest.mark.anyio
async def test_a_failure_as_the_health_server_starts_ends_the_daemon_instead_of_hanging_it(
    sandbox: SandboxHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after the health server started listening but before it reported its
    address (here: its log line, as when an earlier in-process command left logging on a
    closed stream) ends the daemon with that error; it once waited for the server forever."""
    real = http.log

    class Failing:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def info(self, event: str, **fields: Any) -> None:
            if event == "server.listening":
                raise RuntimeError("the log stream is closed")
            real.info(event, **fields)

    monkeypatch.setattr(http, "log", Failing())
    settings = _with_server(settings_for(sandbox, tmp_path / "state", tmp_path / "out.jsonl"))
    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    with anyio.fail_after(10), pytest.raises(BaseException) as raised:
        await daemon.run()
    assert raised.group_contains(RuntimeError, match="the log stream is closed")


@pytest.mark.anyio
async def test_metrics_agree_with_what_was_delivered(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Scraped /metrics, parsed by prometheus-client, count exactly the entries the file got."""
    sandbox.world.generate(1234, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = _with_server(settings_for(sandbox, tmp_path / "state", output, page_size=200))
    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: count_lines(output) >= 1234)
        assert daemon.server_address is not None
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://{daemon.server_address}/metrics")).text
        daemon.request_stop()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("runflow_tail_entries_delivered_total", (("sink", "out"),))] == 1234
    assert samples[("runflow_tail_entries_fetched_total", (("stream", "all"),))] == 1234
    assert samples[("runflow_tail_sink_backlog_entries", (("sink", "out"),))] == 0
    assert samples[("runflow_tail_api_requests_total", (("status", "200"),))] >= 7
    assert ("runflow_tail_lag_seconds", (("stream", "all"),)) in samples
    assert samples[("runflow_tail_poll_duration_seconds_count", (("stream", "all"),))] >= 1
    assert samples[("runflow_tail_journal_bytes", ())] > 0


def _daemon_env(sandbox: SandboxThread, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFLOW_")}
    return {**env, "RUNFLOW_API_KEY": sandbox.api_key, "RUNFLOW_TAIL_LOG__FORMAT": "json", **extra}


@pytest.mark.slow
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_systemd_hears_ready_watchdog_and_stopping_in_order(
    sandbox_thread: SandboxThread, tmp_path: Path, abstract: bool
) -> None:
    """On a real AF_UNIX datagram socket (a path, or an abstract name): READY=1 after the first
    poll, then WATCHDOG=1 pings, then STOPPING=1 on SIGTERM."""
    name = f"@runflow-tail-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name[1:] if abstract else name)
    listener.settimeout(15)
    config = tmp_path / "c.toml"
    config.write_text(config_toml(sandbox_thread, tmp_path / "state", tmp_path / "out.jsonl"))
    env = _daemon_env(sandbox_thread, NOTIFY_SOCKET=name, WATCHDOG_USEC="400000")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "runflow_tail", "run", "--config", str(config)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    messages: list[str] = []
    try:
        while sum("WATCHDOG=1" in m for m in messages) < 2:
            messages.append(listener.recv(4096).decode())
        daemon.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages[-1]:
            messages.append(listener.recv(4096).decode())
        assert daemon.wait(timeout=10) == 0
    finally:
        daemon.kill()
        listener.close()
    kinds = [m.split("\n")[0].split("=")[0] for m in messages]
    ready = kinds.index("READY")
    assert "WATCHDOG" not in kinds[:ready]
    assert kinds[-1] == "STOPPING" and kinds.count("WATCHDOG") >= 2
    assert any(line.startswith("STATUS=") for line in messages[ready].split("\n"))


@pytest.mark.slow
def test_sighup_adds_and_removes_sinks_without_loss_and_rejects_a_bad_config(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """SIGHUP with a new config: a new sink gets every entry from then on, a removed sink
    stops, the untouched sink loses and doubles nothing; a broken config keeps the old one."""
    first, second, third = (tmp_path / f"{n}.jsonl" for n in ("first", "second", "third"))

    def sinks(*outputs: Path) -> str:
        return "".join(
            f'[sinks.{p.stem}]\ntype = "file"\npath = "{p}"\nfsync = "never"\n' for p in outputs
        )

    config = tmp_path / "c.toml"
    write = lambda *outputs: config.write_text(  # noqa: E731
        config_toml(sandbox_thread, tmp_path / "state", first, sinks=sinks(*outputs))
    )
    write(first, second)
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "runflow_tail", "run", "--config", str(config)],
        env=_daemon_env(sandbox_thread),
        stderr=log.open("wb"),
    )
    try:
        sandbox_thread.generate(100, step_ms=1, full_run=False)
        wait_for_sync(lambda: count_lines(first) >= 100 and count_lines(second) >= 100)
        write(first, third)
        daemon.send_signal(signal.SIGHUP)
        wait_for_sync(lambda: "daemon.reloaded" in log.read_text())
        sandbox_thread.generate(50, step_ms=1, full_run=False)
        wait_for_sync(lambda: count_lines(first) >= 150 and count_lines(third) >= 50)
        config.write_text("[api\nbroken")
        daemon.send_signal(signal.SIGHUP)
        wait_for_sync(lambda: "daemon.reload_rejected" in log.read_text())
        sandbox_thread.generate(25, step_ms=1, full_run=False)
        wait_for_sync(lambda: count_lines(first) >= 175 and count_lines(third) >= 75)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        daemon.kill()
    ids = lambda path: [json.loads(line)["id"] for line in path.read_text().splitlines()]  # noqa: E731
    assert len(ids(first)) == len(set(ids(first))) == 175
    assert count_lines(second) == 100
    assert ids(third) == ids(first)[100:]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (with ExecStart pointing at this install)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide systemd-analyze (see .ci/run)")
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "deploy/systemd/runflow-tail.service").read_text()
    binary = Path(sys.executable).with_name("runflow-tail")
    unit = unit.replace("/usr/local/bin/runflow-tail", str(binary))
    path = tmp_path / "runflow-tail.service"
    path.write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def _dockerfile() -> tuple[list[str], dict[str, str], list[str]]:
    text = (ROOT / "deploy/docker/Dockerfile").read_text().replace("\\\n", " ")
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    healthcheck = json.loads(
        re.search(r"CMD (\[.*\])\s*$", text[text.index("HEALTHCHECK") :].split("\n")[0]).group(1)
    )  # type: ignore[union-attr]
    env: dict[str, str] = {}
    block = text[text.rindex("ENV ") + 4 :].split("\n")[0]
    for key, value in re.findall(r'(\w+)="?([^"\s]*)"?', block):
        env[key] = value
    return entrypoint, env, healthcheck


@pytest.mark.slow
def test_the_dockerfile_entrypoint_runs_configured_by_environment_only(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """The image's ENTRYPOINT and ENV, with the compose file's variables: it delivers, its
    HEALTHCHECK (liveness) and `runflow-tail health` (readiness) say so, and SIGTERM (what
    `docker stop` sends) exits 0, after which the HEALTHCHECK fails."""
    entrypoint, image_env, image_check = _dockerfile()
    assert entrypoint[:2] == ["runflow-tail", "run"]
    assert image_check == ["python", "-I", "-S", "/opt/runflow-tail/healthz.py"]
    healthcheck = [sys.executable, "-I", "-S", str(ROOT / "deploy/docker/healthz.py")]
    output = tmp_path / "logs" / "runflow.jsonl"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **_daemon_env(sandbox_thread),
        **{k: v for k, v in image_env.items() if k.startswith("RUNFLOW_TAIL_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "RUNFLOW_TAIL_STATE__DIR": str(tmp_path / "state"),
        "RUNFLOW_TAIL_SERVER__LISTEN": f"127.0.0.1:{port}",
        "RUNFLOW_TAIL_API__BASE_URL": sandbox_thread.url,
        "RUNFLOW_TAIL_STREAMS": json.dumps([{"name": "all", "start_at": "beginning"}]),
        "RUNFLOW_TAIL_SINKS__SHARED__TYPE": "file",
        "RUNFLOW_TAIL_SINKS__SHARED__PATH": str(output),
    }
    sandbox_thread.generate(40, step_ms=1, full_run=False)
    daemon = subprocess.Popen(entrypoint, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_sync(lambda: count_lines(output) >= 40)
        alive = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
        assert alive.returncode == 0, alive.stdout + alive.stderr
        ready = subprocess.run(
            ["runflow-tail", "health"], env=env, capture_output=True, text=True, timeout=30
        )
        assert ready.returncode == 0, ready.stdout + ready.stderr
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        daemon.kill()
    down = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "runflow-tail is not answering on" in down.stderr
