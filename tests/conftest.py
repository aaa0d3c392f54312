"""Shared test configuration: anyio on asyncio, the sandbox and PostgreSQL fixtures, common
fixtures, and logging given back as it was after every test."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from tests.support import harness

pytest_plugins = ["tests.support.sandbox", "tests.support.postgres"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A command run in-process (``main([...])``) configures logging for the whole process,
    onto the ``sys.stderr`` of that moment: pytest's capture of this one test, closed when
    the test ends. Left so, every later log line raises ``ValueError: I/O operation on closed
    file`` (a later daemon failed as its health server started). Put structlog, the library
    loggers and the exception hook back as they were."""
    config = structlog.get_config()
    levels = {name: logging.getLogger(name).level for name in _LIBRARY_LOGGERS}
    excepthook = sys.excepthook
    yield
    structlog.configure(**config)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    sys.excepthook = excepthook


_LIBRARY_LOGGERS = ("httpx", "httpcore", "uvicorn.access", "psycopg")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the test runs."""
    with harness.refused_port() as port:
        yield port
