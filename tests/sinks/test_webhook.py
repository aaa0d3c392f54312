"""The webhook sink end to end: the sandbox, the daemon in-process and a real receiver."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from pydantic import SecretStr
from runflow_tail.errors import SinkRetryableError
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sinks._http import MAX_ANSWER_BYTES
from runflow_tail.sinks.file import FileSinkConfig
from runflow_tail.sinks.webhook import WebhookSinkConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.destinations import make_entries
from tests.support.harness import (
    count_lines,
    read_jsonl,
    run_daemon_until,
    sandbox_ids,
    settings_for,
)
from tests.support.receivers import Receiver, running_receiver, serving

# Whole-precision timestamps: entries generated later never sort before earlier ones.
pytestmark = [pytest.mark.anyio, pytest.mark.sandbox_options(timestamp_style="z")]

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _webhook(url: str, **options: Any) -> WebhookSinkConfig:
    return WebhookSinkConfig(url=url, **options)


async def test_batches_carry_entries_unchanged_and_in_order(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """The receiver gets {"entries": [...]}: each entry as the API sent it, in order."""
    sandbox.world.generate(250, step_ms=1, full_run=True)
    with running_receiver() as receiver:
        sinks = {"hook": _webhook(receiver.url, batch={"max_events": 100, "max_wait": 0})}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks, fields=())
        await run_daemon_until(settings, lambda: len(receiver.delivered_ids()) >= 250)
    assert receiver.delivered_ids() == sandbox_ids(sandbox)
    body = receiver.delivered()[0].body
    first_id = receiver.delivered_ids()[0]
    assert sandbox.world.store.by_id[first_id].raw in body
    assert all(len(r.entries()) <= 100 for r in receiver.delivered())


async def test_one_entry_per_request_when_batch_is_false(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """With batch = false each request body is one entry, unwrapped."""
    sandbox.world.generate(5, step_ms=1, full_run=False)
    with running_receiver() as receiver:
        sinks = {"hook": _webhook(receiver.url, batch=False)}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
        await run_daemon_until(settings, lambda: len(receiver.delivered()) >= 5)
    assert [json.loads(r.body)["id"] for r in receiver.delivered()] == sandbox_ids(sandbox)


async def test_signatures_verify_with_the_standard_webhooks_library(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Every request verifies with the reference Standard Webhooks implementation; a tampered
    body does not."""
    sandbox.world.generate(20, step_ms=1, full_run=False)
    with running_receiver() as receiver:
        sinks = {"hook": _webhook(receiver.url, secret=SECRET, batch={"max_events": 5})}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
        await run_daemon_until(settings, lambda: len(receiver.delivered_ids()) >= 20)
    verifier = standardwebhooks.Webhook(SECRET)
    for request in receiver.delivered():
        verifier.verify(request.body, request.headers)
        assert request.headers["idempotency-key"] == request.headers["webhook-id"]
    tampered = receiver.delivered()[0].body.replace(b'"entries"', b'"entrieZ"')
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verifier.verify(tampered, receiver.delivered()[0].headers)


