"""Random worlds, end to end: whatever the shape of the data and the API's behaviour, every
entry arrives once and in order, requests follow the data, no request goes inside a
Retry-After window, and a live entry arrives within a poll interval once the backlog is in."""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runflow_tail.api.client import PAUSE_WITHOUT_RETRY_AFTER
from runflow_tail.sandbox import SandboxHandle, SandboxOptions, serve_sandbox
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.times import NS_PER_SECOND, now_ns

from tests.support.harness import count_lines, read_jsonl, sandbox_ids, settings_for, wait_for

PAGE_SIZE = 100
POLL_INTERVAL = 0.2
PARALLELISM = 16


@dataclass(frozen=True)
class Cluster:
    age: float
    """Seconds before now of its first entry."""
    entries: int
    step_ms: float
    """0: every entry at one timestamp (a burst larger than a page)."""


@dataclass(frozen=True)
class WorldShape:
    clusters: tuple[Cluster, ...]
    late: int
    """Entries stamped after the newest one that become visible only after a delay."""
    every_429: int | None
    retry_after: float | None
    rate_5xx: float
    stuck: str | None
    latency: float


clusters = st.builds(
    Cluster,
    age=st.sampled_from([1.0, 30.0, 3600.0, 86_400.0, 20 * 86_400.0]),
    entries=st.integers(1, 350),
    step_ms=st.sampled_from([0.0, 1.0, 40.0]),
)
worlds = st.builds(
    WorldShape,
    clusters=st.lists(clusters, min_size=1, max_size=4).map(tuple),
    late=st.integers(0, 150),
    every_429=st.sampled_from([None, 5, 9]),
    retry_after=st.sampled_from([None, 0.3]),
    rate_5xx=st.sampled_from([0.0, 0.1]),
    stuck=st.sampled_from([None, None, "same", "fresh"]),
    latency=st.sampled_from([0.0, 0.05]),
)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(shape=worlds)
def test_any_world_is_tailed_exactly_once_in_order(shape: WorldShape) -> None:
    """Gaps from a second to weeks, bursts at one timestamp, late entries, 429s with and
    without Retry-After, 5xx, cursors that stall: the invariants hold."""
    options = SandboxOptions(
        world_rate=0,
        fault_429_every=shape.every_429,
        retry_after=shape.retry_after,
        fault_5xx_rate=shape.rate_5xx,
        fault_stuck_cursor=shape.stuck,
        latency=shape.latency,
    )
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(functools.partial(_scenario, shape, options, Path(directory)))


async def _scenario(shape: WorldShape, options: SandboxOptions, directory: Path) -> None:
    async with anyio.create_task_group() as tg:
        sandbox: SandboxHandle = await tg.start(functools.partial(serve_sandbox, options))
        world = sandbox.world
        for cluster in shape.clusters:
            world.generate(
                cluster.entries,
                timestamp_ns=now_ns() - int(cluster.age * NS_PER_SECOND),
                step_ms=cluster.step_ms,
                full_run=False,
            )
        newest = max(entry.ts_ns for entry in world.store.entries)
        late: set[str] = set()
        if shape.late:
            late = {
                entry.id
                for entry in world.generate(
                    shape.late,
                    # A whole second on: written with fewer digits, still after the newest.
                    timestamp_ns=newest + NS_PER_SECOND,
                    step_ms=1,
                    visible_after=0.5,
                    full_run=False,
                )
            }
        total = len(world.store)
        output = directory / "out.jsonl"
        settings_ = settings_for(
            sandbox,
            directory / "state",
            output,
            page_size=PAGE_SIZE,
            poll_interval=POLL_INTERVAL,
            lookback=0,
        )
        daemon = Daemon(settings_, directory / "state", RunOptions(handle_signals=False))
        started = time.monotonic()
        tg.start_soon(daemon.run)
        if shape.stuck is not None:
            # A stall must be seen and reported before the API mends its cursors.
            await wait_for(
                lambda: (
                    bool(daemon.pollers)
                    and (daemon.pollers[0].health.stalled or count_lines(output) >= total)
                ),
                timeout=60,
            )
            world.update_options({"fault_stuck_cursor": None})
        await wait_for(lambda: count_lines(output) >= total, timeout=90)
        elapsed = time.monotonic() - started

        # Live: an entry written now is in the file within a poll interval (and a request).
        # Microseconds, so that it is stamped after the backlog (whole seconds would put it
        # among the backlog's last second: a late arrival, rightly delivered when seen).
        world.update_options({"timestamp_style": "z"})
        limited_before = world.stats.by_status["429"]
        live = world.generate(1, full_run=False)[0]
        written = time.monotonic()
        await wait_for(lambda: count_lines(output) >= total + 1, timeout=30)
        live_latency = time.monotonic() - written
        # Each 429 meanwhile holds every request back for what the API asked (or a default
        # pause without Retry-After): that wait is the API's, not ours.
        imposed = (world.stats.by_status["429"] - limited_before) * (
            shape.retry_after or PAUSE_WITHOUT_RETRY_AFTER
        )
        daemon.request_stop("world checked")

        delivered = [entry["id"] for entry in read_jsonl(output)]
        expected = sandbox_ids(sandbox)
        assert sorted(delivered) == sorted(expected)  # every entry, none twice
        # In (timestamp, id) order, except late arrivals, which come when they are seen (one
        # may be stamped before an entry already read past while it was still invisible).
        assert [i for i in delivered if i not in late] == [i for i in expected if i not in late]
        assert delivered[-1] == live.id
        assert world.stats.requests_before_retry_after == 0
        answered = world.stats.by_status["200"]
        pages = sum(-(-c.entries // PAGE_SIZE) for c in shape.clusters) + shape.late // PAGE_SIZE
        gaps = len(shape.clusters) + 1
        idle_polls = (elapsed + live_latency) / POLL_INTERVAL
        assert answered <= pages + gaps * (PARALLELISM + 2) + idle_polls + 10
        assert live_latency <= POLL_INTERVAL + 1.5 + imposed
        tg.cancel_scope.cancel()
