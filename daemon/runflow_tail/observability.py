"""Structured logging: configured once per process, JSON when not on a TTY.

This is the only process-global state in runflow-tail (structlog's configuration);
metrics and health live with the daemon that owns them.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


def configure_logging(
    level: LogLevel = "info", log_format: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Send structured events to ``stream`` (stderr): JSON lines, or colored console on a TTY."""
    output = stream if stream is not None else sys.stderr
    use_console = log_format == "console" or (log_format == "auto" and _isatty(output))
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(output))
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
    # Libraries we use log through stdlib logging; keep them quiet unless debugging.
    logging.basicConfig(level=logging.WARNING, stream=output, format="%(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "uvicorn.access", "psycopg"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
