"""Shared test configuration: anyio on asyncio, and the sandbox fixtures."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.sandbox", "tests.support.postgres"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
