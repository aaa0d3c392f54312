"""The daemon: every stream's poller and every sink's delivery in one task group.

Each poller and delivery runs in its own cancel scope (workers.py), so SIGHUP can add,
remove or restart one without touching the others. With the PostgreSQL state several
daemons share the work: this one runs only the pollers, deliveries and alert engine whose
leases it holds, and the lease manager starts and stops them as leases come and go
(``reconcile`` here; ``stop_now`` and ``hand_over`` in workers.py). Shutdown
(SIGTERM/SIGINT): stop polling, let each delivery finish the batch in hand within the
grace period, commit offsets, hand the leases back, return; a second signal stops at once.
SIGHUP reloads the configuration (an invalid one keeps the old running and says why); the
file sink opens its files for each batch, so logrotate needs no signal at all.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from runflow_tail.alerts.engine import AlertEngine
from runflow_tail.api.client import RunflowClient
from runflow_tail.config.alerts import ALERT_ENGINE_CONSUMER
from runflow_tail.config.model import Settings
from runflow_tail.config.secrets import secret_values
from runflow_tail.delivery.loop import Delivery
from runflow_tail.errors import ConfigError, RunflowTailError, SinkClosedError
from runflow_tail.ingest.poller import Poller
from runflow_tail.journal import Journal
from runflow_tail.metrics import Metrics
from runflow_tail.observability import get_logger, register_secrets
from runflow_tail.ownership import ALERTS_LEASE, sink_lease, stream_lease
from runflow_tail.service.http import serve_health
from runflow_tail.service.reporting import Reporting
from runflow_tail.service.state import open_state, unpinned_local_sinks, wanted_leases
from runflow_tail.service.systemd import SystemdNotifier
from runflow_tail.service.workers import _Running

DEFAULT_GRACE_PERIOD = 10.0
STATUS_EVERY = 10.0

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
    reload: Callable[[], Settings] | None = None
    """How SIGHUP obtains the new configuration (raises ConfigError when it is invalid)."""
    notifier: SystemdNotifier | None = None
    extra_tasks: list[Callable[[Daemon], Coroutine[Any, Any, None]]] = field(default_factory=list)


class Daemon(Reporting):
    def __init__(self, settings: Settings, state_dir: Path, options: RunOptions | None = None):
        super().__init__()
        self.settings = settings
        self.state_dir = state_dir
        self.options = options or RunOptions()
        self.grace_period = self.options.grace_period
        self.metrics = Metrics()
        self.journal: Journal | None = None
        self.stop_reason: str | None = None
        self.server_address: str | None = None
        self._client: RunflowClient | None = None
        self._stop = anyio.Event()
        self._reloading = anyio.Lock()

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def run(self) -> None:
        async with open_state(self.settings, self.state_dir, self.metrics) as (journal, owner):
            self.journal, self.lease_manager = journal, owner
            try:
                await self._supervise(self.journal)
            except BaseExceptionGroup as group:
                # An expected error (a port in use, an API that refuses the stream) is one
                # line for a person, whichever task raised it; anything else stays a group.
                expected = first_expected(group)
                if expected is None:
                    raise
                raise expected from None
            finally:
                if self._client is not None:
                    await self._client.aclose()

    async def _supervise(self, journal: Journal) -> None:
        notifier = self.options.notifier
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.settings.server.enabled:
                    self.server_address = await tg.start(
                        serve_health, self, self.settings.server.listen
                    )
                await self._apply(self.settings, first=True)
                if self.lease_manager is not None:
                    tg.start_soon(self.lease_manager.run, self)
                tg.start_soon(journal.maintain)
                if self.options.handle_signals:
                    tg.start_soon(self._watch_signals, tg.cancel_scope)
                if notifier is not None and notifier.enabled:
                    tg.start_soon(self._report_to_systemd, notifier)
                if self.options.stop_when_drained:
                    tg.start_soon(self._stop_when_drained)
                for task in self.options.extra_tasks:
                    tg.start_soon(task, self)
                await self._stop.wait()
                if notifier is not None:
                    notifier.stopping()
                await self._shut_down()
                if self.lease_manager is not None:
                    await self.lease_manager.release_all()
                tg.cancel_scope.cancel()
        except* SinkClosedError:
            self.stop_reason = "output closed"
            log.info("daemon.output_closed")
        finally:
            with anyio.CancelScope(shield=True):
                for running in self._deliveries.values():
                    await running.worker.sink.aclose()
        log.info("daemon.stopped", reason=self.stop_reason)

    # -- starting and stopping workers -------------------------------------------------

    def _owns(self, lease: str) -> bool:
        return self.lease_manager is None or self.lease_manager.holds(lease)

    async def _apply(self, settings: Settings, *, first: bool = False, why: str = "") -> None:
        """Make the running pollers and deliveries match ``settings`` (and the leases
        held, with the PostgreSQL state)."""
        assert self.journal is not None and self._tg is not None
        old = self.settings
        self.settings = settings
        register_secrets(secret_values(settings))
        journal = self.journal
        if self.lease_manager is not None:
            self.lease_manager.want(*wanted_leases(settings))
            for warning in unpinned_local_sinks(settings) if not why else ():
                log.warning("sink.follows_its_lease", problem=warning)
        self._forget_finished()
        # Retention looks after the streams polled here (it knows what they may re-read).
        subscriptions = {
            stream: sinks
            for stream, sinks in settings.subscriptions().items()
            if self._owns(stream_lease(stream))
        }
        journal.subscribe(subscriptions, {s.name: s.lookback for s in settings.streams})
        consumers = [*settings.sinks, *([ALERT_ENGINE_CONSUMER] if settings.alerts else [])]
        offsets = await journal.ensure_offsets(consumers)
        new_client = first or old.api != settings.api
        for name in list(self._deliveries):
            unchanged = name in settings.sinks and (
                settings.sinks[name] == old.sinks.get(name)
                and settings.streams_for_sink(name) == old.streams_for_sink(name)
            )
            if not unchanged or not self._owns(sink_lease(name)):
                await self._stop_delivery(name)
        for name, config in settings.sinks.items():
            streams = settings.streams_for_sink(name)
            if name in self._deliveries:
                continue
            if not streams:
                if not why:
                    log.warning("sink.unused", sink=name, reason="no stream is routed to this sink")
                continue
            if not self._owns(sink_lease(name)):
                continue
            delivery = Delivery(
                name,
                config,
                config.build(name),
                journal,
                streams,
                offset=offsets[name],
                metrics=self.metrics,
            )
            self._start(self._deliveries, name, _Running(delivery), delivery.run)
        wanted = {stream.name: stream for stream in settings.streams}
        old_streams = {stream.name for stream in old.streams}
        for name in list(self._pollers):
            changed = wanted.get(name) != self._pollers[name].worker.configured
            if new_client or changed or not self._owns(stream_lease(name)):
                await self._stop_poller(name)
        if new_client:
            if self._client is not None:
                await self._client.aclose()
            self._client = RunflowClient(settings.api, metrics=self.metrics)
        assert self._client is not None
        await self._apply_alerts(settings, old, restart=new_client)
        self.metrics.forget(
            sinks=old.sinks.keys() - settings.sinks, streams=old_streams - {*wanted}
        )
        for name, stream in wanted.items():
            if name not in self._pollers and self._owns(stream_lease(name)):
                poller = Poller(
                    stream,
                    settings.api,
                    self._client,
                    journal,
                    fatal_problems=self.options.fatal_api_problems,
                    metrics=self.metrics,
                )
                self._start(self._pollers, name, _Running(poller), poller.run)
        log.info(
            "daemon.started" if first else why or "daemon.reloaded",
            streams=list(self._pollers),
            sinks=list(self._deliveries),
            alerts=bool(self._engines),
            **self._where(),
        )

    def _where(self) -> dict[str, Any]:
        if self.lease_manager is None:
            return {"state_dir": str(self.state_dir)}
        return {"member": self.lease_manager.member}

    async def reconcile(self) -> None:
        """Run the workers of the leases held now (just claimed ones start here)."""
        async with self._reloading:
            if not self._stop.is_set():
                await self._apply(self.settings, why="daemon.leases_changed")

    async def _apply_alerts(self, settings: Settings, old: Settings, *, restart: bool) -> None:
        """One alert engine while there are rules; restarted when they (or what they
        watch) change. Its state is in the journal, so a restart loses nothing."""
        running = self._engines.get("alerts")
        if running is not None and (
            restart
            or settings.alerts != old.alerts
            or settings.streams != old.streams
            or not self._owns(ALERTS_LEASE)
        ):
            await self._stop_engine()
        assert self.journal is not None
        if not settings.alerts:
            # Rules added later start from the journal's end, not from old history.
            await self.journal.forget_consumer(ALERT_ENGINE_CONSUMER)
            return
        if "alerts" not in self._engines and self._owns(ALERTS_LEASE):
            engine = AlertEngine(settings, self.journal, self._client)
            self._start(self._engines, "alerts", _Running(engine), engine.run)

    # -- signals, reload, systemd ------------------------------------------------------

    async def _watch_signals(self, hard_scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    assert self._tg is not None
                    self._tg.start_soon(self.reload)
                elif not self._stop.is_set():
                    log.info("daemon.stopping", signal=name)
                    self.request_stop(name)
                else:
                    log.warning("daemon.stopping_now", signal=name)
                    hard_scope.cancel()

    async def reload(self) -> None:
        """SIGHUP: re-read the configuration and apply it; keep the old one if it is bad."""
        async with self._reloading:
            if self.options.reload is not None:
                try:
                    settings = await anyio.to_thread.run_sync(self.options.reload)
                except ConfigError as exc:
                    log.error(
                        "daemon.reload_rejected",
                        problems=exc.problems,
                        action="keeping the running configuration",
                    )
                    settings = None
                if settings is not None and not self._stop.is_set():
                    fixed = [
                        part
                        for part in ("state", "server", "log")
                        if getattr(settings, part) != getattr(self.settings, part)
                    ]
                    if fixed:
                        log.warning(
                            "daemon.reload_needs_restart",
                            sections=fixed,
                            reason="these sections apply at start only; the rest was reloaded",
                        )
                    await self._apply(settings)

    async def _report_to_systemd(self, notifier: SystemdNotifier) -> None:
        """READY once every stream has polled (or startup_timeout passed), then STATUS and,
        when systemd asks for it, WATCHDOG pings from this event loop."""
        notifier.status(f"starting: first poll of {len(self._pollers)} stream(s)")
        with anyio.move_on_after(self.settings.server.startup_timeout):
            for poller in self.pollers:
                await poller.health.first_poll_done.wait()
        notifier.ready(self.status_line())
        interval = STATUS_EVERY
        if notifier.watchdog_interval is not None:
            interval = min(interval, notifier.watchdog_interval / 2)
        last_status = time.monotonic()
        while True:
            await anyio.sleep(interval)
            if notifier.watchdog_interval is not None:
                notifier.watchdog()
            if time.monotonic() - last_status >= STATUS_EVERY:
                notifier.status(self.status_line())
                last_status = time.monotonic()

    async def _stop_when_drained(self) -> None:
        """One-shot mode: every stream polled once to its end, every sink has it all."""
        for poller in self.pollers:
            await poller.health.caught_up.wait()
        assert self.journal is not None
        last = self.journal.last_seq
        for delivery in self.deliveries:
            await delivery.wait_until_drained(last)
        self.request_stop("drained")


def first_expected(group: BaseExceptionGroup[Any]) -> RunflowTailError | None:
    """The first error of the tree in ``errors`` inside ``group``, when it holds nothing
    else (cancellations aside)."""
    found: list[RunflowTailError] = []
    unexpected = False

    def visit(exc: BaseException) -> None:
        nonlocal unexpected
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                visit(inner)
        elif isinstance(exc, RunflowTailError):
            found.append(exc)
        elif not isinstance(exc, anyio.get_cancelled_exc_class()):
            unexpected = True

    visit(group)
    return found[0] if found and not unexpected else None
