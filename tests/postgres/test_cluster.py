"""Several daemons sharing one PostgreSQL state, in this event loop: the work spreads over
them, moves when one leaves or dies, and stops in time when one cannot renew."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr
from runflow_tail.config.model import Settings, StateSettings
from runflow_tail.errors import StateUnavailable
from runflow_tail.postgres.leases import LeaseBook
from runflow_tail.sandbox import SandboxHandle

from tests.support.alerts import (
    FAILED,
    alert_engine,
    alert_keys,
    alert_settings,
    at,
    play,
    runs_alerted,
)
from tests.support.cluster import LEVELS, ids_in, leases, member_settings, members, owners
from tests.support.harness import wait_for
from tests.support.receivers import running_alert_receiver

pytestmark = pytest.mark.anyio
LEASES = {f"stream:{level}" for level in LEVELS} | {f"sink:out-{level}" for level in LEVELS}


def produce(sandbox: SandboxHandle, count: int) -> None:
    for level in LEVELS:
        sandbox.world.generate(count, step_ms=1, full_run=False, level_code=level)


def expected(sandbox: SandboxHandle, level: str) -> list[str]:
    return [e.id for e in sandbox.world.store.entries if e.mapping()["level_code"] == level]


def delivered_everything(sandbox: SandboxHandle, directory: Path) -> bool:
    """Each sink has every entry of its stream exactly once. (Not necessarily in timestamp
    order: a batch generated while the poller read the one before it arrives late.)"""
    for level in LEVELS:
        got = ids_in(directory / f"{level}.jsonl")
        assert len(got) == len(set(got)), f"{level}: an entry delivered twice"
        if set(got) != set(expected(sandbox, level)):
            return False
    return True


async def test_members_share_the_leases_and_each_entry_is_delivered_once(
    sandbox: SandboxHandle, postgres_dsn: str, tmp_path: Path
) -> None:
    """Three members, three streams, three sinks: each holds two leases (one more member
    would change nothing), every sink receives its stream's entries once, in order."""
    settings = [member_settings(sandbox, postgres_dsn, tmp_path, f"m{i}") for i in range(3)]
    async with members(*settings) as running:
        produce(sandbox, 50)

        def balanced() -> bool:
            held = owners(postgres_dsn)
            counts = [list(held.values()).count(f"m{i}") for i in range(3)]
            return set(held) == LEASES and counts == [2, 2, 2]

        await wait_for(balanced, timeout=20)
        produce(sandbox, 50)
        await wait_for(lambda: delivered_everything(sandbox, tmp_path), timeout=20)
        # What /readyz and /metrics say: this member, and exactly the leases it holds.
        daemon = running[0][0]
        held = sorted(name for name, owner in owners(postgres_dsn).items() if owner == "m0")
        assert daemon.ownership()["member"] == "m0"
        assert daemon.ownership()["leases"] == held
        exposition = (await daemon.render_metrics()).decode()
        for lease in held:
            assert f'runflow_tail_lease_held{{lease="{lease}",member="m0"}} 1.0' in exposition
        assert "runflow_tail_cluster_members 3.0" in exposition
        assert "runflow_tail_state_up 1.0" in exposition


async def test_a_member_that_stops_hands_its_work_over_without_repeating_a_batch(
    sandbox: SandboxHandle, postgres_dsn: str, tmp_path: Path
) -> None:
    """A graceful stop finishes and commits the batch in hand, then releases its leases:
    the other member takes them at once (no waiting for expiry) and repeats nothing."""
    first = member_settings(sandbox, postgres_dsn, tmp_path, "m1", ttl=10)
    second = member_settings(sandbox, postgres_dsn, tmp_path, "m2", ttl=10)
    async with members(first, second) as running:
        produce(sandbox, 40)
        await wait_for(lambda: set(owners(postgres_dsn).values()) == {"m1", "m2"}, timeout=20)
        await wait_for(lambda: delivered_everything(sandbox, tmp_path), timeout=20)
        running[0][0].request_stop("leaving")
        # Far sooner than the 10 s leases would expire on their own:
        await wait_for(lambda: set(owners(postgres_dsn).values()) == {"m2"}, timeout=5)
        produce(sandbox, 40)
        await wait_for(lambda: delivered_everything(sandbox, tmp_path), timeout=20)


async def test_a_dead_members_work_moves_within_the_lease_time(
    sandbox: SandboxHandle, postgres_dsn: str, tmp_path: Path
) -> None:
    """A member that stops without a word (cancelled: no hand-over, no release): the other
    takes over each of its leases once they expire, with a new epoch, and nothing is lost."""
    ttl = 1.5
    first = member_settings(sandbox, postgres_dsn, tmp_path, "m1", ttl=ttl)
    second = member_settings(sandbox, postgres_dsn, tmp_path, "m2", ttl=ttl)
    async with members(first, second) as running:
        produce(sandbox, 30)
        await wait_for(lambda: set(owners(postgres_dsn).values()) == {"m1", "m2"}, timeout=20)
        before = leases(postgres_dsn)
        dead = [name for name, (owner, _, _) in before.items() if owner == "m1"]
        running[0][1].cancel()
        died = anyio.current_time()
        await wait_for(lambda: all(owners(postgres_dsn)[n] == "m2" for n in dead), timeout=10)
        assert anyio.current_time() - died < ttl + 0.5
        after = leases(postgres_dsn)
        assert all(after[name][1] == before[name][1] + 1 for name in dead)
        produce(sandbox, 30)
        await wait_for(lambda: delivered_everything(sandbox, tmp_path), timeout=20)


