"""The Elasticsearch/OpenSearch sink against a loopback fake of the _bulk API
(tests/support/destinations.py cites the documented behaviour it plays)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runflow_tail.errors import (
    SinkPartiallyRejectedError,
    SinkRejectedError,
    SinkRetryableError,
)
from runflow_tail.journal import JournalStore
from runflow_tail.models import Entry
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sinks.elasticsearch import ElasticsearchSinkConfig

from tests.support.destinations import ElasticsearchFake, make_entries, running_elasticsearch
from tests.support.harness import run_daemon_until, sandbox_ids, settings_for

pytestmark = pytest.mark.anyio

API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="


def _config(url: str, **options: Any) -> ElasticsearchSinkConfig:
    return ElasticsearchSinkConfig(url=url, api_key=API_KEY, **options)


async def _send(fake: ElasticsearchFake, entries: list[Entry], **options: Any) -> None:
    sink = _config(fake.url, **options).build("es")
    try:
        await sink.send(entries)
    finally:
        await sink.aclose()


async def test_each_entry_is_a_create_with_its_id_and_timestamp() -> None:
    """One create per entry: _id = entry id, index from the template and the entry's date,
    the entry's own fields unchanged plus @timestamp; NDJSON with the API key."""
    entries = make_entries(3)
    with running_elasticsearch() as fake:
        await _send(fake, entries)
    headers = fake.requests[0]["headers"]
    assert headers["content-type"] == "application/x-ndjson"
    assert headers["authorization"] == f"ApiKey {API_KEY}"
    assert sorted(fake.documents) == [("runflow-logs-2026.11.18", f"e-{n}") for n in (1, 2, 3)]
    document = fake.documents[("runflow-logs-2026.11.18", "e-1")]
    assert document.pop("@timestamp") == "2026-11-18T11:06:40.001000000Z"
    assert document == json.loads(entries[0].raw)


async def test_a_stream_name_with_capitals_still_makes_a_valid_index() -> None:
    """Index names are lowercase only: {stream} of a stream called Prod fills in prod."""
    entries = make_entries(2, stream="Prod")
    with running_elasticsearch() as fake:
        await _send(fake, entries, index="logs-{stream}")
    assert sorted(fake.documents) == [("logs-prod", "e-1"), ("logs-prod", "e-2")]


async def test_a_resent_batch_adds_no_duplicates() -> None:
    """The same batch twice: the second is all 409 conflicts, which count as delivered."""
    entries = make_entries(4)
    with running_elasticsearch() as fake:
        await _send(fake, entries)
        await _send(fake, entries)
    assert len(fake.documents) == 4
    assert len(fake.requests) == 2


async def test_an_overloaded_item_retries_the_batch_and_lands_once() -> None:
    """A per-item 429 makes the batch retry; on the retry the stored items answer 409 and
    the refused one is stored: every entry exactly once."""
    entries = make_entries(3)
    fake = ElasticsearchFake(
        item_failures={"e-2": [(429, "es_rejected_execution_exception", "rejected execution")]}
    )
    with running_elasticsearch(fake):
        with pytest.raises(SinkRetryableError, match="1 of 3 items to retry: 429"):
            await _send(fake, entries)
        await _send(fake, entries)
    assert sorted(doc_id for _, doc_id in fake.documents) == ["e-1", "e-2", "e-3"]


async def test_mapping_errors_dead_letter_only_those_entries_with_their_reason() -> None:
    """An item refused for good (400) is named with its reason; the others are kept."""
    entries = make_entries(3)
    reason = "failed to parse field [meta.attempt] of type [long]"
    fake = ElasticsearchFake(item_failures={"e-3": [(400, "document_parsing_exception", reason)]})
    with running_elasticsearch(fake), pytest.raises(SinkPartiallyRejectedError) as caught:
        await _send(fake, entries)
    assert [entry.id for entry in caught.value.rejected] == ["e-3"]
    assert caught.value.accepted == 2
    assert f"refused 1 of 3: 1 x 400 document_parsing_exception: {reason}" in str(caught.value)


async def test_a_rejected_request_retries_after_retry_after_and_an_echoed_key_is_masked() -> None:
    """HTTP 429 for the whole request retries after Retry-After; a 401 that echoes the key
    is final and shows it masked."""
    fake = ElasticsearchFake()
    fake.script.answers += [
        (429, {"Retry-After": "3"}, b"too many requests"),
        (401, {}, f"unable to authenticate with key [{API_KEY}]".encode()),
    ]
    with running_elasticsearch(fake):
        with pytest.raises(SinkRetryableError) as retried:
            await _send(fake, make_entries(1))
        with pytest.raises(SinkRejectedError) as refused:
            await _send(fake, make_entries(1))
    assert retried.value.retry_after == 3
    assert API_KEY not in str(refused.value)
    assert "HTTP 401: unable to authenticate with key [********]" in str(refused.value)


async def test_pretty_printed_entries_stay_one_line_each() -> None:
    """An entry whose JSON spans lines becomes one NDJSON line, its values unchanged."""
    entry = make_entries(1)[0]
    pretty = json.dumps(json.loads(entry.raw), indent=2).encode()
    with running_elasticsearch() as fake:
        await _send(fake, [Entry(entry.seq, "s", entry.id, entry.timestamp_ns, pretty)])
    assert fake.requests[0]["body"].count(b"\n") == 2
    stored = next(iter(fake.documents.values()))
    stored.pop("@timestamp")
    assert stored == json.loads(entry.raw)


def test_an_index_template_with_an_unknown_field_is_refused() -> None:
    """The index template may only use {stream} and {date}, and must be lowercase."""
    with pytest.raises(ValueError, match=r"only \{stream\} and \{date\}"):
        ElasticsearchSinkConfig(url="http://es:9200", index="logs-{run_id}")
    with pytest.raises(ValueError, match="lowercase"):
        ElasticsearchSinkConfig(url="http://es:9200", index="Logs")


@pytest.mark.sandbox_options(timestamp_style="z")
async def test_the_daemon_keeps_the_refused_entry_as_a_dead_letter(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Through the delivery loop: the one refused entry is the dead letter, every other
    entry is stored once and counted as delivered."""
    sandbox.world.generate(5, step_ms=1, full_run=False)
    refused = sandbox_ids(sandbox)[2]
    fake = ElasticsearchFake(
        item_failures={refused: [(400, "document_parsing_exception", "bad field")]}
    )
    with running_elasticsearch(fake):
        sinks = {"es": _config(fake.url, batch={"max_events": 10, "max_wait": 0})}
        settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
        daemon = await run_daemon_until(settings, lambda: len(fake.documents) >= 4)
    store = JournalStore(tmp_path / "state" / "journal.sqlite3")
    letters = store.dead_letters("es")
    store.close()
    health = daemon.deliveries[0].health
    assert (health.delivered, health.dead_letters) == (4, 1)
    assert [entry.id for letter in letters for entry in letter.entries] == [refused]
    assert "bad field" in letters[0].reason
