"""Shared test configuration: anyio on asyncio, and the sandbox fixtures."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.sandbox"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
