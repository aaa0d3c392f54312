"""The daemon: every stream's poller and every sink's delivery in one task group.

Each poller and delivery runs in its own cancel scope, so SIGHUP can add, remove or
restart one without touching the others. Shutdown (SIGTERM/SIGINT): stop polling, let each
delivery finish the batch in hand within the grace period, commit offsets, return; a
second signal stops at once. SIGHUP reloads the configuration (an invalid one keeps the
old running and says why); the file sink opens its files for each batch, so logrotate
needs no signal at all.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from runflow_tail.alerts.engine import AlertEngine
from runflow_tail.api.client import RunflowClient
from runflow_tail.config.alerts import ALERT_ENGINE_CONSUMER
from runflow_tail.config.model import Settings
from runflow_tail.config.secrets import secret_values
from runflow_tail.delivery.loop import Delivery
from runflow_tail.errors import ConfigError, RunflowTailError, SinkClosedError
from runflow_tail.ingest.poller import Poller
from runflow_tail.journal import Journal, StateDirLock
from runflow_tail.metrics import Metrics
from runflow_tail.observability import get_logger, redact, register_secrets
from runflow_tail.service.http import serve_health
from runflow_tail.service.systemd import SystemdNotifier

DEFAULT_GRACE_PERIOD = 10.0
STATUS_EVERY = 10.0

log = get_logger(__name__)
W = TypeVar("W", Poller, Delivery, AlertEngine)


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


@dataclass
class _Running(Generic[W]):
    worker: W
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class Daemon:
    def __init__(self, settings: Settings, state_dir: Path, options: RunOptions | None = None):
        self.settings = settings
        self.state_dir = state_dir
        self.options = options or RunOptions()
        self.metrics = Metrics()
        self.journal: Journal | None = None
        self.stop_reason: str | None = None
        self.server_address: str | None = None
        self._pollers: dict[str, _Running[Poller]] = {}
        self._deliveries: dict[str, _Running[Delivery]] = {}
        self._engines: dict[str, _Running[AlertEngine]] = {}
        """The alert engine (one, while there are [[alerts]] rules)."""
        self._client: RunflowClient | None = None
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        self._reloading = anyio.Lock()

    @property
    def pollers(self) -> list[Poller]:
        return [running.worker for running in self._pollers.values()]

    @property
    def deliveries(self) -> list[Delivery]:
        return [running.worker for running in self._deliveries.values()]

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def run(self) -> None:
        with StateDirLock(self.state_dir):
            self.journal = await Journal.open(
                self.state_dir,
                max_bytes=self.settings.state.max_journal_bytes,
                dedup_window=self.settings.state.dedup_window,
            )
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
                await self.journal.aclose()

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

    async def _apply(self, settings: Settings, *, first: bool = False) -> None:
        """Make the running pollers and deliveries match ``settings``."""
        assert self.journal is not None and self._tg is not None
        old = self.settings
        self.settings = settings
        register_secrets(secret_values(settings))
        journal = self.journal
        journal.subscribe(settings.subscriptions(), {s.name: s.lookback for s in settings.streams})
        consumers = [*settings.sinks, *([ALERT_ENGINE_CONSUMER] if settings.alerts else [])]
        offsets = await journal.ensure_offsets(consumers)
        new_client = first or old.api != settings.api
        for name in list(self._deliveries):
            unchanged = name in settings.sinks and (
                settings.sinks[name] == old.sinks.get(name)
                and settings.streams_for_sink(name) == old.streams_for_sink(name)
            )
            if not unchanged:
                await self._stop_delivery(name)
        for name, config in settings.sinks.items():
            streams = settings.streams_for_sink(name)
            if name in self._deliveries:
                continue
            if not streams:
                log.warning("sink.unused", sink=name, reason="no stream is routed to this sink")
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
            if new_client or wanted.get(name) != self._pollers[name].worker.configured:
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
            if name not in self._pollers:
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
            "daemon.started" if first else "daemon.reloaded",
            streams=list(self._pollers),
            sinks=list(self._deliveries),
            state_dir=str(self.state_dir),
        )

    async def _apply_alerts(self, settings: Settings, old: Settings, *, restart: bool) -> None:
        """One alert engine while there are rules; restarted when they (or what they
        watch) change. Its state is in the journal, so a restart loses nothing."""
        running = self._engines.get("alerts")
        if running is not None and (
            restart or settings.alerts != old.alerts or settings.streams != old.streams
        ):
            await self._stop_engine()
        assert self.journal is not None
        if not settings.alerts:
            # Rules added later start from the journal's end, not from old history.
            await self.journal.forget_consumer(ALERT_ENGINE_CONSUMER)
            return
        if "alerts" not in self._engines:
            engine = AlertEngine(settings, self.journal, self._client)
            self._start(self._engines, "alerts", _Running(engine), engine.run)

    async def _stop_engine(self) -> None:
        running = self._engines.pop("alerts")
        running.scope.cancel()
        await running.done.wait()

    def _start(
        self,
        registry: dict[str, _Running[W]],
        name: str,
        running: _Running[W],
        work: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        assert self._tg is not None
        registry[name] = running

        async def supervised() -> None:
            try:
                with running.scope:
                    await work()
            finally:
                running.done.set()

        self._tg.start_soon(supervised)

    async def _stop_poller(self, name: str) -> None:
        running = self._pollers.pop(name)
        running.scope.cancel()
        await running.done.wait()

    async def _stop_delivery(self, name: str) -> None:
        running = self._deliveries.pop(name)
        running.worker.request_stop()
        with anyio.move_on_after(self.options.grace_period):
            await running.done.wait()
        running.scope.cancel()
        await running.done.wait()
        with anyio.CancelScope(shield=True):
            await running.worker.sink.aclose()

    async def _shut_down(self) -> None:
        for running in self._pollers.values():
            running.scope.cancel()
        for engine in self._engines.values():
            # Each engine step commits atomically: cancelling between steps loses nothing.
            engine.scope.cancel()
        for delivery in self._deliveries.values():
            delivery.worker.request_stop()
        with anyio.move_on_after(self.options.grace_period) as grace:
            for delivery in self._deliveries.values():
                await delivery.done.wait()
        if grace.cancelled_caught:
            log.warning("daemon.grace_period_expired", grace_period=self.options.grace_period)

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

    def readiness_problems(self) -> list[str]:
        """Why the daemon is not ready (empty when it is): each stream that has not polled
        successfully within ``ready_poll_multiplier`` times its interval or has a problem a
        person must fix, each sink failing for longer than ``ready_sink_failing_after``,
        a full journal, and each alert rule that names run fields the API's runs lack."""
        settings = self.settings.server
        timeout = self.settings.api.timeout
        now = anyio.current_time()
        problems: list[str] = []
        for poller in self.pollers:
            health, stream = poller.health, poller.stream
            allowed = settings.ready_poll_multiplier * stream.poll_interval + timeout
            since = now - (health.last_success_monotonic or health.started_monotonic)
            if health.blocked or health.stalled:
                problems.append(f"stream {stream.name}: {health.problem}")
            elif since > allowed:
                detail = f" (last problem: {health.problem})" if health.problem else ""
                what = "no successful poll" if health.last_success_monotonic else "no poll yet"
                problems.append(f"stream {stream.name}: {what} for {since:.0f}s{detail}")
        for delivery in self.deliveries:
            failing_since = delivery.health.failing_since
            allowed_failing = settings.ready_sink_failing_after
            if failing_since is not None and now - failing_since > allowed_failing:
                problems.append(
                    f"sink {delivery.name}: failing for {now - failing_since:.0f}s: "
                    f"{delivery.health.problem}"
                )
        if self.journal is not None and self.journal.full:
            problems.append("journal full: polling is paused until sinks catch up")
        if self.journal is not None and self.journal.disk_full:
            problems.append(
                f"journal: {self.journal.disk_full}; polling is paused until space returns"
            )
        engine = self._engines.get("alerts")
        if engine is not None:
            problems += engine.worker.problems
        # Problems quote what destinations and the API answered: no secret leaves here.
        return [redact(problem) for problem in problems]

    def status_line(self) -> str:
        """A short progress line: streams polling, entries delivered, the worst lag."""
        problems = self.readiness_problems()
        delivered = sum(d.health.delivered for d in self.deliveries)
        now_ns = time.time_ns()
        lags = [
            (now_ns - p.health.watermark_ns) / 1e9
            for p in self.pollers
            if p.health.watermark_ns is not None
        ]
        lag = f"; lag {max(lags):.1f}s" if lags else ""
        state = "ok" if not problems else f"{len(problems)} problem(s): {problems[0]}"
        return f"{len(self._pollers)} stream(s), {delivered} delivered{lag}; {state}"

    async def render_metrics(self) -> bytes:
        await self.refresh_gauges()
        return await anyio.to_thread.run_sync(self.metrics.render)

    async def refresh_gauges(self) -> None:
        """Bring the state-describing metrics up to date (called before each scrape)."""
        journal = self.journal
        if journal is None:
            return
        now_ns = time.time_ns()
        for poller in self.pollers:
            name = poller.stream.name
            if poller.health.watermark_ns is not None:
                self.metrics.lag.labels(name).set((now_ns - poller.health.watermark_ns) / 1e9)
            healthy = not (poller.health.blocked or poller.health.stalled)
            self.metrics.stream_up.labels(name).set(1 if healthy else 0)
        for delivery in self.deliveries:
            backlog = await journal.backlog(delivery.health.offset, delivery.streams)
            self.metrics.backlog.labels(delivery.name).set(backlog)
        self.metrics.journal_bytes.set(await journal.measure_size())

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
