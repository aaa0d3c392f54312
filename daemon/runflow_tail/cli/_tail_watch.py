"""Tasks that watch a running ``tail`` from beside the engine: when to stop, what to tell
the person on stderr. Each is a coroutine factory for ``RunOptions.extra_tasks``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from runflow_tail.cli._terminal import Progress
from runflow_tail.errors import ApiError
from runflow_tail.service.daemon import Daemon
from runflow_tail.times import format_instant

Watcher = Callable[[Daemon], Coroutine[Any, Any, None]]
CHECK_EVERY = 0.2


def delivered(daemon: Daemon) -> int:
    """Entries the output has dealt with (printed, or skipped by --until)."""
    return sum(
        delivery.health.delivered + delivery.health.filtered_out for delivery in daemon.deliveries
    )


def stop_when_idle(seconds: float) -> Watcher:
    async def watch(daemon: Daemon) -> None:
        seen, quiet_since = delivered(daemon), time.monotonic()
        while True:
            await anyio.sleep(min(CHECK_EVERY, seconds / 4))
            count = delivered(daemon)
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            elif time.monotonic() - quiet_since >= seconds:
                daemon.request_stop("idle")
                return

    return watch


def heartbeat(seconds: float) -> Watcher:
    async def watch(daemon: Daemon) -> None:
        seen, quiet_since = delivered(daemon), time.monotonic()
        while True:
            await anyio.sleep(seconds / 4)
            count = delivered(daemon)
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            elif time.monotonic() - quiet_since >= seconds:
                stamp = time.strftime("%H:%M:%S")
                print(f"[{stamp}] still following; nothing new for {seconds:g}s", file=sys.stderr)
                quiet_since = time.monotonic()

    return watch


def stop_past(until_ns: int) -> Watcher:
    async def watch(daemon: Daemon) -> None:
        while True:
            await anyio.sleep(CHECK_EVERY)
            marks = [p.health.watermark_ns for p in daemon.pollers]
            if marks and all(m is not None and m >= until_ns for m in marks):
                for poller in daemon.pollers:
                    await poller.health.caught_up.wait()
                daemon.request_stop("until reached")
                return

    return watch


def failing_for(daemon: Daemon) -> tuple[float, str] | None:
    """How long the longest-failing stream has gone without a good answer, and why; None
    while every stream's last request succeeded."""
    worst: tuple[float, str] | None = None
    now = anyio.current_time()
    for poller in daemon.pollers:
        health = poller.health
        if health.problem is None:
            continue
        since = now - (health.last_success_monotonic or health.started_monotonic)
        if worst is None or since > worst[0]:
            worst = (since, health.problem)
    return worst


def give_up_after(seconds: float) -> Watcher:
    """A one-shot tail is a question with an answer: when the API has not answered well
    for ``seconds`` (unreachable, timing out, failing), end with one line and exit 4
    rather than retrying forever as the daemon does."""

    async def watch(daemon: Daemon) -> None:
        while True:
            await anyio.sleep(CHECK_EVERY)
            failing = failing_for(daemon)
            if failing is not None and failing[0] >= seconds:
                url = daemon.settings.api.shown_url
                raise ApiError(
                    f"gave up after {seconds:g}s without a good answer from the Runflow API at "
                    f"{url}: {failing[1]} (check --api-url or RUNFLOW_API_URL and the network; "
                    "--give-up-after waits longer)"
                )

    return watch


def waiting_notice(give_up: float) -> Watcher:
    """On a terminal that also shows the entries (no progress line there): one line as soon
    as a one-shot tail starts retrying, so the wait before giving up is not silent."""

    async def watch(daemon: Daemon) -> None:
        while True:
            await anyio.sleep(CHECK_EVERY)
            failing = failing_for(daemon)
            if failing is not None:
                print(
                    f"runflow-tail: no good answer from {daemon.settings.api.shown_url} yet "
                    f"({failing[1]}); retrying for up to {give_up:g}s",
                    file=sys.stderr,
                    flush=True,
                )
                return

    return watch


def progress(bar: Progress, *, give_up: float | None) -> Watcher:
    """On a terminal: how far a tail whose output goes elsewhere (a file, a pipe) has got,
    and, while the API fails, what the tail is waiting for."""

    async def watch(daemon: Daemon) -> None:
        url = daemon.settings.api.shown_url
        while True:
            await anyio.sleep(CHECK_EVERY)
            failing = failing_for(daemon)
            if failing is not None:
                left = f", giving up in {max(0.0, give_up - failing[0]):.0f}s" if give_up else ""
                bar.show(f"waiting for {url}: {failing[1][:120]}{left}")
                continue
            fetched = sum(poller.health.entries_fetched for poller in daemon.pollers)
            marks = [p.health.watermark_ns for p in daemon.pollers if p.health.watermark_ns]
            at = f", up to {format_instant(min(marks), digits=0)}" if marks else ""
            bar.show(f"{fetched:,} entries fetched, {delivered(daemon):,} written{at}")

    return watch
