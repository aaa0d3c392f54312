"""What the daemon says about itself: readiness (/readyz, systemd's STATUS), a status line,
and the gauges refreshed before each /metrics scrape."""

from __future__ import annotations

import time
from typing import Any

import anyio

from runflow_tail.config.model import Settings
from runflow_tail.journal import Journal
from runflow_tail.metrics import Metrics
from runflow_tail.observability import redact
from runflow_tail.service.workers import Workers


class Reporting(Workers):
    settings: Settings
    journal: Journal | None
    metrics: Metrics

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
        if self.lease_manager is not None:
            problems += self.lease_manager.problems()
        # Problems quote what destinations, the API and the database answered: no secret
        # leaves here.
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
        member = ""
        if self.lease_manager is not None:
            member = f"member {self.lease_manager.member}: "
        return f"{member}{len(self._pollers)} stream(s), {delivered} delivered{lag}; {state}"

    def ownership(self) -> dict[str, Any]:
        """This member and its leases (PostgreSQL state); nothing with SQLite."""
        return {} if self.lease_manager is None else self.lease_manager.describe()

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
        if self.lease_manager is not None:
            self.lease_manager.refresh_metrics()
