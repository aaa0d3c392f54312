"""The delivery loop, the same for every sink: read after my offset, batch, send, commit.

Each sink is an independent consumer of the journal with its own offset, so a slow or
failing destination never holds back another. Retries (exponential backoff with full
jitter, ``retry_after`` honoured) and dead letters live here, once, for all sinks.
The offset moves only after the sink has the batch (or the batch is dead-lettered).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from runflow_tail.delivery.matching import SinkSelection
from runflow_tail.errors import (
    SinkClosedError,
    SinkPartiallyRejectedError,
    SinkRejectedError,
    SinkRetryableError,
)
from runflow_tail.journal import Journal
from runflow_tail.metrics import Metrics
from runflow_tail.models import Entry, EntryUndecodable
from runflow_tail.observability import get_logger, redact
from runflow_tail.pacing import Backoff
from runflow_tail.sinks.base import Sink, SinkConfigBase

log = get_logger(__name__)


@dataclass
class SinkHealth:
    """What the delivery loop knows about its sink right now."""

    name: str
    offset: int = 0
    delivered: int = 0
    filtered_out: int = 0
    dead_letters: int = 0
    batches: int = 0
    failing_since: float | None = None
    problem: str | None = None
    idle_at_seq: int = -1
    """The journal's last seq when this sink last found nothing to send."""


