"""The Loki sink against a loopback fake of the push API (tests/support/destinations.py
cites the documented behaviour it plays)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from runflow_tail.errors import SinkRejectedError, SinkRetryableError
from runflow_tail.models import Entry
from runflow_tail.sinks.loki import LokiSinkConfig

from tests.support.destinations import BASE_NS, LokiFake, make_entries, running_loki

pytestmark = pytest.mark.anyio


async def _send(fake: LokiFake, entries: list[Entry], **options: Any) -> None:
    sink = LokiSinkConfig(url=fake.url, **options).build("loki")
    try:
        await sink.send(entries)
    finally:
        await sink.aclose()


async def test_lines_are_the_entries_under_low_cardinality_labels() -> None:
    """Each line is the entry as received, under job="runflow" plus the level label, sent
    gzipped with the tenant header; values within a stream are in time order."""
    entries = make_entries(2, level="info") + make_entries(1, first_seq=3, level="error")
    late = make_entries(1, first_seq=0, level="info")  # an older entry arriving last
    with running_loki() as fake:
        await _send(fake, [*entries, *late], label_fields=("level",), tenant_id="team-a")
    headers = fake.requests[0]["headers"]
    assert (headers["content-encoding"], headers["x-scope-orgid"]) == ("gzip", "team-a")
    pushed = json.loads(fake.requests[0]["body"])["streams"]
    assert [stream["stream"] for stream in pushed] == [
        {"job": "runflow", "level": "info"},
        {"job": "runflow", "level": "error"},
    ]
    assert [int(value[0]) for value in pushed[0]["values"]] == [
        BASE_NS + n * 1_000_000 for n in (0, 1, 2)
    ]
    assert all(isinstance(value[0], str) and len(value) == 2 for value in pushed[0]["values"])
    assert pushed[1]["values"][0][1] == entries[2].raw.decode()


async def test_message_lines_carry_the_rest_as_structured_metadata() -> None:
    """With line = "message", the line is the message and the other fields are flat text
    metadata (nested values as JSON)."""
    with running_loki() as fake:
        await _send(fake, make_entries(1, message="a\nb"), line="message")
    labels, _, line, metadata = fake.lines[0]
    assert (labels, line) == ({"job": "runflow"}, "a\nb")
    assert metadata == {
        "id": "e-1",
        "run_id": "0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
        "level_code": "info",
        "meta": '{"node":"n1","attempt":2}',
    }


async def test_a_resent_batch_is_ignored_by_loki() -> None:
    """Pushing the same batch again stores nothing new (same timestamp and line)."""
    entries = make_entries(3)
    with running_loki() as fake:
        await _send(fake, entries, structured_metadata=True)
        await _send(fake, entries, structured_metadata=True)
    assert len(fake.requests) == 2
    assert [line[3] for line in fake.lines] == [
        {"id": f"e-{n}", "run_id": "0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"} for n in (1, 2, 3)
    ]


async def test_a_400_is_final_and_quotes_loki() -> None:
    """Loki's 400 (lines it refused; the rest stored) is never retried: it dead-letters the
    batch with Loki's own words."""
    fake = LokiFake(too_old_before_ns=BASE_NS + 2_000_000)
    with running_loki(fake), pytest.raises(SinkRejectedError) as caught:
        await _send(fake, make_entries(3))
    assert "HTTP 400: entry with timestamp" in str(caught.value)
    assert "entry too far behind" in str(caught.value)
    assert len(fake.lines) == 2


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_retry_after_retry_after(status: int) -> None:
    """429 and 5xx are retried, after Retry-After when Loki gives one."""
    fake = LokiFake()
    fake.script.answers.append((status, {"Retry-After": "2"}, b"Ingestion rate limit exceeded"))
    with running_loki(fake), pytest.raises(SinkRetryableError) as caught:
        await _send(fake, make_entries(1))
    assert caught.value.retry_after == 2
    assert "Ingestion rate limit exceeded" in str(caught.value)


async def test_a_label_from_a_missing_field_is_unknown_not_empty() -> None:
    """flow comes from run.flow_id; an entry without its run gets flow="unknown"."""
    with running_loki() as fake:
        await _send(fake, make_entries(1), label_fields=("flow", "stream"), compression="none")
    assert fake.lines[0][0] == {"job": "runflow", "flow": "unknown", "stream": "s"}


def test_labels_outside_the_allow_list_or_badly_named_are_refused() -> None:
    """label_fields takes only level, stream and flow; fixed label names follow Prometheus'."""
    with pytest.raises(ValueError, match="level"):
        LokiSinkConfig(url="http://loki:3100", label_fields=("run_id",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label name '2job'"):
        LokiSinkConfig(url="http://loki:3100", labels={"2job": "x"})
