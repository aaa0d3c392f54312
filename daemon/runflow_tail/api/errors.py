"""What an answer of the Runflow API means: the one place that classifies it.

The error envelope comes in two shapes (``{"code", "message", "errors"}`` and
``{"error": {"code", "message"}}``) or as no JSON at all (a proxy); codes are compared
case-insensitively. Each answer becomes one error of the tree in ``runflow_tail.errors``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from runflow_tail.errors import (
    ApiConfigurationError,
    ApiCursorRejected,
    ApiError,
    ApiRateLimited,
    ApiUnavailable,
)
from runflow_tail.pacing import parse_retry_after

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
