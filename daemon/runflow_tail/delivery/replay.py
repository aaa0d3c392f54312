"""Replay: re-send dead letters, or a time range from the journal, to one sink.

Replay never touches the sink's live offset, so it can run beside the daemon. The caller
builds the sink under its own name (``<sink>.replay``: a file sink keeps a separate
crash-intent record; a webhook's idempotency keys differ from the live ones); ranges go
in the sink's own batch size and through its own ``match`` filter (dead letters were
filtered when first sent).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import anyio

from runflow_tail.delivery.matching import SinkSelection
from runflow_tail.errors import SinkError
from runflow_tail.journal import OperatorStore
from runflow_tail.models import Entry
from runflow_tail.observability import get_logger
from runflow_tail.sinks.base import Sink, SinkConfigBase

log = get_logger(__name__)
Progress = Callable[[int, Entry], None]
"""Told after each batch: entries sent so far, and the last entry read."""


class ReplayStopped(SinkError):
    """The sink refused part of a replay; what was sent before it stays sent."""


async def replay_dead_letters(
    store: OperatorStore, sink: Sink, sink_name: str, *, progress: Progress | None = None
) -> tuple[int, int]:
    """Send each dead letter of ``sink_name`` and delete it once sent: (letters, entries)."""
    letters = await anyio.to_thread.run_sync(store.dead_letters, sink_name)
    sent = 0
    for letter in letters:
        await _send(sink, letter.entries, f"dead letter {letter.id}")
        await anyio.to_thread.run_sync(store.delete_dead_letter, letter.id)
        sent += len(letter.entries)
        if progress is not None and letter.entries:
            progress(sent, letter.entries[-1])
    return len(letters), sent


async def replay_range(
    store: OperatorStore,
    sink: Sink,
    sink_name: str,
    config: SinkConfigBase,
    streams: Sequence[str],
    start: int,
    end: int | None,
    *,
    progress: Progress | None = None,
) -> int:
    """Send what the journal holds of ``streams`` in [start, end) that the live sink would
    have been sent (its ``match``, the same derived run fields), in ``config``'s batch
    size; returns how many entries went. An entry the sink cannot handle is skipped and
    named in a log line (live, it went to the dead letters, which ``--dead-letters``
    replays)."""
    selection = SinkSelection(sink_name, config)
    batch_size = config.batching().max_events
    sent, after = 0, 0
    while True:
        rows = await anyio.to_thread.run_sync(
            functools.partial(
                store.read_range, streams, start, end, after_seq=after, limit=batch_size
            )
        )
        if not rows:
            return sent
        after = rows[-1].seq
        batch, undecodable = selection.select(rows)
        for entry, reason in undecodable:
            log.warning("replay.entry_skipped", seq=entry.seq, id=entry.id, reason=reason)
        if batch:
            await _send(sink, batch, "range")
        sent += len(batch)
        if progress is not None:
            progress(sent, rows[-1])


async def _send(sink: Sink, batch: Sequence[Entry], what: str) -> None:
    try:
        await sink.send(batch)
    except SinkError as exc:
        raise ReplayStopped(f"replay stopped at {what}: {exc}") from exc