class Delivery:
    def __init__(
        self,
        name: str,
        config: SinkConfigBase,
        sink: Sink,
        journal: Journal,
        streams: Sequence[str],
        *,
        offset: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.sink = sink
        self.streams = tuple(streams)
        self.health = SinkHealth(name, offset=offset)
        self._journal = journal
        self._metrics = metrics or Metrics()
        self._selection = SinkSelection(name, config)
        self._batching = config.batching()
        self._stopping = False
        self._idle_scope: anyio.CancelScope | None = None
        self._went_idle = anyio.Event()

    async def wait_until_drained(self, seq: int) -> None:
        """Return once this sink has looked for work and found none up to ``seq``."""
        while self.health.idle_at_seq < seq:
            await self._went_idle.wait()

    def request_stop(self) -> None:
        """Finish the batch in hand, then return; an idle loop, or one waiting to retry a
        failed batch, returns at once (the batch stays in the journal)."""
        self._stopping = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def run(self) -> None:
        batch_settings = self._batching
        await self._resume_pending()
        while not self._stopping:
            seen = self._journal.last_seq
            batch = await self._read()
            if not batch:
                self.health.idle_at_seq = seen
                self._went_idle.set()
                self._went_idle = anyio.Event()
                if self._stopping:
                    # asked to stop while reading: nothing in hand, so go now
                    break
                with anyio.CancelScope() as self._idle_scope:
                    await self._journal.wait_for_entries_after(seen)
                self._idle_scope = None
                continue
            if len(batch) < batch_settings.max_events and batch_settings.max_wait > 0:
                batch = await self._fill(batch, seen)
            await self._deliver(batch)

    async def _resume_pending(self) -> None:
        """Re-send a batch interrupted by a crash with exactly the same entries first."""
        if not self.config.stable_batches:
            return
        pending = await self._journal.pending(self.name)
        if pending is not None and pending > self.health.offset:
            batch = await self._read(until=pending)
            if batch:
                log.info("sink.resending_interrupted_batch", sink=self.name, entries=len(batch))
                await self._deliver(batch)

    async def _read(self, *, until: int | None = None) -> list[Entry]:
        settings = self._batching
        return await self._journal.read_after(
            self.health.offset,
            self.streams,
            max_events=settings.max_events,
            max_bytes=settings.max_bytes,
            until=until,
        )

    async def _fill(self, batch: list[Entry], seen: int) -> list[Entry]:
        """Wait up to ``batch.max_wait`` for a fuller batch.

        ``seen`` is the journal's end when ``batch`` was read: wait for entries after that,
        not after the batch, because what came since may belong to other streams or not
        fit (``max_bytes``), and re-reading would find the same batch again at once.
        """
        # A stop ends the wait too (an object store waits minutes for a fuller batch): the
        # batch in hand is then sent as it is.
        with anyio.move_on_after(self._batching.max_wait) as self._idle_scope:
            while len(batch) < self._batching.max_events and not self._stopping:
                await self._journal.wait_for_entries_after(seen)
                seen = self._journal.last_seq
                batch = await self._read()
        self._idle_scope = None
        return batch

    async def _deliver(self, batch: list[Entry]) -> None:
        """Send the matching part of ``batch``; then move the offset past all of it."""
        matching, undecodable = self._selection.select(batch)
        if undecodable:
            await self._dead_letter_entries(undecodable)
        filtered = len(batch) - len(matching) - len(undecodable)
        self.health.filtered_out += filtered
        self._metrics.entries_filtered.labels(self.name).inc(filtered)
        end = batch[-1].seq
        if matching:
            if self.config.stable_batches:
                await self._journal.set_pending(self.name, end)
            outcome, reason, refused = await self._send_with_retries(matching)
            if outcome == "stopped":
                return  # not committed: the batch goes out again after a restart
            if outcome == "rejected":
                await self._dead_letter(matching, end, reason)
                return
            if refused is not None:
                # Part kept, part refused for good: the refused entries become the dead
                # letter (with the offset move), the kept ones count as delivered.
                if refused.accepted:
                    self._mark_delivered(refused.accepted)
                await self._dead_letter(list(refused.rejected), end, reason)
                return
            if matching:
                self._mark_delivered(len(matching))
        await self._journal.set_offset(self.name, end)
        self.health.offset = end

    async def _send_with_retries(
        self, batch: list[Entry]
    ) -> tuple[str, str, SinkPartiallyRejectedError | None]:
        """Returns ("sent" | "rejected" | "stopped", why it was rejected, and the partial
        refusal when the sink kept some of the batch)."""
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        started = anyio.current_time()
        budget = self.config.max_retry_duration
        while True:
            try:
                await self.sink.send(batch)
            except SinkClosedError:
                raise
            except EntryUndecodable as exc:
                # A sink that decodes what it did not declare (a plugin): that entry alone
                # becomes a dead letter, the rest goes again at once.
                await self._dead_letter_entries([(exc.entry, f"the sink needs its fields: {exc}")])
                batch[:] = [entry for entry in batch if entry.seq != exc.entry.seq]
                if not batch:
                    return "sent", "", None
                continue
            except SinkPartiallyRejectedError as exc:
                return "sent", f"rejected: {exc}", exc
            except SinkRejectedError as exc:
                return "rejected", f"rejected: {exc}", None
            except Exception as exc:  # noqa: BLE001 - a sink's bug must not lose entries
                retry_after = exc.retry_after if isinstance(exc, SinkRetryableError) else None
                reason = str(exc) if isinstance(exc, SinkRetryableError) else repr(exc)
                elapsed = anyio.current_time() - started
                if budget is not None and elapsed >= budget:
                    return "rejected", f"gave up after {elapsed:.0f}s of retries: {reason}", None
                delay = backoff.next_delay(retry_after)
                if budget is not None:
                    delay = min(delay, max(0.0, budget - elapsed))
                self._mark_failing(reason)
                self._metrics.sink_errors.labels(self.name).inc()
                log.warning(
                    "sink.send_failed",
                    sink=self.name,
                    error=reason,
                    entries=len(batch),
                    retry_in=round(delay, 2),
                    attempt=backoff.attempts,
                )
                if not self._stopping:
                    with anyio.CancelScope() as self._idle_scope:
                        await anyio.sleep(delay)
                    self._idle_scope = None
                if self._stopping:
                    return "stopped", "", None
                continue
            return "sent", "", None

    async def _dead_letter_entries(self, entries: list[tuple[Entry, str]]) -> None:
        """Entries this sink cannot handle: each kept alone with its reason, once (a batch
        re-read after a restart finds them kept); the rest of the batch goes on."""
        entries = [(entry, redact(reason)) for entry, reason in entries]
        added = await self._journal.dead_letter_entries(self.name, entries)
        self.health.dead_letters += added
        self._metrics.dead_letters.labels(self.name).inc(added)
        for entry, reason in entries:
            log.error(
                "sink.entry_dead_lettered",
                sink=self.name,
                id=entry.id,
                seq=entry.seq,
                reason=reason,
                replay=f"runflow-tail replay --sink {self.name} --dead-letters",
            )

    async def _dead_letter(self, batch: list[Entry], end: int, reason: str) -> None:
        reason = redact(reason)  # kept in the journal, shown by status and replay
        await self._journal.dead_letter(self.name, batch, reason, end)
        self.health.dead_letters += 1
        self._metrics.dead_letters.labels(self.name).inc()
        self.health.offset = end
        log.error(
            "sink.batch_dead_lettered",
            sink=self.name,
            reason=reason,
            entries=len(batch),
            first_seq=batch[0].seq,
            last_seq=batch[-1].seq,
            replay=f"runflow-tail replay --sink {self.name} --dead-letters",
        )
        # The sink moves on, so it is no longer failing; but nothing was delivered, so
        # this is no recovery to announce.
        self._clear_failing()

    def _mark_failing(self, problem: str) -> None:
        if self.health.failing_since is None:
            self.health.failing_since = anyio.current_time()
        self.health.problem = redact(problem)

    def _mark_delivered(self, count: int) -> None:
        self.health.delivered += count
        self._metrics.entries_delivered.labels(self.name).inc(count)
        self.health.batches += 1
        self._mark_recovered()

    def _mark_recovered(self) -> None:
        if self.health.failing_since is not None:
            log.info("sink.recovered", sink=self.name)
        self._clear_failing()

    def _clear_failing(self) -> None:
        self.health.failing_since = None
        self.health.problem = None
