"""Sandbox fixtures: the Runflow API simulator served on a real loopback port.

Options come from ``@pytest.mark.sandbox_options(**fields)`` and/or an indirect
``request.param`` (a dict of fields or a SandboxOptions). The world simulator is off
unless a test turns it on, so every entry a test sees is one it made.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from runflow_tail.sandbox import SandboxHandle, SandboxOptions, SandboxThread, serve_sandbox
from runflow_tail.times import NS_PER_SECOND, now_ns

QUIET_WORLD: dict[str, Any] = {"world_rate": 0.0}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sandbox_options(**fields): SandboxOptions fields for the sandbox fixtures"
    )


class ManualClock:
    """A clock for ``world.clock`` that moves only when told, so tests never sleep."""

    def __init__(self, start_ns: int | None = None) -> None:
        self.ns = now_ns() if start_ns is None else start_ns

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * NS_PER_SECOND)


def sandbox_options_for(request: pytest.FixtureRequest) -> SandboxOptions:
    param = getattr(request, "param", None)
    if isinstance(param, SandboxOptions):
        return param
    values = dict(QUIET_WORLD)
    marker = request.node.get_closest_marker("sandbox_options")
    if marker is not None:
        values.update(marker.kwargs)
    if isinstance(param, dict):
        values.update(param)
    return SandboxOptions(**values)


@pytest.fixture
async def sandbox(request: pytest.FixtureRequest) -> AsyncIterator[SandboxHandle]:
    """A sandbox served in this test's event loop; yields its handle (url, api_key, world)."""
    # anyio's pytest plugin runs a fixture's setup and teardown in one task, which is what
    # makes holding a task group open across the yield safe here.
    async with anyio.create_task_group() as tasks:
        handle = await tasks.start(functools.partial(serve_sandbox, sandbox_options_for(request)))
        try:
            yield handle
        finally:
            tasks.cancel_scope.cancel()


@pytest.fixture
async def sandbox_client(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the sandbox with the API key already in its headers."""
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    async with httpx.AsyncClient(base_url=sandbox.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def sandbox_thread(request: pytest.FixtureRequest) -> Iterator[SandboxThread]:
    """A sandbox running in a background thread (for sync tests and daemon subprocesses)."""
    with SandboxThread(sandbox_options_for(request)) as thread:
        yield thread


# -- helpers for tests that talk to the sandbox over HTTP ---------------------------------

LOGS = "/v1/runs/any/logs"


async def generate(client: httpx.AsyncClient, count: int, **spec: Any) -> dict[str, Any]:
    """``POST /_sandbox/entries`` with a generate spec; returns the control response."""
    response = await client.post("/_sandbox/entries", json={"generate": {"count": count, **spec}})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def append(
    client: httpx.AsyncClient, entries: list[dict[str, Any]], **extra: Any
) -> list[str]:
    """``POST /_sandbox/entries`` with partial entries; returns their ids."""
    response = await client.post("/_sandbox/entries", json={"entries": entries, **extra})
    response.raise_for_status()
    ids: list[str] = response.json()["ids"]
    return ids


async def get_page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(LOGS, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def walk(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every item reachable from the first page by following ``next`` (token form)."""
    items: list[dict[str, Any]] = []
    page = await get_page(client, **params)
    items.extend(page["items"])
    while page["next"] is not None:
        page = await get_page(client, **{**params, "pq": page["next"]})
        items.extend(page["items"])
    return items
