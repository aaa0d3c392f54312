"""Keyset pagination in the sandbox: stability under inserts, bursts, and every cursor variant."""

from __future__ import annotations

from urllib.parse import parse_qsl

import httpx
import pytest
from runflow_tail.sandbox import SandboxHandle

from tests.support.sandbox import LOGS, ManualClock, append, generate, get_page, walk

pytestmark = pytest.mark.anyio


def _stamp(second: int, micros: int = 0) -> str:
    return f"2026-03-01T12:00:{second:02d}.{micros:06d}Z"


async def test_walking_all_pages_yields_every_entry_once(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Following next from the first page returns each entry exactly once."""
    created = await generate(sandbox_client, 95, step_ms=1)
    items = await walk(sandbox_client, limit=10, fields="id")
    assert sorted(item["id"] for item in items) == sorted(created["ids"])


async def test_next_is_null_on_the_last_page(sandbox_client: httpx.AsyncClient) -> None:
    """A page after which nothing visible follows has next: null."""
    await generate(sandbox_client, 4, step_ms=1)
    page = await get_page(sandbox_client, limit=4)
    assert page["next"] is None


async def test_cursor_pages_are_stable_under_concurrent_inserts(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Entries inserted behind the cursor are not returned, those ahead are, none twice."""
    original = await append(sandbox_client, [{"timestamp": _stamp(10, i)} for i in range(30)])
    walked: list[str] = []
    behind: list[str] = []
    ahead: list[str] = []
    page = await get_page(sandbox_client, limit=7, fields="id,timestamp")
    walked.extend(item["id"] for item in page["items"])
    round_ = 0
    while page["next"] is not None:
        round_ += 1
        cursor_item = page["items"][-1]
        behind += await append(sandbox_client, [{"timestamp": _stamp(1, round_)}])
        # Tied with the cursor's instant: its id decides the side (ids are random uuid4s).
        (tied,) = await append(sandbox_client, [{"timestamp": cursor_item["timestamp"]}])
        (behind if tied < cursor_item["id"] else ahead).append(tied)
        ahead += await append(sandbox_client, [{"timestamp": _stamp(20, round_)}])
        page = await get_page(sandbox_client, limit=7, fields="id,timestamp", pq=page["next"])
        walked.extend(item["id"] for item in page["items"])
    assert len(walked) == len(set(walked))
    assert set(walked) == set(original) | set(ahead)
    assert not set(walked) & set(behind)


async def test_entries_tied_at_the_cursor_instant_are_split_by_id(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """With one shared timestamp, the id decides which side of the cursor an entry is on."""
    ids = await append(
        sandbox_client,
        [{"id": f"00000000-0000-4000-8000-00000000000{n}", "timestamp": _stamp(5)} for n in (1, 3)],
    )
    page = await get_page(sandbox_client, limit=1, fields="id")
    assert [item["id"] for item in page["items"]] == ids[:1]
    await append(
        sandbox_client,
        [{"id": f"00000000-0000-4000-8000-00000000000{n}", "timestamp": _stamp(5)} for n in (0, 2)],
    )
    rest = await get_page(sandbox_client, limit=10, fields="id", pq=page["next"])
    assert [item["id"] for item in rest["items"]] == [
        "00000000-0000-4000-8000-000000000002",
        "00000000-0000-4000-8000-000000000003",
    ]


async def test_burst_beyond_the_page_size_paginates_completely(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """1,200 entries sharing one identical timestamp come back fully in pages of 500."""
    created = await generate(sandbox_client, 1200, step_ms=0)
    items = await walk(sandbox_client, limit=500, fields="id,timestamp")
    assert len({item["timestamp"] for item in items}) == 1
    assert sorted(item["id"] for item in items) == sorted(await _all_ids(sandbox_client))
    assert created["count"] == len(items) == 1200


async def _all_ids(client: httpx.AsyncClient) -> list[str]:
    stats = (await client.get("/_sandbox/stats")).json()
    items = await walk(client, limit=500, fields="id")
    assert len(items) == stats["entries_visible"]
    return [item["id"] for item in items]


async def test_burst_paginates_completely_under_a_timestamp_range_filter(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A range query at the burst's own instant still pages through all 600 tied entries."""
    await generate(sandbox_client, 600, step_ms=0, timestamp=_stamp(30))
    items = await walk(sandbox_client, limit=500, fields="id", q=f"timestamp>={_stamp(30)}")
    assert len({item["id"] for item in items}) == 600


async def test_previous_walks_back_to_the_page_before(sandbox_client: httpx.AsyncClient) -> None:
    """Fetching previous with from_prev=true returns the preceding page in sort order."""
    await generate(sandbox_client, 30, step_ms=1)
    first = await get_page(sandbox_client, limit=10, fields="id")
    second = await get_page(sandbox_client, limit=10, fields="id", pq=first["next"])
    back = await get_page(
        sandbox_client, limit=10, fields="id", pq=second["previous"], from_prev="true"
    )
    assert back["items"] == first["items"]
    assert back["previous"] is None


async def test_first_page_has_no_previous(sandbox_client: httpx.AsyncClient) -> None:
    """The cursor-less first page has previous: null and a first cursor."""
    await generate(sandbox_client, 3, step_ms=1)
    page = await get_page(sandbox_client, limit=2)
    assert page["previous"] is None and page["first"] is not None


async def test_first_cursor_fetches_the_first_page(sandbox_client: httpx.AsyncClient) -> None:
    """The 'first' cursor, followed from a later page, returns the first page again."""
    await generate(sandbox_client, 6, step_ms=1)
    first = await get_page(sandbox_client, limit=2, fields="id")
    later = await get_page(sandbox_client, limit=2, fields="id", pq=first["next"])
    again = await get_page(sandbox_client, limit=2, fields="id", pq=later["first"])
    assert again["items"] == first["items"]


@pytest.mark.sandbox_options(cursor_field="next_pq")
async def test_next_pq_cursor_field_names(sandbox_client: httpx.AsyncClient) -> None:
    """With cursor_field=next_pq the page carries next_pq/prev_pq instead of next/previous."""
    await generate(sandbox_client, 3, step_ms=1)
    page = (await sandbox_client.get(LOGS, params={"limit": 1})).json()
    assert {"next_pq", "prev_pq"} <= set(page) and not {"next", "previous"} & set(page)
    following = (await sandbox_client.get(LOGS, params={"limit": 1, "pq": page["next_pq"]})).json()
    assert following["items"] != page["items"]


@pytest.mark.sandbox_options(cursor_form="query")
async def test_query_form_cursor_carries_pq_and_the_query(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A query-form cursor is a query string that, sent as-is, fetches the next page."""
    await generate(sandbox_client, 5, step_ms=1, level_code="warning")
    page = await get_page(sandbox_client, limit=2, q="level_code:warning", fields="id")
    params = dict(parse_qsl(page["next"]))
    assert params["limit"] == "2" and params["q"] == "level_code:warning" and params["pq"]
    following = await get_page(sandbox_client, **params)
    assert len(following["items"]) == 2 and following["items"] != page["items"]


@pytest.mark.sandbox_options(cursor_form="url")
async def test_url_form_cursor_is_fetchable_as_is(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient
) -> None:
    """A url-form cursor is a whole URL that fetches the next page with just the auth header."""
    await generate(sandbox_client, 5, step_ms=1)
    page = await get_page(sandbox_client, limit=2, fields="id", q="level_code:info")
    assert page["next"].startswith(f"{sandbox.url}/v1/runs/any/logs?")
    async with httpx.AsyncClient(headers=sandbox_client.headers) as bare:
        following = (await bare.get(page["next"])).json()
    assert len(following["items"]) == 2 and following["items"] != page["items"]


async def test_garbled_cursor_is_invalid_cursor(sandbox_client: httpx.AsyncClient) -> None:
    """A cursor that was not issued by the API answers 400 INVALID_CURSOR."""
    response = await sandbox_client.get(LOGS, params={"pq": "not-a-cursor"})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_CURSOR"


async def test_cursor_of_another_query_is_invalid_cursor(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A cursor used with a different q answers 400 INVALID_CURSOR."""
    await generate(sandbox_client, 3, step_ms=1)
    page = await get_page(sandbox_client, limit=1)
    response = await sandbox_client.get(LOGS, params={"pq": page["next"], "q": "level_code:info"})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_CURSOR"


@pytest.mark.sandbox_options(cursor_ttl=10)
async def test_old_cursor_is_cursor_expired(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient
) -> None:
    """With cursor_ttl set, a cursor older than the TTL answers 400 CURSOR_EXPIRED."""
    clock = ManualClock()
    sandbox.world.clock = clock
    await generate(sandbox_client, 3, step_ms=0)
    page = await get_page(sandbox_client, limit=1)
    clock.advance(11)
    response = await sandbox_client.get(LOGS, params={"limit": 1, "pq": page["next"]})
    assert response.status_code == 400 and response.json()["code"] == "CURSOR_EXPIRED"


@pytest.mark.sandbox_options(cursor_ttl=10)
async def test_young_cursor_is_still_valid(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient
) -> None:
    """With cursor_ttl set, a cursor within the TTL still works."""
    clock = ManualClock()
    sandbox.world.clock = clock
    await generate(sandbox_client, 3, step_ms=0)
    page = await get_page(sandbox_client, limit=1)
    clock.advance(9)
    response = await sandbox_client.get(LOGS, params={"limit": 1, "pq": page["next"]})
    assert response.status_code == 200


@pytest.mark.sandbox_options(reject_timestamp_range=True)
async def test_rejected_timestamp_range_is_unsupported_filter(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """With reject_timestamp_range, q=timestamp>=X answers 400 UNSUPPORTED_FILTER."""
    response = await sandbox_client.get(LOGS, params={"q": f"timestamp>={_stamp(0)}"})
    assert response.status_code == 400 and response.json()["code"] == "UNSUPPORTED_FILTER"


@pytest.mark.sandbox_options(reject_timestamp_range=True)
async def test_rejected_timestamp_range_still_allows_other_filters(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """With reject_timestamp_range, filters without a timestamp range still work."""
    response = await sandbox_client.get(LOGS, params={"q": "level_code:info"})
    assert response.status_code == 200


async def test_bulk_generate_of_200k_entries_is_complete(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """200,000 generated entries are all visible and all come back through pagination."""
    created = await generate(sandbox_client, 200_000, step_ms=0.01, full_run=False)
    assert created["count"] == 200_000
    items = await walk(sandbox_client, limit=500, fields="id", q=f"timestamp>={_stamp(0)}")
    assert len({item["id"] for item in items}) == 200_000
