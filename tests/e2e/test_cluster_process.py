"""Daemons sharing a PostgreSQL state, as real processes, while the sandbox's world
produces: SIGKILL of lease owners, SIGSTOP past a lease, a PostgreSQL restart, and a
network partition (``ip netns``). In each, every entry reaches every webhook and nothing
is lost; what repeats is at most the batch a dying owner had in flight, under the same
idempotency key (so the receiver drops it)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from runflow_tail.sandbox import SandboxOptions, SandboxThread

from tests.support.cluster import Member, cluster_toml, leases, owners, wait_until
from tests.support.harness import settled_ids
from tests.support.postgres import PostgresServer, postgres_server
from tests.support.receivers import Receiver, running_receiver

pytestmark = pytest.mark.slow

LIVE_WORLD = {"world_rate": 6.0, "world_seed": 11, "timestamp_style": "z", "world_run_seconds": 2.0}
TTL = 2.0
POLL = 1.0
BATCH = 20
RECORD = Path(os.environ.get("FAILOVER_RECORD", "/dev/null"))
"""Where the SIGKILL test writes the failover times it measured (the bench reads them)."""


@contextlib.contextmanager
def receivers(*streams: str, host: str = "127.0.0.1") -> Iterator[dict[str, Receiver]]:
    with contextlib.ExitStack() as stack:
        yield {stream: stack.enter_context(running_receiver(host=host)) for stream in streams}


def everything_delivered(hooks: dict[str, Receiver], expected: list[str]) -> bool:
    return all(set(receiver.delivered_ids()) >= set(expected) for receiver in hooks.values())


def check_deliveries(hooks: dict[str, Receiver], expected: list[str], in_flight: int) -> None:
    """Every entry reached every webhook; repeats are at most ``in_flight`` batches, and
    each repeat came under the key of its first send (so a receiver drops it)."""
    for stream, receiver in hooks.items():
        delivered = receiver.delivered_ids()
        assert set(delivered) == set(expected), f"hook-{stream} lost or invented entries"
        repeats = len(delivered) - len(set(delivered))
        assert repeats <= in_flight * BATCH, f"hook-{stream}: {repeats} repeated entries"
        keys: dict[str, set[str]] = defaultdict(set)
        for request in receiver.delivered():
            for entry in request.entries():
                keys[entry["id"]].add(request.headers["idempotency-key"])
        assert all(len(used) == 1 for used in keys.values()), "a repeat under a new key"


def start_member(
    name: str,
    sandbox: SandboxThread,
    dsn: str,
    tmp_path: Path,
    hooks: dict[str, str],
    *,
    poll_interval: float,
    sandbox_url: str | None = None,
    prefix: tuple[str, ...] = (),
) -> Member:
    """A daemon of the cluster as a subprocess, with its own state dir and the webhooks;
    ``prefix`` runs it under another command (a network namespace)."""
    config = cluster_toml(
        sandbox_url=sandbox_url or sandbox.url,
        dsn=dsn,
        member=name,
        state_dir=tmp_path / name,
        hooks=hooks,
        ttl=TTL,
        poll_interval=poll_interval,
        batch=BATCH,
    )
    member = Member(name, config, tmp_path, prefix=prefix)
    return member.start({"RUNFLOW_API_KEY": sandbox.api_key})


@pytest.mark.parametrize("sandbox_thread", [LIVE_WORLD], indirect=True)
def test_sigkill_of_every_lease_owner_moves_its_leases_within_the_lease_time(
    sandbox_thread: SandboxThread, postgres_dsn: str, tmp_path: Path
) -> None:
    """Three members, two streams, two webhooks (four leases). Owners are SIGKILLed (and
    restarted) until every lease has lost its owner once: each time, the dead member's
    leases are claimed by the others within the lease time plus a poll interval."""
    streams = ("a", "b")
    with receivers(*streams) as hooks:
        urls = {stream: hooks[stream].url for stream in streams}

        def member(name: str) -> Member:
            return start_member(
                name, sandbox_thread, postgres_dsn, tmp_path, urls, poll_interval=POLL
            )

        everyone = {name: member(name) for name in ("m1", "m2", "m3")}
        all_leases = {f"stream:{s}" for s in streams} | {f"sink:hook-{s}" for s in streams}
        try:
            wait_until(
                lambda: (
                    set(owners(postgres_dsn)) == all_leases
                    and set(owners(postgres_dsn).values()) == set(everyone)
                ),
                timeout=30,
                what="the four leases spread over the three members",
            )
            orphaned: set[str] = set()
            failovers: list[float] = []
            while orphaned != all_leases:
                held = owners(postgres_dsn)
                victim = max(
                    everyone,
                    key=lambda name: sum(
                        1
                        for lease, owner in held.items()
                        if owner == name and lease not in orphaned
                    ),
                )
                theirs = {lease for lease, owner in held.items() if owner == victim}
                everyone[victim].kill()
                killed_at = time.monotonic()

                def moved(theirs: set[str] = theirs, victim: str = victim) -> bool:
                    now = owners(postgres_dsn)
                    return all(now.get(lease) not in (None, victim) for lease in theirs)

                moved_at = wait_until(moved, timeout=TTL * 4, what=f"{victim}'s leases moving")
                failovers.append(moved_at - killed_at)
                orphaned |= theirs
                everyone[victim] = member(victim)
            expected = settled_ids(sandbox_thread)
            wait_until(
                lambda: everything_delivered(hooks, expected),
                timeout=60,
                what="every entry at every webhook",
            )
        finally:
            codes = {name: one.terminate() for name, one in everyone.items()}
        RECORD.write_text(json.dumps({"ttl": TTL, "poll_interval": POLL, "failovers": failovers}))
    assert codes == dict.fromkeys(everyone, 0)
    assert max(failovers) <= TTL + POLL, f"failover took {max(failovers):.2f}s"
    check_deliveries(hooks, expected, in_flight=len(failovers))
    assert not any(one.tracebacks() for one in everyone.values())


@pytest.mark.parametrize("sandbox_thread", [LIVE_WORLD], indirect=True)
def test_a_member_stopped_past_its_lease_has_its_late_write_refused_and_steps_down(
    sandbox_thread: SandboxThread, postgres_dsn: str, tmp_path: Path
) -> None:
    """The stream's owner is frozen (SIGSTOP) while its commit waits in the database; the
    other member claims the stream; the frozen commit then reaches its fence: refused by
    the epoch check. After SIGCONT the member steps down cleanly and takes its fair share
    again; nothing is lost or doubled beyond the batch in flight."""
    with receivers("a") as hooks:
        urls = {"a": hooks["a"].url}
        members = {
            name: start_member(
                name, sandbox_thread, postgres_dsn, tmp_path, urls, poll_interval=0.2
            )
            for name in ("m1", "m2")
        }
        try:
            wait_until(
                lambda: set(owners(postgres_dsn).values()) == set(members),
                timeout=30,
                what="one lease each",
            )
            owner = owners(postgres_dsn)["stream:a"]
            assert owner is not None
            epoch = leases(postgres_dsn)["stream:a"][1]
            frozen, other = members[owner], next(m for n, m in members.items() if n != owner)
            with psycopg.connect(postgres_dsn) as blocker:
                # Every commit of entries takes this row first: hold it, so the owner's
                # next commit waits in the database with its fence still to come.
                blocker.execute("SELECT 1 FROM runflow_tail.journal_head FOR UPDATE")
                wait_until(
                    lambda: waiting_on_a_lock(postgres_dsn, f"runflow-tail {owner} journal"),
                    timeout=10,
                    what="the owner's commit waiting in the database",
                )
                frozen.signal(signal.SIGSTOP)
                wait_until(
                    lambda: leases(postgres_dsn)["stream:a"][:2] == (other.name, epoch + 1),
                    timeout=TTL * 4,
                    what="the other member claiming the stream",
                )
            frozen.signal(signal.SIGCONT)
            refused = wait_until(
                lambda: bool(refusals(frozen)), timeout=10, what="the late write refused"
            )
            assert refused
            wait_until(
                lambda: bool(frozen.events("cluster.stepped_down")),
                timeout=10,
                what="the frozen member stepping down",
            )
            wait_until(
                lambda: set(owners(postgres_dsn).values()) == set(members),
                timeout=30,
                what="the member taking its fair share again",
            )
            expected = settled_ids(sandbox_thread)
            wait_until(
                lambda: everything_delivered(hooks, expected), timeout=60, what="every entry"
            )
        finally:
            codes = {name: member.terminate() for name, member in members.items()}
    assert codes == {"m1": 0, "m2": 0}
    late = refusals(frozen)
    print(f"late writes refused by the epoch check: {len(late)}")
    assert late and all("epoch check refused it" in event["error"] for event in late)
    check_deliveries(hooks, expected, in_flight=2)
    assert not frozen.tracebacks() and not other.tracebacks()


def waiting_on_a_lock(dsn: str, application: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock'",
            (application,),
        ).fetchone()
    return bool(row and row[0])


def refusals(member: Member) -> list[dict[str, object]]:
    return [
        event
        for event in member.events("worker.lease_lost")
        if "epoch check" in str(event.get("error"))
    ]


@pytest.mark.parametrize("sandbox_thread", [LIVE_WORLD], indirect=True)
def test_a_postgresql_restart_pauses_the_members_and_loses_nothing(
    sandbox_thread: SandboxThread, own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """PostgreSQL stops (fast shutdown: every session cut) and comes back: the members say
    so, retry with backoff, and go on; every entry still reaches the webhook."""
    dsn = own_postgres.dsn()
    with receivers("a") as hooks:
        urls = {"a": hooks["a"].url}
        members = [
            start_member(name, sandbox_thread, dsn, tmp_path, urls, poll_interval=0.2)
            for name in ("m1", "m2")
        ]
        try:
            wait_until(lambda: len(hooks["a"].delivered_ids()) > 20, timeout=30, what="flow")
            own_postgres.stop()
            wait_until(
                lambda: all(
                    member.events("state.unavailable") or member.events("cluster.renew_failed")
                    for member in members
                ),
                timeout=20,
                what="both members noticing the outage",
            )
            own_postgres.start()
            expected = settled_ids(sandbox_thread)
            wait_until(
                lambda: everything_delivered(hooks, expected), timeout=60, what="every entry"
            )
            assert all(member.alive() for member in members)
        finally:
            codes = [member.terminate() for member in members]
    assert codes == [0, 0]
    check_deliveries(hooks, expected, in_flight=2)
    assert not any(member.tracebacks() for member in members)


# -- a network partition ----------------------------------------------------------------------


@contextlib.contextmanager
def network_namespace() -> Iterator[tuple[str, str]]:
    """A namespace joined to this one by a veth pair: yields (namespace, host address);
    the namespace's side is .2 of the same /30. ``ip link set <host veth> down`` cuts it
    off without a word (no RST: packets just vanish), as a real partition does."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = os.getpid() % 50000
    namespace, host_if, inner_if = f"rft{tag}", f"rft{tag}h", f"rft{tag}c"
    subnet = f"10.231.{tag % 250}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", namespace)
        ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if)
        ip("link", "set", inner_if, "netns", namespace)
        ip("addr", "add", f"{subnet}.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", namespace, "ip", "addr", "add", f"{subnet}.2/30", "dev", inner_if)
        ip("netns", "exec", namespace, "ip", "link", "set", inner_if, "up")
        ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield namespace, f"{subnet}.1"
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr!r}")
    finally:
        # Deleting the namespace destroys its veth end, and with it the peer.
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def test_a_partitioned_member_stops_working_before_its_leases_expire(tmp_path: Path) -> None:
    """One member runs in its own network namespace; the link goes down. It stops every
    poller and delivery (it logs so) before the database lets its leases go; the others
    take them over; after the link returns it rejoins. Nothing is lost."""
    with (
        network_namespace() as (namespace, host),
        postgres_server(
            listen=("127.0.0.1", host), hba=f"host all all {host.rpartition('.')[0]}.0/30 trust"
        ) as server,
        SandboxThread(SandboxOptions(**LIVE_WORLD), host="0.0.0.0") as sandbox,
        receivers("a", "b", host="0.0.0.0") as hooks,
    ):
        port = sandbox.url.rpartition(":")[2]
        urls = {s: hook.url.replace("127.0.0.1", host) for s, hook in hooks.items()}

        def member(name: str, prefix: tuple[str, ...] = ()) -> Member:
            return start_member(
                name,
                sandbox,
                server.dsn(host=host),
                tmp_path,
                urls,
                poll_interval=0.2,
                sandbox_url=f"http://{host}:{port}",
                prefix=prefix,
            )

        dsn = server.dsn()
        cut_off = member("cut", ("ip", "netns", "exec", namespace))
        members = [cut_off]
        try:
            wait_until(lambda: len(owners(dsn)) == 4, timeout=30, what="all leases")
            members += [member("m1"), member("m2")]
            wait_until(
                lambda: set(owners(dsn).values()) == {"cut", "m1", "m2"},
                timeout=30,
                what="the leases spread over three members",
            )
            subprocess.run(["ip", "link", "set", f"{namespace}h", "down"], check=True)
            theirs = {lease for lease, owner in owners(dsn).items() if owner == "cut"}
            expiries = lease_expiries(dsn, theirs)
            stepped = wait_until(
                lambda: bool(cut_off.events("cluster.stepped_down")),
                timeout=TTL * 3,
                what="the partitioned member stepping down",
            )
            assert stepped
            stopped_at = min(
                dt.datetime.fromisoformat(event["timestamp"])
                for event in cut_off.events("cluster.stepped_down")
            )
            assert stopped_at < min(expiries.values()), (stopped_at, expiries)
            wait_until(
                lambda: all(owners(dsn).get(lease) in ("m1", "m2") for lease in theirs),
                timeout=TTL * 4,
                what="the others taking over",
            )
            subprocess.run(["ip", "link", "set", f"{namespace}h", "up"], check=True)
            expected = settled_ids(sandbox)
            wait_until(
                lambda: everything_delivered(hooks, expected), timeout=60, what="every entry"
            )
            wait_until(
                lambda: "cut" in set(owners(dsn).values()),
                timeout=30,
                what="the partitioned member rejoining",
            )
        finally:
            codes = [member.terminate() for member in members]
    assert codes == [0, 0, 0]
    check_deliveries(hooks, expected, in_flight=len(theirs))


def lease_expiries(dsn: str, names: set[str]) -> dict[str, dt.datetime]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT name, expires_at FROM runflow_tail.leases WHERE name = ANY(%s)",
            (list(names),),
        ).fetchall()
    return {row[0]: row[1] for row in rows}
