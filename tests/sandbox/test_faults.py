"""Faults and API variants the sandbox plays: errors, bodies, connections, time and styles."""

from __future__ import annotations

import email.utils
import time

import anyio
import httpx
import msgspec
import pytest
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.times import parse_instant

from tests.support.sandbox import LOGS, ManualClock, append, generate, get_page

pytestmark = pytest.mark.anyio


async def _queue(client: httpx.AsyncClient, *faults: dict[str, object]) -> None:
    response = await client.post("/_sandbox/faults", json={"queue": list(faults)})
    response.raise_for_status()


async def test_scripted_429_carries_the_given_retry_after(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A scripted 429 with retry_after "2" answers RATE_LIMITED with Retry-After: 2."""
    await _queue(sandbox_client, {"status": 429, "retry_after": "2"})
    response = await sandbox_client.get(LOGS)
    assert response.status_code == 429 and response.json()["code"] == "RATE_LIMITED"
    assert response.headers["Retry-After"] == "2"


async def test_scripted_429_without_retry_after_has_no_header(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A scripted 429 without retry_after sends no Retry-After header (as newer docs say)."""
    await _queue(sandbox_client, {"status": 429})
    response = await sandbox_client.get(LOGS)
    assert response.status_code == 429 and "Retry-After" not in response.headers


@pytest.mark.sandbox_options(fault_429_rate=1.0, retry_after="date")
async def test_random_429_can_carry_an_http_date(sandbox_client: httpx.AsyncClient) -> None:
    """With retry_after="date", a 429's Retry-After is an HTTP-date in the near future."""
    response = await sandbox_client.get(LOGS)
    when = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
    assert response.status_code == 429
    assert 0 < when.timestamp() - time.time() <= 3


async def test_scripted_5xx_uses_the_error_envelope(sandbox_client: httpx.AsyncClient) -> None:
    """A scripted 503 answers 503 with SERVICE_UNAVAILABLE in the flat envelope."""
    await _queue(sandbox_client, {"status": 503})
    response = await sandbox_client.get(LOGS)
    assert response.status_code == 503 and response.json()["code"] == "SERVICE_UNAVAILABLE"


@pytest.mark.sandbox_options(fault_5xx_rate=1.0, fault_5xx_statuses=[502])
async def test_random_5xx_draws_from_the_configured_statuses(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """With fault_5xx_rate=1 every /logs request fails with a configured 5xx status."""
    statuses = {(await sandbox_client.get(LOGS)).status_code for _ in range(3)}
    assert statuses == {502}


async def test_malformed_fault_is_a_200_with_unparseable_json(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A malformed fault answers 200 with a body that is not valid JSON."""
    await generate(sandbox_client, 5)
    await _queue(sandbox_client, {"kind": "malformed"})
    response = await sandbox_client.get(LOGS)
    assert response.status_code == 200
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(response.content)


async def test_drop_fault_closes_the_connection_without_a_response(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A drop fault closes the connection unanswered; the next request is served normally."""
    await _queue(sandbox_client, {"kind": "drop"})
    with pytest.raises(httpx.RemoteProtocolError):
        await sandbox_client.get(LOGS)
    assert (await sandbox_client.get(LOGS)).status_code == 200


@pytest.mark.sandbox_options(enforce_retry_after=False)  # the queue, not the waiting, is tested
async def test_scripted_faults_apply_in_order_then_stop(sandbox_client: httpx.AsyncClient) -> None:
    """Queued faults hit the next /logs requests one each, in order, then requests succeed."""
    await _queue(
        sandbox_client,
        {"status": 429, "retry_after": "2"},
        {"status": 503},
        {"kind": "malformed"},
        {"kind": "drop"},
        {"status": 400, "code": "CURSOR_EXPIRED"},
    )
    seen: list[object] = []
    for _ in range(6):
        try:
            response = await sandbox_client.get(LOGS)
        except httpx.RemoteProtocolError:
            seen.append("drop")
            continue
        body = response.json() if response.status_code != 200 else None
        seen.append((response.status_code, body and body["code"]))
    assert seen[:2] == [(429, "RATE_LIMITED"), (503, "SERVICE_UNAVAILABLE")]
    assert seen[3:] == ["drop", (400, "CURSOR_EXPIRED"), (200, None)]


@pytest.mark.sandbox_options(rate_limit_per_second=1.0, rate_limit_headers=True)
async def test_rate_limit_answers_429_beyond_the_rate(sandbox_client: httpx.AsyncClient) -> None:
    """Requests beyond rate_limit_per_second answer 429 RATE_LIMITED with rate headers."""
    statuses = [(await sandbox_client.get(LOGS)).status_code for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses
    response = await sandbox_client.get(LOGS)
    assert "X-RateLimit-Remaining" in response.headers


@pytest.mark.sandbox_options(latency=0.2)
async def test_latency_delays_every_api_request(sandbox_client: httpx.AsyncClient) -> None:
    """With latency set, an API request takes at least that long."""
    started = time.monotonic()
    await sandbox_client.get("/v1/health")
    assert time.monotonic() - started >= 0.2


@pytest.mark.sandbox_options(late_delay=5.0)
async def test_late_entries_become_visible_after_the_delay(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient
) -> None:
    """With late_delay, a new entry is hidden until its timestamp plus the delay has passed."""
    clock = ManualClock()
    sandbox.world.clock = clock
    (entry_id,) = await append(sandbox_client, [{"message": "late"}])
    assert (await get_page(sandbox_client))["items"] == []
    clock.advance(5.1)
    assert [item["id"] for item in (await get_page(sandbox_client))["items"]] == [entry_id]


async def test_visible_after_hides_generated_entries_until_then(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient
) -> None:
    """Entries generated with visible_after appear only once that many seconds have passed."""
    clock = ManualClock()
    sandbox.world.clock = clock
    await generate(sandbox_client, 3, visible_after=2.0, timestamp="2026-03-01T12:00:00Z")
    assert (await get_page(sandbox_client))["items"] == []
    clock.advance(2)
    assert len((await get_page(sandbox_client))["items"]) == 3


@pytest.mark.sandbox_options(late_delay=0.05)
async def test_late_delay_passes_in_real_time_too(sandbox_client: httpx.AsyncClient) -> None:
    """With the real clock, a late entry shows up once its delay has passed (polled, bounded)."""
    (entry_id,) = await append(sandbox_client, [{"message": "late"}])
    with anyio.fail_after(5):
        while not (await get_page(sandbox_client))["items"]:
            await anyio.sleep(0.01)
    assert (await get_page(sandbox_client))["items"][0]["id"] == entry_id


@pytest.mark.sandbox_options(error_style="nested")
async def test_nested_error_style(sandbox: SandboxHandle) -> None:
    """With error_style=nested, errors read {"error": {"code", "message"}}."""
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        body = (await client.get(LOGS)).json()
    assert body["error"]["code"] == "UNAUTHORIZED" and "message" in body["error"]


@pytest.mark.sandbox_options(error_style="text")
async def test_text_error_style(sandbox: SandboxHandle) -> None:
    """With error_style=text, errors are plain text that is not JSON, like a proxy's."""
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.get(LOGS)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("401 Unauthorized")


@pytest.mark.sandbox_options(timestamp_style="z")
async def test_z_timestamp_style(sandbox_client: httpx.AsyncClient) -> None:
    """With timestamp_style=z, every timestamp ends in Z with microseconds."""
    await generate(sandbox_client, 20, step_ms=3)
    stamps = [
        item["timestamp"] for item in (await get_page(sandbox_client, fields="timestamp"))["items"]
    ]
    assert all(
        stamp.endswith("Z") and len(stamp) == len("2026-03-01T12:00:00.000000Z") for stamp in stamps
    )


@pytest.mark.sandbox_options(timestamp_style="offset")
async def test_offset_timestamp_style(sandbox_client: httpx.AsyncClient) -> None:
    """With timestamp_style=offset, every timestamp ends in +00:00."""
    await generate(sandbox_client, 20, step_ms=3)
    page = await get_page(sandbox_client, fields="timestamp")
    assert all(item["timestamp"].endswith("+00:00") for item in page["items"])


@pytest.mark.sandbox_options(timestamp_style="mixed")
async def test_mixed_timestamp_style(sandbox_client: httpx.AsyncClient) -> None:
    """With timestamp_style=mixed, zones and fractional precisions vary between entries."""
    await generate(sandbox_client, 200, step_ms=1)
    page = await get_page(sandbox_client, fields="timestamp", limit=200)
    stamps = [item["timestamp"] for item in page["items"]]
    zones = {"Z" if stamp.endswith("Z") else "offset" for stamp in stamps}
    digits = {len(stamp.rstrip("Z").removesuffix("+00:00").partition(".")[2]) for stamp in stamps}
    assert zones == {"Z", "offset"} and digits == {0, 3, 6, 9}
    instants = [parse_instant(stamp) for stamp in stamps]
    assert instants == sorted(instants)


@pytest.mark.sandbox_options(fault_429_every=3, retry_after=30, retry_after_crossing=0)
async def test_every_nth_request_is_rate_limited_and_early_returns_are_refused_and_counted(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """With fault_429_every, every Nth request gets 429 with Retry-After, and a request sent
    before that deadline is refused again and counted in the stats."""
    statuses = [(await sandbox_client.get(LOGS)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    early = await sandbox_client.get(LOGS)
    assert early.status_code == 429 and 29 <= int(early.headers["Retry-After"]) <= 30
    stats = (await sandbox_client.get("/_sandbox/stats")).json()
    assert stats["requests_before_retry_after"] == 1
    assert stats["logs_requests"] == 3  # the refused request never reached the endpoint


@pytest.mark.sandbox_options(fault_429_every=1, retry_after=30, enforce_retry_after=False)
async def test_retry_after_need_not_be_enforced(sandbox_client: httpx.AsyncClient) -> None:
    """With enforce_retry_after off, a request inside the window is answered normally."""
    for _ in range(2):
        assert (await sandbox_client.get(LOGS)).status_code == 429
    stats = (await sandbox_client.get("/_sandbox/stats")).json()
    assert stats["requests_before_retry_after"] == 0 and stats["logs_requests"] == 2


@pytest.mark.parametrize("stuck", ["same", "fresh"])
async def test_a_stuck_cursor_serves_the_same_entries_forever(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, stuck: str
) -> None:
    """With fault_stuck_cursor, following ``next`` returns the same page again: with the
    same cursor ('same') or a new cursor for the same place ('fresh')."""
    await generate(sandbox_client, 30, step_ms=1)
    sandbox.world.update_options({"fault_stuck_cursor": stuck})
    first = await get_page(sandbox_client, limit=10)
    second = await get_page(sandbox_client, limit=10, pq=first["next"])
    third = await get_page(sandbox_client, limit=10, pq=second["next"])
    assert [i["id"] for i in third["items"]] == [i["id"] for i in second["items"]]
    assert [i["id"] for i in second["items"]] != [i["id"] for i in first["items"]]
    assert (third["next"] == second["next"]) == (stuck == "same")


async def test_clusters_lay_out_bursts_with_long_quiet_gaps(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """``clusters`` writes one burst per age, each ``entries`` long, hours apart."""
    response = await sandbox_client.post(
        "/_sandbox/entries", json={"clusters": {"ages": [7200, 3600], "entries": 5}}
    )
    assert response.status_code == 200 and response.json()["count"] == 10
    stamps = [parse_instant(i["timestamp"]) for i in (await get_page(sandbox_client))["items"]]
    assert len(stamps) == 10 and stamps == sorted(stamps)
    gap = stamps[5] - stamps[4]
    assert 3590e9 < gap < 3610e9
