"""The sandbox's world, control endpoints, ways of running, and command-line flags."""

from __future__ import annotations

import argparse
import functools

import anyio
import httpx
import pytest
from runflow_tail.sandbox import (
    SandboxHandle,
    SandboxOptions,
    SandboxThread,
    World,
    add_sandbox_arguments,
    options_from_arguments,
    serve_sandbox,
)
from runflow_tail.sandbox.store import DEFAULT_SORT
from runflow_tail.times import parse_instant

from tests.support.sandbox import LOGS, append, generate, get_page

anyio_mark = pytest.mark.anyio


@anyio_mark
async def test_patched_options_take_effect_at_once(sandbox_client: httpx.AsyncClient) -> None:
    """PATCH /_sandbox/options changes the API's behaviour for the next request."""
    await generate(sandbox_client, 2)
    response = await sandbox_client.patch("/_sandbox/options", json={"cursor_field": "next_pq"})
    assert response.json()["cursor_field"] == "next_pq"
    assert "next_pq" in (await sandbox_client.get(LOGS)).json()


@anyio_mark
async def test_invalid_option_value_is_refused_and_changes_nothing(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A PATCH with a bad value answers 422 and leaves every option as it was."""
    response = await sandbox_client.patch(
        "/_sandbox/options", json={"latency": 0.5, "cursor_form": "xml"}
    )
    assert response.status_code == 422 and response.json()["errors"]
    options = (await sandbox_client.get("/_sandbox/options")).json()
    assert options["latency"] == 0.0 and options["cursor_form"] == "token"


@anyio_mark
async def test_unknown_option_name_is_refused(sandbox_client: httpx.AsyncClient) -> None:
    """A PATCH naming an option that does not exist answers 422."""
    response = await sandbox_client.patch("/_sandbox/options", json={"cursor_kind": "url"})
    assert response.status_code == 422


@anyio_mark
async def test_stats_count_requests_by_status_and_reset(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Stats count API and /logs requests by status; reset sets the counters back to zero."""
    await sandbox_client.get(LOGS)
    await sandbox_client.get(LOGS, params={"limit": 0})
    await sandbox_client.get("/v1/health")
    stats = (await sandbox_client.get("/_sandbox/stats")).json()
    assert stats["requests_total"] == 3 and stats["logs_requests"] == 2
    assert stats["by_status"] == {"200": 2, "422": 1}
    await sandbox_client.post("/_sandbox/stats/reset")
    stats = (await sandbox_client.get("/_sandbox/stats")).json()
    assert stats["requests_total"] == 0 and stats["by_status"] == {}


@anyio_mark
async def test_appended_partial_entries_are_completed(sandbox_client: httpx.AsyncClient) -> None:
    """An appended entry with only a message gets an id, run, level, timestamp and meta."""
    (entry_id,) = await append(sandbox_client, [{"message": "hello", "meta": {"node": "llm"}}])
    entry = (await sandbox_client.get(f"{LOGS}/{entry_id}")).json()
    assert entry["message"] == "hello" and entry["level_code"] == "info"
    assert entry["meta"] == {"node": "llm"} and entry["run"]["id"] == entry["run_id"]


@anyio_mark
async def test_appending_a_duplicate_id_is_refused(sandbox_client: httpx.AsyncClient) -> None:
    """Appending an entry whose id already exists answers 422 and stores nothing."""
    (entry_id,) = await append(sandbox_client, [{}])
    response = await sandbox_client.post("/_sandbox/entries", json={"entries": [{"id": entry_id}]})
    assert response.status_code == 422
    assert (await sandbox_client.get("/_sandbox/stats")).json()["entries_total"] == 1


@anyio_mark
async def test_large_generate_reports_count_and_time_span(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Generating over 1,000 entries returns the count and first/last timestamps, not ids."""
    created = await generate(sandbox_client, 1500, step_ms=1, timestamp="2026-03-01T12:00:00Z")
    assert created["count"] == 1500 and "ids" not in created
    assert created["first_timestamp"].startswith("2026-03-01T12:00:00")
    assert created["last_timestamp"].startswith("2026-03-01T12:00:01")


@anyio_mark
@pytest.mark.sandbox_options(timestamp_style="z")
async def test_failed_run_ends_with_an_error_entry_carrying_the_failed_snapshot(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A run created failed ends with an error entry whose run snapshot has the failure,
    logged at the run's completed_at."""
    created = await sandbox_client.post(
        "/_sandbox/runs", json={"status_code": "failed", "failure_code": "MODEL_ERROR"}
    )
    last = (await sandbox_client.get(f"{LOGS}/{created.json()['ids'][-1]}")).json()
    assert last["level_code"] == "error" and last["message"].startswith("Run failed: ")
    assert last["run"]["failure_code"] == "MODEL_ERROR"
    assert parse_instant(last["run"]["completed_at"]) == parse_instant(last["timestamp"])


@anyio_mark
async def test_earlier_entries_keep_the_snapshot_of_their_moment(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """The first entry of a finished run still shows the run as it was then (queued)."""
    created = await sandbox_client.post("/_sandbox/runs", json={"status_code": "succeeded"})
    run_id = created.json()["run"]["id"]
    page = await sandbox_client.get(f"/v1/runs/{run_id}/logs", params={"q": "meta.stage:queue"})
    (queued,) = page.json()["items"]
    assert queued["run"]["started_at"] is None and queued["run"]["completed_at"] is None
    assert created.json()["run"]["completed_at"]


@anyio_mark
@pytest.mark.sandbox_options(run_schema="older", canceled_spelling="cancelled", timestamp_style="z")
async def test_the_older_schema_plays_status_code_and_the_cancelled_spelling(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Older schema: the run's status_code moves from queued to 'cancelled', and it has no
    failure details at all."""
    created = await sandbox_client.post("/_sandbox/runs", json={"status_code": "canceled"})
    run_id = created.json()["run"]["id"]
    items = (await get_page(sandbox_client, q=f"run_id:{run_id}", fields="run"))["items"]
    assert [i["run"]["status_code"] for i in items][:2] == ["queued", "dispatching"]
    assert items[-1]["run"]["status_code"] == "cancelled"
    assert not {"failure_code", "failure_stage_code", "failure_stage"} & set(items[-1]["run"])


@anyio_mark
@pytest.mark.sandbox_options(canceled_spelling="cancelled", failure_stage_key="failure_stage")
async def test_the_current_schema_plays_failure_stage_and_cancelled_nodes(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Current schema: no status_code; the stage key can be 'failure_stage', and a canceled
    run's last node is 'cancelled'."""
    failed = (await sandbox_client.post("/_sandbox/runs", json={"status_code": "failed"})).json()
    assert failed["run"]["failure_stage"] == "node_execution"
    assert "failure_stage_code" not in failed["run"] and "status_code" not in failed["run"]
    canceled = await sandbox_client.post("/_sandbox/runs", json={"status_code": "canceled"})
    assert canceled.json()["run"]["node_runs"][-1]["state_code"] == "cancelled"


@anyio_mark
async def test_run_logs_are_capped_at_100(sandbox_client: httpx.AsyncClient) -> None:
    """GET /v1/runs/{id} embeds at most 100 of the run's entries."""
    created = await generate(sandbox_client, 150, step_ms=1)
    entry = (await get_page(sandbox_client, limit=1, fields="run_id"))["items"][0]
    run = (await sandbox_client.get(f"/v1/runs/{entry['run_id']}")).json()
    assert created["count"] == 150
    assert len(run["logs"]) == 100


@anyio_mark
@pytest.mark.sandbox_options(
    world_rate=30.0,
    world_run_seconds=0.2,
    world_fail_ratio=1.0,
    world_cancel_ratio=0.0,
    world_partial_ratio=0.0,
)
async def test_live_world_starts_runs_that_fail(sandbox_client: httpx.AsyncClient) -> None:
    """The simulator starts runs by itself and plays them to a failure with an error entry."""
    with anyio.fail_after(10):
        while True:
            page = await get_page(
                sandbox_client, q="NOT run.failure_code:null", fields="level_code"
            )
            if page["items"]:
                break
            await anyio.sleep(0.05)
    assert page["items"][0]["level_code"] == "error"


def test_same_fault_seed_draws_the_same_faults() -> None:
    """Two worlds with one fault_seed draw the same sequence of random faults."""
    options = SandboxOptions(fault_429_rate=0.3, fault_5xx_rate=0.3, fault_seed=7)
    worlds = [World(options), World(options)]
    draws = [[world.next_fault() for _ in range(20)] for world in worlds]
    assert draws[0] == draws[1] and any(draws[0]) and not all(draws[0])


def test_store_keeps_order_when_a_batch_lands_in_the_past() -> None:
    """Bulk-appending a batch older than the stored entries keeps (timestamp, id) order."""
    world = World()
    world.generate(50, timestamp_ns=2_000_000_000_000_000_000, step_ms=1)
    world.generate(50, timestamp_ns=1_000_000_000_000_000_000, step_ms=1)
    keys = [entry.key for entry in world.store.entries]
    assert keys == sorted(keys) and len(keys) == 100


def test_generic_sort_agrees_with_the_fast_path() -> None:
    """The filter-then-sort fallback orders entries exactly like the bisect fast path."""
    world = World()
    world.generate(300, step_ms=0.5)
    common = {"run_id": None, "entry_filter": None, "after": None, "backwards": False}
    fast = world.store.query(sort=DEFAULT_SORT, limit=500, now=world.now(), **common)
    slow = world.store._sorted(lambda entry: True, DEFAULT_SORT, None, False, None, 500)
    assert [entry.id for entry in fast.items] == [entry.id for entry in slow.items]


def test_entries_of_one_moment_share_one_run_snapshot() -> None:
    """Entries generated together hold one shared snapshot, not one copy each."""
    world = World()
    first, second = world.generate(2)
    assert first.run_raw is second.run_raw


def test_sandbox_thread_serves_over_http() -> None:
    """SandboxThread is accepting connections on entry and serves entries it generated."""
    with SandboxThread(SandboxOptions()) as sandbox:
        sandbox.generate(3, step_ms=1)
        headers = {"Authorization": f"Bearer {sandbox.api_key}"}
        response = httpx.get(f"{sandbox.url}{LOGS}", headers=headers)
    assert len(response.json()["items"]) == 3


def test_sandbox_thread_stops_listening_on_exit() -> None:
    """After the with-block the thread's port refuses connections."""
    with SandboxThread() as sandbox:
        url = sandbox.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/health")


def test_sandbox_thread_fixture_drives_faults_and_stats(sandbox_thread: SandboxThread) -> None:
    """The thread's helpers queue faults and read stats through the control endpoints."""
    sandbox_thread.queue_faults([{"status": 503}])
    headers = {"Authorization": f"Bearer {sandbox_thread.api_key}"}
    response = httpx.get(f"{sandbox_thread.url}{LOGS}", headers=headers)
    assert response.status_code == 503
    assert sandbox_thread.stats()["by_status"] == {"503": 1}


def test_sandbox_thread_patches_options(sandbox_thread: SandboxThread) -> None:
    """patch_options changes the running sandbox's options and returns them."""
    assert sandbox_thread.patch_options(error_style="nested")["error_style"] == "nested"
    assert httpx.get(f"{sandbox_thread.url}{LOGS}").json()["error"]["code"] == "UNAUTHORIZED"


@anyio_mark
async def test_serve_sandbox_stops_cleanly_on_cancellation() -> None:
    """Cancelling serve_sandbox shuts the server down and frees its port."""
    async with anyio.create_task_group() as tasks:
        handle: SandboxHandle = await tasks.start(
            functools.partial(serve_sandbox, SandboxOptions())
        )
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{handle.url}/v1/health")).status_code == 200
        tasks.cancel_scope.cancel()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{handle.url}/v1/health")


def test_every_option_has_a_flag_with_help() -> None:
    """add_sandbox_arguments adds one documented flag per SandboxOptions field."""
    parser = argparse.ArgumentParser()
    add_sandbox_arguments(parser)
    dests = {action.dest: action for action in parser._actions}
    for name in SandboxOptions.model_fields:
        assert dests[f"sandbox_{name}"].help


def test_flags_become_options() -> None:
    """Parsed flags become validated SandboxOptions; unset flags keep their defaults."""
    parser = argparse.ArgumentParser()
    add_sandbox_arguments(parser)
    args = parser.parse_args(
        [
            "--api-key",
            "k",
            "--rate",
            "0",
            "--cursor-form",
            "url",
            "--reject-range",
            "--cursor-ttl",
            "30",
            "--retry-after",
            "date",
            "--fault-5xx-statuses",
            "502,503",
            "--seed",
            "9",
        ]
    )
    options = options_from_arguments(args)
    assert (options.api_key, options.world_rate, options.cursor_form) == ("k", 0.0, "url")
    assert options.reject_timestamp_range and options.cursor_ttl == 30.0
    assert options.retry_after == "date" and options.fault_5xx_statuses == [502, 503]
    assert options.world_seed == 9 and options.error_style == "flat"


def test_cli_starts_a_live_world_by_default() -> None:
    """Without --rate, the command line's sandbox runs its world (one run per second)."""
    parser = argparse.ArgumentParser()
    add_sandbox_arguments(parser)
    assert options_from_arguments(parser.parse_args([])).world_rate == 1.0
