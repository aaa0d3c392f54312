"""What a reload and a dead letter leave behind: /metrics shows only what runs now, and a
sink that gave up on a batch is not announced as recovered."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runflow_tail.config.model import ServerSettings, Settings, StreamSettings
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.file import FileSinkConfig
from runflow_tail.sinks.webhook import WebhookSinkConfig
from structlog.testing import capture_logs

from tests.support.harness import count_lines, settings_for, wait_for
from tests.support.receivers import Receiver, running_receiver

pytestmark = pytest.mark.anyio


async def labels_in_metrics(address: str, label: str) -> set[str]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://{address}/metrics")).text
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if label in sample.labels
    }


async def test_a_sink_and_a_stream_removed_by_reload_leave_metrics(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """After a reload that drops the sink `gone` and the stream `old`, no series of /metrics
    names them, while the sink and stream that stayed keep theirs."""
    sandbox.world.generate(20, step_ms=1, full_run=False)
    kept, gone = tmp_path / "kept.jsonl", tmp_path / "gone.jsonl"
    sinks = {"kept": FileSinkConfig(path=kept), "gone": FileSinkConfig(path=gone)}
    first = settings_for(sandbox, tmp_path / "state", kept, sinks=sinks, name="old")
    first = first.model_copy(update={"server": ServerSettings(listen="127.0.0.1:0")})
    second: Settings = first.model_copy(
        update={
            "sinks": {"kept": sinks["kept"]},
            "streams": (StreamSettings(**{**first.streams[0].model_dump(), "name": "new"}),),
        }
    )
    daemon = Daemon(
        first, tmp_path / "state", RunOptions(handle_signals=False, reload=lambda: second)
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: count_lines(kept) >= 20 and count_lines(gone) >= 20)
        assert daemon.server_address is not None
        assert await labels_in_metrics(daemon.server_address, "sink") == {"kept", "gone"}
        await daemon.reload()
        await wait_for(lambda: count_lines(kept) >= 40)  # the new stream starts from the beginning
        assert await labels_in_metrics(daemon.server_address, "sink") == {"kept"}
        assert await labels_in_metrics(daemon.server_address, "stream") == {"new"}
        daemon.request_stop()


async def test_a_dead_lettered_batch_is_not_announced_as_a_recovery(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A batch given up on after max_retry_duration is logged as dead-lettered, and no
    `sink.recovered` follows: nothing was delivered."""
    sandbox.world.generate(3, step_ms=1, full_run=False)
    with running_receiver(Receiver(status=503)) as receiver:
        hook = WebhookSinkConfig(url=receiver.url, backoff_max=0.05, max_retry_duration=1.0)
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks={"hook": hook})
        daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                await wait_for(lambda: any(d.health.dead_letters for d in daemon.deliveries))
                daemon.request_stop()
    events = [log["event"] for log in logs if log.get("sink") == "hook"]
    assert "sink.send_failed" in events and "sink.batch_dead_lettered" in events
    assert "sink.recovered" not in events