async def test_a_member_that_cannot_renew_stops_before_its_leases_expire(
    sandbox: SandboxHandle,
    postgres_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Renewals stop coming back (as in a partition): the member stops every poller and
    delivery while the database still shows its leases alive, then nobody's work is lost:
    the leases expire and the member claims them again once it can."""
    ttl = 2.0
    settings = member_settings(sandbox, postgres_dsn, tmp_path, "m1", ttl=ttl)
    async with members(settings) as running:
        daemon = running[0][0]
        await wait_for(lambda: len(daemon.pollers) == 3 and len(daemon.deliveries) == 3)
        renew = LeaseBook.renew

        async def unreachable(self: LeaseBook, held: dict[str, int]) -> set[str]:
            raise StateUnavailable("PostgreSQL at test is unavailable: cut off")

        monkeypatch.setattr(LeaseBook, "renew", unreachable)
        cut = anyio.current_time()
        await wait_for(lambda: not daemon.pollers and not daemon.deliveries, timeout=ttl + 1)
        remaining = [expires_in for _, _, expires_in in leases(postgres_dsn).values()]
        assert min(remaining) > 0, "stopped only after the database let the leases go"
        assert anyio.current_time() - cut < ttl
        assert any("cannot renew" in problem for problem in daemon.readiness_problems())
        monkeypatch.setattr(LeaseBook, "renew", renew)
        produce(sandbox, 20)
        await wait_for(lambda: len(daemon.pollers) == 3 and len(daemon.deliveries) == 3)
        await wait_for(lambda: delivered_everything(sandbox, tmp_path), timeout=20)


@pytest.mark.sandbox_options(timestamp_style="z")
async def test_the_alert_engine_runs_on_one_member_and_moves_without_repeating_an_alert(
    sandbox: SandboxHandle,
    sandbox_client: httpx.AsyncClient,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    """Two members with the same rule: one runs the engine (its lease); when that member
    dies, the other takes the engine over, with its state: every failed run is alerted
    once. (The webhook may get the alert in flight at the death twice, as the issue
    allows: with the same idempotency key, which is what a receiver de-duplicates by.)"""
    failed = [(await play(sandbox_client, status_code="failed", timestamp=at(30)))["id"]]
    with running_alert_receiver() as receiver:
        rule = {"name": "failed-runs", "match": FAILED, "destinations": ["hook"]}
        base = alert_settings(sandbox, tmp_path, receiver, [rule])

        def member(name: str) -> Settings:
            state = StateSettings(
                dir=tmp_path / name,
                backend="postgres",
                dsn=SecretStr(postgres_dsn),
                member=name,
                lease_ttl=1.5,
            )
            return base.model_copy(update={"state": state})

        async with members(member("m1"), member("m2")) as running:
            await wait_for(lambda: runs_alerted(receiver, "hook", failed) == {failed[0]: 1})
            engines = [daemon for daemon, _ in running if alert_engine(daemon) is not None]
            assert len(engines) == 1
            dead = running.index(next(r for r in running if r[0] is engines[0]))
            running[dead][1].cancel()
            survivor = running[1 - dead][0]
            await wait_for(lambda: alert_engine(survivor) is not None, timeout=10)
            failed += [
                (await play(sandbox_client, status_code="failed", timestamp=at(20 - i)))["id"]
                for i in range(2)
            ]
            await wait_for(lambda: len(runs_alerted(receiver, "hook", failed)) == 3)
    keys = alert_keys(receiver, "hook", failed)
    assert {run: len(distinct) for run, distinct in keys.items()} == dict.fromkeys(failed, 1)
    repeated = runs_alerted(receiver, "hook", failed) - Counter(failed)
    assert sum(repeated.values()) <= 1, f"more than the alert in flight repeated: {repeated}"


async def test_members_with_different_configurations_stop_handing_over_leases_nobody_takes(
    sandbox: SandboxHandle, postgres_dsn: str, tmp_path: Path
) -> None:
    """m1 polls warn and error, m2 only info: m1's fair share of two members says hand one
    over, but m2 does not want it; the lease comes back, and m1 keeps what it holds
    instead of handing it over again and again (each time leaving it idle)."""
    mine = {"stream:warn", "stream:error", "sink:out-warn", "sink:out-error"}
    first = member_settings(sandbox, postgres_dsn, tmp_path, "m1", levels=("warn", "error"), ttl=1)
    second = member_settings(sandbox, postgres_dsn, tmp_path, "m2", levels=("info",), ttl=1)
    async with members(first, second) as running:
        m1 = running[0][0]
        handed = m1.metrics.lease_changes

        def handed_over() -> float:
            return sum(handed.labels(lease, "handed_over")._value.get() for lease in mine)

        await wait_for(lambda: handed_over() >= 1, timeout=20)
        await wait_for(
            lambda: {n for n, (o, _, _) in leases(postgres_dsn).items() if o == "m1"} == mine
        )
        produce(sandbox, 20)
        await wait_for(lambda: delivered_everything(sandbox, tmp_path), timeout=20)
        before = handed_over()
        # Nine rounds (1 s leases): none hands a lease over again.
        with anyio.move_on_after(3):
            await wait_for(lambda: handed_over() > before, timeout=4)
            pytest.fail("m1 handed a lease over again")
