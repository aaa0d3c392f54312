"""The daemon: every stream's poller and every sink's delivery in one task group.

Shutdown (SIGTERM/SIGINT): stop polling, let each delivery finish the batch in hand
within the grace period, commit offsets, return. A second signal stops at once.
SIGHUP asks sinks that hold files to reopen them (logrotate).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .client import RunflowClient
from .delivery import Delivery
from .errors import SinkClosedError
from .journal import Journal, StateDirLock
from .observability import get_logger
from .poller import Poller
from .settings import Settings

DEFAULT_GRACE_PERIOD = 10.0

log = get_logger(__name__)


@dataclass
class RunOptions:
    grace_period: float = DEFAULT_GRACE_PERIOD
    handle_signals: bool = True
    stop_when_drained: bool = False
    """Stop once every stream has caught up and every sink has everything (one-shot tail)."""
    fatal_api_problems: bool = False
    """Let an API configuration problem (bad key, filter, run) end the run instead of
    retrying every few minutes (interactive use)."""
    on_started: Callable[[Daemon], None] | None = None
    extra_tasks: list[Callable[[Daemon], Coroutine[Any, Any, None]]] = field(default_factory=list)


class Daemon:
    def __init__(self, settings: Settings, state_dir: Path, options: RunOptions | None = None):
        self.settings = settings
        self.state_dir = state_dir
        self.options = options or RunOptions()
        self.pollers: list[Poller] = []
        self.deliveries: list[Delivery] = []
        self.journal: Journal | None = None
        self._stop = anyio.Event()
        self._hard_stop = False
        self.stop_reason: str | None = None

    def request_stop(self, reason: str = "requested") -> None:
        if self._stop.is_set():
            return
        self.stop_reason = reason
        self._stop.set()

    async def run(self) -> None:
        with StateDirLock(self.state_dir):
            journal = await Journal.open(
                self.state_dir,
                max_bytes=self.settings.state.max_journal_bytes,
                dedup_window=self.settings.state.dedup_window,
            )
            self.journal = journal
            client = RunflowClient(self.settings.api)
            try:
                await self._run_with(journal, client)
            finally:
                await client.aclose()
                await journal.aclose()

    async def _run_with(self, journal: Journal, client: RunflowClient) -> None:
        settings = self.settings
        subscriptions = {s.name: settings.sinks_for_stream(s) for s in settings.streams}
        journal.subscribe(subscriptions, {s.name: s.lookback for s in settings.streams})
        offsets = await journal.run(journal.store.ensure_offsets, list(settings.sinks))
        self.pollers = [
            Poller(s, settings.api, client, journal, fatal_problems=self.options.fatal_api_problems)
            for s in settings.streams
        ]
        self.deliveries = []
        for name, config in settings.sinks.items():
            streams = settings.streams_for_sink(name)
            if not streams:
                log.warning("sink.unused", sink=name, reason="no stream is routed to this sink")
                continue
            self.deliveries.append(
                Delivery(name, config, config.build(name), journal, streams, offset=offsets[name])
            )
        log.info(
            "daemon.started",
            streams=[p.stream.name for p in self.pollers],
            sinks=[d.name for d in self.deliveries],
            state_dir=str(self.state_dir),
        )
        try:
            async with anyio.create_task_group() as tg:
                if self.options.handle_signals:
                    tg.start_soon(self._watch_signals, tg.cancel_scope)
                poll_scope = anyio.CancelScope()
                tg.start_soon(self._run_pollers, poll_scope)
                deliveries_done = anyio.Event()
                tg.start_soon(self._run_deliveries, deliveries_done)
                if self.options.stop_when_drained:
                    tg.start_soon(self._stop_when_drained)
                for task in self.options.extra_tasks:
                    tg.start_soon(task, self)
                if self.options.on_started is not None:
                    self.options.on_started(self)
                await self._stop.wait()
                poll_scope.cancel()
                for delivery in self.deliveries:
                    delivery.request_stop()
                with anyio.move_on_after(self.options.grace_period) as grace:
                    await deliveries_done.wait()
                if grace.cancelled_caught:
                    log.warning(
                        "daemon.grace_period_expired", grace_period=self.options.grace_period
                    )
                tg.cancel_scope.cancel()
        except* SinkClosedError:
            self.stop_reason = "output closed"
            log.info("daemon.output_closed")
        finally:
            for delivery in self.deliveries:
                with anyio.CancelScope(shield=True):
                    await delivery.sink.aclose()
        log.info("daemon.stopped", reason=self.stop_reason)

    async def _run_pollers(self, scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                for poller in self.pollers:
                    tg.start_soon(poller.run)

    async def _run_deliveries(self, done: anyio.Event) -> None:
        try:
            async with anyio.create_task_group() as tg:
                for delivery in self.deliveries:
                    tg.start_soon(delivery.run)
        finally:
            done.set()

    async def _watch_signals(self, hard_scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self._reopen_sinks()
                elif not self._stop.is_set():
                    log.info("daemon.stopping", signal=signal.Signals(signum).name)
                    self.request_stop(signal.Signals(signum).name)
                else:
                    log.warning("daemon.stopping_now", signal=signal.Signals(signum).name)
                    self._hard_stop = True
                    hard_scope.cancel()

    async def _reopen_sinks(self) -> None:
        for delivery in self.deliveries:
            reopen = getattr(delivery.sink, "reopen", None)
            if reopen is not None:
                await reopen()
        log.info("daemon.sinks_reopened")

    async def _stop_when_drained(self) -> None:
        """One-shot mode: every stream polled once to its end, every sink has it all."""
        for poller in self.pollers:
            await poller.health.caught_up.wait()
        assert self.journal is not None
        last = self.journal.last_seq
        for delivery in self.deliveries:
            await delivery.wait_until_drained(last)
        self.request_stop("drained")
