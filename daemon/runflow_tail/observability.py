"""Structured logging and redaction: configured once per process, JSON when not on a TTY.

This is the only process-global state in runflow-tail (structlog's configuration and the
secrets it masks); metrics and health live with the daemon that owns them.

Redaction is one mechanism: ``register_secrets`` is given every configured secret (the
configuration layer finds them), and ``redact`` replaces each, in every form it may be
echoed in (as is, URL-encoded, JSON-escaped; for a URL that is a token, its path and
query values too), by ``MASK``. It runs on every log event (structlog's and the standard
library's, httpx's included), on uncaught tracebacks, and wherever the daemon writes text
that came from outside (error reasons, dead-letter reasons, /readyz, status), always
before any truncation, so no part of a secret survives a cut.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TextIO
from urllib.parse import parse_qsl, quote, urlsplit

import structlog

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


MASK = "********"
MIN_SECRET_CHARS = 4
"""Shorter values would mask ordinary words; real keys and tokens are long."""
_secrets: tuple[str, ...] = ()


def secret_forms(value: str) -> set[str]:
    """The forms in which ``value`` may be echoed back to us."""
    forms = {value, quote(value, safe=""), json.dumps(value)[1:-1]}
    if value.startswith(("http://", "https://")):
        # A chat webhook URL is its token: an echo of its path alone must not show it.
        parts = urlsplit(value)
        if len(parts.path) > 1:
            forms.add(parts.path)
        forms.update(found for _, found in parse_qsl(parts.query))
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


def register_secrets(values: Iterable[str]) -> None:
    """Mask ``values`` from now on, wherever text leaves the process. Secrets are only
    ever added (a reload keeps the old ones: an old token may still be echoed)."""
    global _secrets
    found = set(_secrets)
    for value in values:
        found |= secret_forms(value.strip())
    # Longest first, so that no secret shows in part after a shorter one was masked.
    _secrets = tuple(sorted(found, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(item) for item in value]
    return redact(str(value))


def _redact_event(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    if not _secrets:
        return event
    return {key: _redact_value(value) for key, value in event.items()}


class RedactingFilter(logging.Filter):
    """For the standard library's records (httpx, uvicorn, asyncio): the message and any
    traceback, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_info:
                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
                record.exc_info = None
        return True


def _redacting_excepthook(
    kind: type[BaseException], value: BaseException, trace: TracebackType | None
) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, trace))))


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
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
    # Libraries we use log through stdlib logging; keep them quiet unless debugging. At
    # debug, httpx logs every request's URL (a chat webhook URL is its token): every
    # handler redacts. httpcore's connection-level trace stays off.
    logging.basicConfig(level=logging.WARNING, stream=output, format="%(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    for noisy in ("httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("psycopg").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    sys.excepthook = _redacting_excepthook


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
