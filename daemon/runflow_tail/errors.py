"""Every error runflow-tail expects, as one tree.

::

    RunflowTailError                      base; str() is a message for a person
    ├── ConfigError                       bad config or command line       -> exit 2
    ├── StateError                        the state directory              -> exit 3
    │   ├── StateLocked                   another daemon holds the lock
    │   └── JournalUnreadable             corrupt / unreadable journal file
    ├── ApiError                          the Runflow API said no or broke
    │   ├── RetryableApiError             back off and try again (retry_after wins)
    │   │   ├── ApiUnavailable            5xx
    │   │   ├── ApiRateLimited            429
    │   │   ├── ApiTransportError         timeout, refused, reset, dropped
    │   │   └── ApiMalformedResponse      a 200 whose body is not a page
    │   └── ApiConfigurationError         400/401/402/403/404/422: a person must act
    │       └── ApiCursorRejected         400 about `pq`: invalid or expired cursor
    └── SinkError                         a destination failed
        ├── SinkRetryableError            try again later (retry_after wins)
        ├── SinkRejectedError             permanent: dead-letter the batch
        └── SinkClosedError               the reader went away (`| head`): stop cleanly

Each boundary translates what it catches into this tree with ``raise ... from exc``;
``classify_api_response`` is the one place that decides what an HTTP answer means.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_STATE = 3
EXIT_API = 4


class RunflowTailError(Exception):
    """Base of every expected error; its message is written for the person reading it."""

    exit_code = EXIT_FAILURE


class ConfigError(RunflowTailError):
    """The configuration or command line is invalid; ``problems`` lists every one."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StateError(RunflowTailError):
    exit_code = EXIT_STATE


class StateLocked(StateError):
    pass


class JournalUnreadable(StateError):
    pass


class ApiError(RunflowTailError):
    """A failed API call: the HTTP status (0 without a response) and what the API said."""

    exit_code = EXIT_API

    def __init__(
        self,
        summary: str,
        *,
        status: int = 0,
        code: str | None = None,
        api_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.api_message = api_message
        self.retry_after = retry_after
        super().__init__(summary)


class RetryableApiError(ApiError):
    pass


class ApiUnavailable(RetryableApiError):
    pass


class ApiRateLimited(RetryableApiError):
    pass


class ApiTransportError(RetryableApiError):
    pass


class ApiMalformedResponse(RetryableApiError):
    pass


class ApiConfigurationError(ApiError):
    """The request cannot succeed until a person changes something."""


class ApiCursorRejected(ApiConfigurationError):
    """The API refused a page cursor; the poller recovers by seeking from its watermark."""


class SinkError(RunflowTailError):
    pass


class SinkRetryableError(SinkError):
    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(reason)


class SinkRejectedError(SinkError):
    pass


class SinkClosedError(SinkError):
    """The destination is gone for good (a closed stdout pipe): stop cleanly."""


_WHAT_TO_CHANGE = {
    400: "check the stream's `query` and `fields`",
    401: "the API key is missing or invalid: set RUNFLOW_API_KEY or api.api_key_file",
    402: "the organization is out of credit",
    403: "the key lacks permission (it needs runs:read) or targets another organization: "
    "check api.organization_id",
    404: "the run does not exist or belongs to another organization: check the stream's run_id",
    422: "a request parameter was rejected: check page_size, fields and query",
}


class _FlatEnvelope(msgspec.Struct):
    code: str | None = None
    message: str | None = None
    errors: Any = None


class _NestedEnvelope(msgspec.Struct):
    error: _FlatEnvelope | None = None


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """The API's ``code`` and ``message`` from either envelope, or the text of a non-JSON body."""
    try:
        nested = msgspec.json.decode(body, type=_NestedEnvelope)
        if nested.error is not None and (nested.error.code or nested.error.message):
            return nested.error.code, nested.error.message
        flat = msgspec.json.decode(body, type=_FlatEnvelope)
        if flat.code or flat.message:
            return flat.code, _with_field_errors(flat.message, flat.errors)
    except msgspec.DecodeError:
        pass
    text = body.decode("utf-8", "replace").strip()
    return None, (text[:200] or None)


def _with_field_errors(message: str | None, errors: Any) -> str | None:
    if not isinstance(errors, list) or not errors:
        return message
    details = "; ".join(_describe_field_error(item) for item in errors[:5])
    return f"{message or 'validation failed'} ({details})"


def _describe_field_error(item: Any) -> str:
    if not isinstance(item, Mapping):
        return str(item)
    loc = item.get("loc") or item.get("field") or ""
    if isinstance(loc, list):
        loc = ".".join(str(part) for part in loc)
    return f"{loc}: {item.get('msg') or item.get('message') or ''}".strip(": ")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_api_response(
    status: int, headers: Mapping[str, str], body: bytes, *, what: str
) -> ApiError:
    """Turn a non-2xx answer into the error tree: the one place that decides retryability."""
    code, api_message = parse_error_body(body)
    said = f"{code or status}: {api_message}" if api_message else f"{code or status}"
    # httpx.Headers are case-insensitive, a plain Mapping is not: look the name up either way.
    retry_after = parse_retry_after(
        next((value for name, value in headers.items() if name.lower() == "retry-after"), None)
    )
    if status == 429:
        return ApiRateLimited(
            f"{what}: rate limited by the API ({said})",
            status=status,
            code=code,
            api_message=api_message,
            retry_after=retry_after,
        )
    if status >= 500 or status in (408, 409, 425):
        return ApiUnavailable(
            f"{what}: the API answered HTTP {status} ({said})",
            status=status,
            code=code,
            api_message=api_message,
            retry_after=retry_after,
        )
    if status == 400 and _is_about_cursor(code, api_message):
        return ApiCursorRejected(
            f"{what}: the API rejected the page cursor ({said})",
            status=status,
            code=code,
            api_message=api_message,
        )
    advice = _WHAT_TO_CHANGE.get(status, "check the configuration")
    return ApiConfigurationError(
        f"{what}: the API answered HTTP {status} ({said}); {advice}",
        status=status,
        code=code,
        api_message=api_message,
    )


def _is_about_cursor(code: str | None, message: str | None) -> bool:
    # Codes are SCREAMING_SNAKE_CASE: INVALID_PQ and INVALID_PAGE_TOKEN are about the cursor.
    text = f"{code or ''} {message or ''}".lower().replace("_", " ")
    return "cursor" in text or "page token" in text or re.search(r"\bpq\b", text) is not None
