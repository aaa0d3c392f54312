"""Shared test configuration: anyio on asyncio, the sandbox fixtures, common fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import harness

pytest_plugins = ["tests.support.sandbox"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the test runs."""
    with harness.refused_port() as port:
        yield port
