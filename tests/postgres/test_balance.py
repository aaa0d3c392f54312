"""Fair shares: who claims what, who hands what over (pure; no database)."""

from __future__ import annotations

from runflow_tail.postgres.balance import Wanted, plan
from runflow_tail.postgres.leases import LeaseRow

STREAMS = ("stream:a", "stream:b", "stream:c")


def row(name: str, owner: str | None, expires_in: float = 10.0) -> LeaseRow:
    return LeaseRow(name, name.partition(":")[0], owner, owner, None, 1, expires_in, None)


def test_a_lone_member_claims_everything() -> None:
    decided = plan(me="m1", wanted=Wanted(STREAMS), held=set(), rows={}, live_members=["m1"])
    assert sorted(decided.claim) == list(STREAMS) and decided.release == []


def test_members_arriving_together_aim_for_one_third_each() -> None:
    """Three members, three streams, nothing held yet: each claims one (and they try
    different ones first, so that they rarely collide)."""
    firsts = {
        member: plan(
            me=member, wanted=Wanted(STREAMS), held=set(), rows={}, live_members=["m1", "m2", "m3"]
        ).claim
        for member in ("m1", "m2", "m3")
    }
    assert all(len(claims) == 1 for claims in firsts.values())
    assert len({claims[0] for claims in firsts.values()}) > 1


def test_a_member_above_its_share_hands_one_over_when_nothing_is_free() -> None:
    rows = {name: row(name, "m1") for name in STREAMS}
    decided = plan(
        me="m1", wanted=Wanted(STREAMS), held=set(STREAMS), rows=rows, live_members=["m1", "m2"]
    )
    assert decided.claim == [] and len(decided.release) == 1


def test_a_member_above_its_share_waits_while_leases_are_free() -> None:
    """Someone is about to claim the free lease; handing over now would only churn."""
    rows = {"stream:a": row("stream:a", "m1"), "stream:b": row("stream:b", "m1")}
    decided = plan(
        me="m1",
        wanted=Wanted(STREAMS),
        held={"stream:a", "stream:b"},
        rows=rows,
        live_members=["m1", "m2", "m3"],
    )
    assert decided.release == []


def test_a_live_lease_is_never_claimed_and_an_expired_one_is() -> None:
    rows = {
        "stream:a": row("stream:a", "m2"),
        "stream:b": row("stream:b", "m3", expires_in=-0.5),
        "stream:c": row("stream:c", None, expires_in=0),
    }
    decided = plan(
        me="m1", wanted=Wanted(STREAMS), held=set(), rows=rows, live_members=["m1", "m2"]
    )
    assert sorted(decided.claim) == ["stream:b", "stream:c"]


def test_a_member_wakes_when_a_lease_it_could_take_expires() -> None:
    """A dead owner's lease expires in 1.2 s: look again right then (failover within the
    lease time), not at the next round."""
    rows = {
        name: row(name, "m2", expires_in=1.2 if name == "stream:b" else 9.0) for name in STREAMS
    }
    decided = plan(
        me="m1", wanted=Wanted(STREAMS), held=set(), rows=rows, live_members=["m1", "m2"]
    )
    assert decided.wake_in == 1.2


def test_a_pinned_sink_is_claimed_only_where_it_is_pinned() -> None:
    wanted_here = Wanted(("sink:file",), {"sink:file": True})
    wanted_elsewhere = Wanted(("sink:file",), {"sink:file": False})
    assert plan(
        me="m1",
        wanted=wanted_here,
        held=set(),
        rows={},
        live_members=["m1", "m2", "m3", "m4", "m5"],
    ).claim == ["sink:file"]
    assert (
        plan(
            me="m2",
            wanted=wanted_elsewhere,
            held=set(),
            rows={},
            live_members=["m1", "m2", "m3", "m4", "m5"],
        ).claim
        == []
    )


def test_a_lease_no_longer_configured_is_handed_over() -> None:
    decided = plan(
        me="m1",
        wanted=Wanted(("stream:a",)),
        held={"stream:a", "stream:gone"},
        rows={},
        live_members=["m1"],
    )
    assert decided.release == ["stream:gone"]


def test_the_alert_engine_lease_goes_to_one_member() -> None:
    held_elsewhere = {"alerts": row("alerts", "m2")}
    assert (
        plan(
            me="m1",
            wanted=Wanted(("alerts",)),
            held=set(),
            rows=held_elsewhere,
            live_members=["m1", "m2", "m3"],
        ).claim
        == []
    )
    assert plan(
        me="m1", wanted=Wanted(("alerts",)), held=set(), rows={}, live_members=["m1", "m2", "m3"]
    ).claim == ["alerts"]


def test_nobody_sits_idle_while_a_member_holds_two() -> None:
    """Two streams and two sinks over three members: the one holding two of them while
    another holds none hands one over (2/1/1, not 2/2/0)."""
    leases = ("stream:a", "stream:b", "sink:x", "sink:y")
    rows = {
        "stream:a": row("stream:a", "m1"),
        "sink:x": row("sink:x", "m1"),
        "stream:b": row("stream:b", "m2"),
        "sink:y": row("sink:y", "m2"),
    }
    members = ["m1", "m2", "m3"]
    first = plan(
        me="m1", wanted=Wanted(leases), held={"stream:a", "sink:x"}, rows=rows, live_members=members
    )
    assert len(first.release) == 1
    rows = {name: lease for name, lease in rows.items() if name not in first.release}
    idle = plan(me="m3", wanted=Wanted(leases), held=set(), rows=rows, live_members=members)
    assert idle.claim == first.release
    rows[first.release[0]] = row(first.release[0], "m3")
    for member, held in (
        ("m1", {"stream:a", "sink:x"} - set(first.release)),
        ("m2", {"stream:b", "sink:y"}),
    ):
        settled = plan(me=member, wanted=Wanted(leases), held=held, rows=rows, live_members=members)
        assert settled.release == [] and settled.claim == []


def test_a_lease_nobody_else_takes_is_claimed_above_the_share() -> None:
    """Two members, but only this one wants the streams (configurations differ): a lease
    free for a lease time is claimed whatever the share says, so nothing is left idle."""
    rows = {"stream:a": row("stream:a", "m1")}
    wanted = Wanted(("stream:a", "stream:b"))
    members = ["m1", "m2"]
    share = plan(me="m1", wanted=wanted, held={"stream:a"}, rows=rows, live_members=members)
    assert share.claim == []
    late = plan(
        me="m1",
        wanted=wanted,
        held={"stream:a"},
        rows=rows,
        live_members=members,
        long_free={"stream:b"},
    )
    assert late.claim == ["stream:b"]
