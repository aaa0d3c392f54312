"""The sandbox's /v1 API: projection, sorting, validation, filters, auth and entries."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from runflow_tail.run_object import CURRENT_FIELDS, MODEL_FIELDS, NODE_RUN_FIELDS, OLDER_FIELDS
from runflow_tail.sandbox import DEFAULT_ORGANIZATION_ID, SandboxHandle
from runflow_tail.times import parse_instant

from tests.support.sandbox import LOGS, append, generate, get_page

pytestmark = pytest.mark.anyio
T0 = "2026-03-01T12:00:00.000000Z"


async def test_fields_projects_top_level_keys_and_drops_unknown_ones(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Projection returns only the named top-level fields, ignoring names that do not exist."""
    await generate(sandbox_client, 3, step_ms=1)
    page = await get_page(sandbox_client, fields="id,level_code,no_such_field")
    assert [set(item) for item in page["items"]] == [{"id", "level_code"}] * 3


async def test_entries_without_projection_embed_a_multi_kb_run(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A full entry carries every documented field and a run snapshot of several KB."""
    await generate(sandbox_client, 1)
    response = await sandbox_client.get(LOGS)
    (item,) = response.json()["items"]
    assert set(item) >= {"id", "run_id", "level_code", "message", "timestamp", "meta", "run"}
    assert {"completed_at", "node_runs", "model", "failure_code"} <= set(item["run"])
    assert 3000 <= len(response.content) <= 8000


@pytest.mark.parametrize("schema", ["current", "older"])
async def test_the_run_object_has_exactly_the_fields_of_the_references_version(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, schema: str
) -> None:
    """A finished run has the top-level, node run and model fields the reference lists for
    the schema version played, and no others; costs are decimal strings."""
    sandbox.world.update_options({"run_schema": schema})
    created = (await sandbox_client.post("/_sandbox/runs", json={"status_code": "failed"})).json()
    run = (await sandbox_client.get(f"/v1/runs/{created['run']['id']}")).json()
    if schema == "current":
        assert set(run) == CURRENT_FIELDS | {"failure_stage_code"}
        assert set(run["model"]) >= MODEL_FIELDS and run["model"]["org_id"] == run["org_id"]
        assert run["failure_code"] == "NODE_TIMEOUT" and run["failure_stage_code"]
    else:
        # GET /v1/runs/{id} adds the run's own logs to either version.
        assert set(run) == OLDER_FIELDS | {"logs"} and run["status_code"] == "failed"
    assert all(set(node) == NODE_RUN_FIELDS for node in run["node_runs"])
    ran = [node for node in run["node_runs"] if node["completed_at"]]
    assert Decimal(run["cost"]) > 0 and ran and all(Decimal(n["cost"]) >= 0 for n in ran)
    assert all(node["cost"] is None for node in run["node_runs"] if node not in ran)
    assert isinstance(run["duration_ms"], int)
    started, completed = parse_instant(run["started_at"]), parse_instant(run["completed_at"])
    assert (completed - started) // 1_000_000 == run["duration_ms"]


async def test_multi_key_sort_breaks_ties_with_the_second_key(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """sort_by=level_code:asc,timestamp:desc orders by level, then newest first within one."""
    await append(
        sandbox_client,
        [
            {"level_code": "info", "timestamp": "2026-03-01T12:00:01Z", "message": "i1"},
            {"level_code": "error", "timestamp": "2026-03-01T12:00:02Z", "message": "e2"},
            {"level_code": "info", "timestamp": "2026-03-01T12:00:03Z", "message": "i3"},
            {"level_code": "error", "timestamp": "2026-03-01T12:00:00Z", "message": "e0"},
        ],
    )
    page = await get_page(sandbox_client, sort_by="level_code:asc,timestamp:desc")
    assert [item["message"] for item in page["items"]] == ["e2", "e0", "i3", "i1"]


async def test_descending_timestamp_sort_reverses_the_default(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """timestamp:desc,id:desc returns exactly the reverse of the default order."""
    await generate(sandbox_client, 20, step_ms=0)
    ascending = await get_page(sandbox_client, fields="id")
    descending = await get_page(sandbox_client, fields="id", sort_by="timestamp:desc,id:desc")
    assert descending["items"] == ascending["items"][::-1]


async def test_timestamps_sort_as_instants_not_strings(sandbox_client: httpx.AsyncClient) -> None:
    """A +00:00 timestamp and a Z timestamp are ordered by the instant they name."""
    await append(
        sandbox_client,
        [
            {"timestamp": "2026-03-01T12:00:00.5+00:00", "message": "later"},
            {"timestamp": "2026-03-01T12:00:00.25Z", "message": "earlier"},
        ],
    )
    page = await get_page(sandbox_client, fields="message")
    assert [item["message"] for item in page["items"]] == ["earlier", "later"]


@pytest.mark.parametrize("limit", ["0", "501", "ten"])
async def test_limit_out_of_range_is_a_validation_error(
    sandbox_client: httpx.AsyncClient, limit: str
) -> None:
    """limit outside 1..500 answers 422 VALIDATION_ERROR naming query.limit in errors[]."""
    response = await sandbox_client.get(LOGS, params={"limit": limit})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["errors"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize("sort_by", ["", "timestamp:up", "timestamp"])
async def test_bad_sort_by_is_a_validation_error(
    sandbox_client: httpx.AsyncClient, sort_by: str
) -> None:
    """An empty sort_by or one without asc/desc answers 422."""
    response = await sandbox_client.get(LOGS, params={"sort_by": sort_by})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "sort_by"]


@pytest.mark.parametrize("q", ["level_code:error", "level_code.EQ:'error'", "level_code=error"])
async def test_filter_on_level_selects_matching_entries(
    sandbox_client: httpx.AsyncClient, q: str
) -> None:
    """Each documented equality form selects exactly the entries at that level."""
    await generate(sandbox_client, 5, level_code="info")
    errors = await generate(sandbox_client, 3, level_code="error")
    page = await get_page(sandbox_client, q=q, fields="id,level_code")
    assert sorted(item["id"] for item in page["items"]) == sorted(errors["ids"])


@pytest.mark.sandbox_options(run_schema="older")
async def test_dotted_filter_reaches_into_the_embedded_run(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """q=run.status_code:failed matches the entry written with the failed run snapshot."""
    await sandbox_client.post("/_sandbox/runs", json={"status_code": "succeeded", "lines": 2})
    failed = (await sandbox_client.post("/_sandbox/runs", json={"status_code": "failed"})).json()
    page = await get_page(sandbox_client, q="run.status_code:failed", fields="run_id,level_code")
    assert page["items"] == [{"run_id": failed["run"]["id"], "level_code": "error"}]


async def test_a_filter_on_a_field_the_current_run_lacks_matches_nothing_silently(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """Current schema: q=run.status_code:failed is accepted and matches nothing, as the
    API does, while the failure is there to filter on in run.failure_code."""
    failed = (await sandbox_client.post("/_sandbox/runs", json={"status_code": "failed"})).json()
    page = await get_page(sandbox_client, q="run.status_code:failed", fields="run_id")
    assert page["items"] == []
    page = await get_page(sandbox_client, q="run.failure_code:NODE_TIMEOUT", fields="run_id")
    assert page["items"] == [{"run_id": failed["run"]["id"]}]


async def test_timestamp_range_filter_compares_instants(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """q=timestamp>=X keeps entries at or after X whatever their timestamp spelling."""
    await generate(sandbox_client, 40, timestamp=T0, step_ms=100)
    bound = "2026-03-01T12:00:02.000+00:00"
    page = await get_page(sandbox_client, q=f"timestamp>={bound}", limit=500, fields="timestamp")
    stamps = [parse_instant(item["timestamp"]) for item in page["items"]]
    assert stamps and min(stamps) >= parse_instant(bound)
    assert len(stamps) == 20


async def test_unparseable_filter_is_invalid_filter_with_a_one_line_message(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """A syntax error in q answers 400 INVALID_FILTER with the parser's one-line message."""
    response = await sandbox_client.get(LOGS, params={"q": "level_code:error AND"})
    body = response.json()
    assert response.status_code == 400 and body["code"] == "INVALID_FILTER"
    assert "column" in body["message"] and "\n" not in body["message"]


async def test_missing_key_is_unauthorized(sandbox: SandboxHandle) -> None:
    """A request without a bearer token answers 401 UNAUTHORIZED."""
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.get(LOGS)
    assert response.status_code == 401 and response.json()["code"] == "UNAUTHORIZED"


async def test_wrong_key_is_unauthorized(sandbox: SandboxHandle) -> None:
    """A request with a key other than the sandbox's answers 401 UNAUTHORIZED."""
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.get(LOGS, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.json()["code"] == "UNAUTHORIZED"


async def test_other_organization_is_permission_denied(sandbox_client: httpx.AsyncClient) -> None:
    """An X-Organization-Id other than the key's answers 403 PERMISSION_DENIED."""
    response = await sandbox_client.get(LOGS, headers={"X-Organization-Id": "someone-else"})
    assert response.status_code == 403 and response.json()["code"] == "PERMISSION_DENIED"


async def test_own_organization_header_is_accepted(sandbox_client: httpx.AsyncClient) -> None:
    """The key's own organization id in X-Organization-Id is accepted."""
    response = await sandbox_client.get(
        LOGS, headers={"X-Organization-Id": DEFAULT_ORGANIZATION_ID}
    )
    assert response.status_code == 200


async def test_unknown_run_is_run_not_found(sandbox_client: httpx.AsyncClient) -> None:
    """Listing the logs of a run that does not exist answers 404 RUN_NOT_FOUND."""
    response = await sandbox_client.get("/v1/runs/0190b3a4-0000-7000-8000-000000000000/logs")
    assert response.status_code == 404 and response.json()["code"] == "RUN_NOT_FOUND"


async def test_error_envelope_is_flat_by_default(sandbox_client: httpx.AsyncClient) -> None:
    """Errors carry exactly code, message and errors (null when there are no details)."""
    response = await sandbox_client.get(LOGS, params={"q": "("})
    assert set(response.json()) == {"code", "message", "errors"}
    assert response.json()["errors"] is None


async def test_logs_of_one_run_only_hold_that_run(sandbox_client: httpx.AsyncClient) -> None:
    """/v1/runs/{run_id}/logs returns the entries of that run and no other."""
    await generate(sandbox_client, 3)
    wanted = await generate(sandbox_client, 2)
    run_id = (await sandbox_client.get(f"{LOGS}/{wanted['ids'][0]}")).json()["run_id"]
    response = await sandbox_client.get(f"/v1/runs/{run_id}/logs", params={"fields": "id"})
    assert sorted(item["id"] for item in response.json()["items"]) == sorted(wanted["ids"])


async def test_rereading_an_entry_is_byte_identical(sandbox_client: httpx.AsyncClient) -> None:
    """An entry read twice, alone or in a page, has exactly the same bytes each time."""
    (entry_id,) = (await generate(sandbox_client, 1))["ids"]
    first = await sandbox_client.get(f"{LOGS}/{entry_id}")
    second = await sandbox_client.get(f"{LOGS}/{entry_id}")
    page = await sandbox_client.get(LOGS)
    assert first.content == second.content
    assert first.content in page.content


async def test_unknown_entry_is_log_not_found(sandbox_client: httpx.AsyncClient) -> None:
    """Reading an entry id that does not exist answers 404 LOG_NOT_FOUND."""
    response = await sandbox_client.get(f"{LOGS}/00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404 and response.json()["code"] == "LOG_NOT_FOUND"


async def test_run_endpoint_returns_the_run_with_its_logs(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """GET /v1/runs/{id} returns the run's current state and its visible entries, each
    with "run": null."""
    created = (await sandbox_client.post("/_sandbox/runs", json={"status_code": "failed"})).json()
    run = (await sandbox_client.get(f"/v1/runs/{created['run']['id']}")).json()
    assert run["failure_code"] == "NODE_TIMEOUT" and run["completed_at"]
    assert [entry["id"] for entry in run["logs"]] == created["ids"]
    assert all(entry["run"] is None and entry["message"] for entry in run["logs"])


async def test_auth_me_describes_the_key(sandbox_client: httpx.AsyncClient) -> None:
    """/v1/auth/me returns the key's user id, email and organization."""
    body = (await sandbox_client.get("/v1/auth/me")).json()
    assert body["organization_id"] == DEFAULT_ORGANIZATION_ID and set(body) == {
        "id",
        "email",
        "organization_id",
    }


async def test_health_needs_no_key(sandbox: SandboxHandle) -> None:
    """/v1/health answers {"status": "ok"} without authentication."""
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.get("/v1/health")
    assert response.json() == {"status": "ok"}
