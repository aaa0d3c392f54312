"""How the sandbox answers: error envelopes in each style, Retry-After, and faults."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import anyio
import msgspec
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runflow_tail.sandbox.options import ErrorStyle

RAW_SEND_SCOPE_KEY = "runflow_tail.sandbox.raw_send"
_DISCONNECT_WAIT_SECONDS = 5.0
_DEFAULT_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    402: "PAYMENT_REQUIRED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


def default_code(status: int) -> str:
    return _DEFAULT_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = content if isinstance(content, bytes) else msgspec.json.encode(content)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(
    style: ErrorStyle,
    status: int,
    code: str,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error envelope in the configured style."""
    if style == "text":
        # What a proxy in front of the API would answer: no JSON, no code.
        phrase = _phrase(status)
        body = f"{status} {phrase}\n\n{message}\n".encode()
        return Response(body, status_code=status, headers=headers, media_type="text/plain")
    if style == "nested":
        return json_response({"error": {"code": code, "message": message}}, status, headers)
    return json_response({"code": code, "message": message, "errors": errors}, status, headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def retry_after_header(value: str | float | None) -> dict[str, str]:
    """Retry-After as seconds, as an HTTP-date 1-2 s ahead ("date"), or as given."""
    if value is None:
        return {}
    if value == "date":
        # HTTP-dates have whole seconds: round up so the date never lies in the past.
        ahead = math.ceil(time.time()) + 1
        return {"Retry-After": email.utils.formatdate(ahead, usegmt=True)}
    if isinstance(value, float | int):
        return {"Retry-After": str(int(value)) if float(value).is_integer() else str(value)}
    return {"Retry-After": value}


class DropConnection(Response):
    """Close the client's connection without answering (a network fault).

    Closing the transport and then waiting for uvicorn to notice the disconnect lets the
    request end with no response and no error logged. Without access to the transport
    (another server), starting a response and failing makes the server abort it instead.
    """

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_send = scope.get(RAW_SEND_SCOPE_KEY)
        cycle = getattr(raw_send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None or not hasattr(transport, "close"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ConnectionAbortedError("sandbox fault: connection dropped")
        transport.close()
        with anyio.move_on_after(_DISCONNECT_WAIT_SECONDS):
            while (await receive())["type"] != "http.disconnect":
                pass


def truncated(body: bytes) -> Response:
    """A 200 whose JSON body stops halfway, as a broken proxy or a cut stream delivers."""
    cut = body[: max(1, len(body) // 2)] if len(body) > 2 else b'{"items": [{"id": "'
    return Response(cut, status_code=200, media_type="application/json")