async def test_retries_reuse_the_idempotency_key_and_honour_retry_after(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A 503, then a 429 with Retry-After: 1, then success: every attempt carries the same key,
    and the last one waited at least the second the receiver asked for."""
    sandbox.world.generate(3, step_ms=1, full_run=False)
    script = [(503, {}), (429, {"Retry-After": "1"})]
    with running_receiver(Receiver(script=script)) as receiver:
        sinks = {"hook": _webhook(receiver.url, batch={"max_events": 10}, backoff_initial=0.05)}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
        await run_daemon_until(settings, lambda: bool(receiver.delivered()))
    requests = receiver.requests
    assert [r.status for r in requests] == [503, 429, 200]
    assert len({r.headers["idempotency-key"] for r in requests}) == 1
    assert requests[2].at - requests[1].at >= 1.0
    assert receiver.delivered_ids() == sandbox_ids(sandbox)


async def test_an_interrupted_batch_is_resent_with_the_same_key_after_a_restart(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Stopped while a batch keeps failing, then restarted after more entries arrived: the
    batch goes out with the same entries and the same key."""
    sandbox.world.generate(4, step_ms=1, full_run=False)
    with running_receiver(Receiver(status=503)) as receiver:
        sinks = {"hook": _webhook(receiver.url, batch={"max_events": 50})}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
        await run_daemon_until(settings, lambda: len(receiver.requests) >= 2)
        failed_key = receiver.requests[0].headers["idempotency-key"]
        sandbox.world.generate(10, step_ms=1, full_run=False)
        receiver.set(200)
        await run_daemon_until(settings, lambda: len(receiver.delivered_ids()) >= 14)
    first = receiver.delivered()[0]
    assert first.headers["idempotency-key"] == failed_key
    assert len(first.entries()) == 4
    assert receiver.delivered_ids() == sandbox_ids(sandbox)


async def test_a_rejected_batch_is_dead_lettered_and_replay_delivers_it(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A 400 moves the batch to the dead letters with the reason and later batches still flow;
    after the receiver is fixed, `replay --dead-letters` delivers it."""
    sandbox.world.generate(3, step_ms=1, full_run=False)
    with running_receiver(Receiver(status=400)) as receiver:
        sinks = {"hook": _webhook(receiver.url, batch={"max_events": 10})}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)

        def script() -> bool:
            if receiver.requests and receiver.status == 400:
                receiver.set(200)
                sandbox.world.generate(2, step_ms=1, full_run=False)
            return len(receiver.delivered_ids()) >= 2

        daemon = await run_daemon_until(settings, script)
        assert daemon.deliveries[0].health.dead_letters == 1
        config = tmp_path / "replay.toml"
        config.write_text(
            f'[state]\ndir = "{tmp_path / "state"}"\n'
            f'[sinks.hook]\ntype = "webhook"\nurl = "{receiver.url}"\n'
        )
        status = _cli("status", "--json", "--config", str(config))
        assert json.loads(status.stdout)["sinks"][0]["dead_letters"] == 1
        replay = _cli("replay", "--sink", "hook", "--dead-letters", "--config", str(config))
        assert replay.returncode == 0, replay.stderr
        assert _cli(
            "replay", "--sink", "hook", "--dead-letters", "--config", str(config)
        ).stdout.startswith("replayed 0")
    assert sorted(receiver.delivered_ids()) == sorted(sandbox_ids(sandbox))
    assert len(receiver.delivered_ids()) == 5


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runflow_tail", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_match_filters_keep_other_entries_from_the_filtered_sink(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Only entries matching a sink's `match` reach it; the file sink beside it gets all."""
    sandbox.world.generate(30, step_ms=1, level_code="info", full_run=False)
    sandbox.world.generate(7, step_ms=1, level_code="error", full_run=False)
    output = tmp_path / "all.jsonl"
    with running_receiver() as receiver:
        sinks = {
            "hook": _webhook(receiver.url, match="level_code:error OR level_code:fatal"),
            "file": FileSinkConfig(path=output, fsync="never"),
        }
        settings = settings_for(sandbox, tmp_path / "state", output, sinks=sinks)
        await run_daemon_until(
            settings, lambda: count_lines(output) >= 37 and len(receiver.delivered_ids()) >= 7
        )
    assert receiver.delivered_ids() == sandbox_ids(sandbox, "level_code:error")
    assert len(read_jsonl(output)) == 37


async def test_headers_and_auth_are_sent_and_never_logged(
    sandbox: SandboxHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Custom headers and bearer auth reach the receiver; their values are not in the logs."""
    sandbox.world.generate(2, step_ms=1, full_run=False)
    with running_receiver(Receiver(status=503)) as receiver:
        sinks = {
            "hook": _webhook(
                receiver.url,
                headers={"X-Team": SecretStr("team-secret-1")},
                bearer_token=SecretStr("tok-secret-2"),
            )
        }
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)

        def script() -> bool:
            if receiver.requests:
                receiver.set(200)
            return bool(receiver.delivered())

        await run_daemon_until(settings, script)
    headers = receiver.delivered()[0].headers
    assert headers["x-team"] == "team-secret-1"
    assert headers["authorization"] == "Bearer tok-secret-2"
    logged = capsys.readouterr()
    assert "secret-1" not in logged.out + logged.err and "secret-2" not in logged.out + logged.err


async def test_concurrent_parts_arrive_complete_with_distinct_keys(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """With concurrency = 3 a batch goes out as three requests at once, together complete."""
    sandbox.world.generate(90, step_ms=1, full_run=False)
    with running_receiver(Receiver(delay=0.05)) as receiver:
        sinks = {"hook": _webhook(receiver.url, concurrency=3, batch={"max_events": 90})}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
        await run_daemon_until(settings, lambda: len(receiver.delivered_ids()) >= 90)
    assert sorted(receiver.delivered_ids()) == sorted(sandbox_ids(sandbox))
    assert len({r.headers["idempotency-key"] for r in receiver.delivered()}) == len(
        receiver.delivered()
    )


def _answering(body: bytes, **headers: str) -> Starlette:
    async def endpoint(_request: Request) -> Response:
        return Response(body, status_code=200, headers=headers)

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b"x" * (MAX_ANSWER_BYTES + 1), {}, id="plain"),
        # 64 MiB of zeros in ~64 KB: only the decoded size tells.
        pytest.param(
            gzip.compress(b"\0" * (4 * MAX_ANSWER_BYTES)), {"content-encoding": "gzip"}, id="gzip"
        ),
    ],
)
async def test_an_answer_past_the_bound_is_not_read_and_the_batch_is_sent_again(
    body: bytes, headers: dict[str, str]
) -> None:
    """A destination answering 2xx with more than MAX_ANSWER_BYTES (decoded) does not get
    the daemon's memory: reading stops at the bound and the batch counts as not delivered,
    with an error naming the bound."""
    with serving(_answering(body, **headers)) as url:
        sink = _webhook(url + "/").build("hook")
        try:
            with pytest.raises(SinkRetryableError, match="more than 16,777,216 bytes"):
                await sink.send(make_entries(3))
        finally:
            await sink.aclose()


async def test_an_answer_within_the_bound_delivers() -> None:
    """The bound leaves an ordinary (or merely large) answer alone."""
    with serving(_answering(b"ok" * 1000, **{"content-encoding": "identity"})) as url:
        sink = _webhook(url + "/").build("hook")
        try:
            await sink.send(make_entries(3))
        finally:
            await sink.aclose()
