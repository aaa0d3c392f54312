"""The OTLP sink against a loopback receiver that decodes with opentelemetry-proto."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from runflow_tail.errors import (
    SinkPartiallyRejectedError,
    SinkRejectedError,
    SinkRetryableError,
)
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sinks.otlp import OtlpSinkConfig
from runflow_tail.version import __version__

from tests.support.destinations import (
    OtlpReceiver,
    make_entries,
    rpc_status,
    running_otlp,
)
from tests.support.harness import run_daemon_until, sandbox_ids, settings_for

pytestmark = pytest.mark.anyio


def _config(url: str, **options: Any) -> OtlpSinkConfig:
    return OtlpSinkConfig(endpoint=url, backoff_initial=0.01, **options)


def _attributes(record: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in record.attributes}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_records_map_every_field_per_the_logs_data_model(encoding: str) -> None:
    """Each entry becomes one record: times, severity, body, uid, run id, flattened fields,
    resource and scope, in protobuf and in OTLP/JSON."""
    entries = make_entries(2, level="error", meta={"node": "n1", "tries": [1, 2]})
    entries += make_entries(1, first_seq=3, level="chatty", message="line one\nline two")
    with running_otlp() as receiver:
        config = _config(
            receiver.url,
            encoding=encoding,
            resource_attributes={"deployment.environment": "test"},
        )
        sink = config.build("otel")
        before = time.time_ns()
        await sink.send(entries)
        after = time.time_ns()
        await sink.aclose()
    request = receiver.requests[0]["headers"]
    assert request["content-encoding"] == "gzip"
    assert request["content-type"] == (
        "application/json" if encoding == "json" else "application/x-protobuf"
    )
    message = receiver.received[0]
    resource = {
        kv.key: kv.value.string_value for kv in message.resource_logs[0].resource.attributes
    }
    assert resource == {"service.name": "runflow", "deployment.environment": "test"}
    scope = message.resource_logs[0].scope_logs[0].scope
    assert (scope.name, scope.version) == ("runflow-tail", __version__)
    records = receiver.records()
    assert len(records) == 3
    first, last = records[0], records[2]
    assert first.time_unix_nano == entries[0].timestamp_ns
    assert before <= first.observed_time_unix_nano <= after
    assert (first.severity_text, first.severity_number) == ("error", 17)
    assert (last.severity_text, last.severity_number) == ("chatty", 0)
    assert first.body.string_value == "step 1 done"
    assert last.body.string_value == "line one\nline two"
    assert _attributes(first) == {
        "log.record.uid": "e-1",
        "runflow.run_id": "0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
        "runflow.stream": "s",
        "runflow.meta.node": "n1",
        "runflow.meta.tries": [1, 2],
    }


@pytest.mark.parametrize(
    ("level", "number"),
    [("debug", 5), ("info", 9), ("warning", 13), ("error", 17), ("fatal", 21), ("notice", 0)],
)
async def test_severity_number_follows_the_level_code(level: str, number: int) -> None:
    """debug 5, info 9, warning 13, error 17, fatal 21, anything else 0 (unspecified)."""
    with running_otlp() as receiver:
        sink = _config(receiver.url).build("otel")
        await sink.send(make_entries(1, level=level))
        await sink.aclose()
    assert receiver.records()[0].severity_number == number


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_only_the_specs_retryable_statuses_retry_with_retry_after(status: int) -> None:
    """429, 502, 503 and 504 are retried, after the receiver's Retry-After."""
    receiver = OtlpReceiver()
    receiver.script.answers.append((status, {"Retry-After": "7"}, rpc_status(14, "busy")))
    with running_otlp(receiver):
        sink = _config(receiver.url).build("otel")
        with pytest.raises(SinkRetryableError) as caught:
            await sink.send(make_entries(1))
        await sink.aclose()
    assert caught.value.retry_after == 7
    assert "busy" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500, 501])
async def test_every_other_status_dead_letters_with_the_receivers_message(status: int) -> None:
    """Any other status is final; the error quotes the google.rpc.Status message."""
    receiver = OtlpReceiver()
    answer = rpc_status(3, "log record too big")
    receiver.script.answers.append((status, {"Content-Type": "application/x-protobuf"}, answer))
    with running_otlp(receiver):
        sink = _config(receiver.url).build("otel")
        with pytest.raises(SinkRejectedError) as caught:
            await sink.send(make_entries(1))
        await sink.aclose()
    assert not isinstance(caught.value, SinkPartiallyRejectedError)
    assert f"HTTP {status}: log record too big" in str(caught.value)
    # Only a 413 gets the advice to send smaller batches (read from the status, not the text).
    assert ("lower [sinks.NAME.batch]" in str(caught.value)) == (status == 413)
    assert caught.value.status == status


async def test_a_partial_success_counts_the_rejected_records() -> None:
    """A 200 with partial_success names how many records were dropped; the rest count as kept."""
    receiver = OtlpReceiver(partial=[(2, "2 records too old")])
    with running_otlp(receiver):
        sink = _config(receiver.url, encoding="json").build("otel")
        with pytest.raises(SinkPartiallyRejectedError) as caught:
            await sink.send(make_entries(5))
        await sink.aclose()
    assert caught.value.accepted == 3
    assert "rejected 2 of 5 log records: 2 records too old" in str(caught.value)


async def test_header_secrets_are_sent_and_masked_when_echoed() -> None:
    """A header value (an API key) goes out, and a receiver echoing it gets it masked."""
    receiver = OtlpReceiver()
    receiver.script.answers.append((401, {}, b"bad key sk-otlp-SECRET-42"))
    with running_otlp(receiver):
        config = _config(receiver.url, headers={"api-key": "sk-otlp-SECRET-42"})
        sink = config.build("otel")
        with pytest.raises(SinkRejectedError) as caught:
            await sink.send(make_entries(1))
        await sink.aclose()
    assert receiver.requests[0]["headers"]["api-key"] == "sk-otlp-SECRET-42"
    assert "sk-otlp-SECRET-42" not in str(caught.value) + repr(config) + repr(sink)


@pytest.mark.sandbox_options(timestamp_style="z")
async def test_the_daemon_dead_letters_a_partial_success_and_counts_the_rest(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Through the delivery loop: a partial rejection is one dead letter and the accepted
    records count as delivered; later batches flow."""
    sandbox.world.generate(4, step_ms=1, full_run=False)
    receiver = OtlpReceiver(partial=[(1, "one bad record")])
    with running_otlp(receiver):
        sinks = {"otel": _config(receiver.url, batch={"max_events": 4, "max_wait": 0})}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)

        def more_after_first() -> bool:
            if len(receiver.received) == 1 and len(sandbox_ids(sandbox)) == 4:
                sandbox.world.generate(2, step_ms=1, full_run=False)
            return len(receiver.records()) >= 6

        daemon = await run_daemon_until(settings, more_after_first)
    health = daemon.deliveries[0].health
    assert (health.dead_letters, health.delivered) == (1, 3 + 2)
    assert [_attributes(r)["log.record.uid"] for r in receiver.records()] == sandbox_ids(sandbox)
