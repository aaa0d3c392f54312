"""What the HTTP sinks share: one client setup, one POST, one reading of the answer.

A 2xx delivers; 408, 425, 429 and 5xx, timeouts and broken connections are worth
retrying (``Retry-After`` honoured); any other answer will never succeed as sent, so the
batch becomes a dead letter. Every text that leaves here went through the sink's
``redact``: a receiver that echoes a token must not put it in our logs.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping

import httpx

from runflow_tail.errors import SinkRejectedError, SinkRetryableError
from runflow_tail.pacing import parse_retry_after
from runflow_tail.version import USER_AGENT

RETRYABLE_STATUSES = frozenset({408, 425, 429})
ANSWER_SHOWN = 200
"""Characters of a refusal's body quoted in the error."""

Redact = Callable[[str], str]
RetryAfter = Callable[[httpx.Response], float | None]


def _unchanged(text: str) -> str:
    return text


def retry_after_header(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"))


def http_client(
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """A client that never follows redirects (a redirect could carry a token elsewhere)."""
    return httpx.AsyncClient(
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})},
        auth=auth,
        timeout=httpx.Timeout(timeout),
        verify=verify,
        follow_redirects=False,
    )


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    label: str,
    headers: Mapping[str, str] | None = None,
    redact: Redact = _unchanged,
    retry_after: RetryAfter = retry_after_header,
) -> None:
    """POST ``content``; return on 2xx, else raise the sink error the answer calls for."""
    try:
        response = await http.post(url, content=content, headers=headers)
    except httpx.TimeoutException as exc:
        raise SinkRetryableError(f"{label}: no answer within {http.timeout.read or 0:g}s") from exc
    except httpx.HTTPError as exc:
        raise SinkRetryableError(redact(f"{label}: {type(exc).__name__}: {exc}")) from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    said = redact(response.text[:ANSWER_SHOWN].strip())
    reason = f"{label} answered HTTP {status}" + (f": {said}" if said else "")
    if status in RETRYABLE_STATUSES or status >= 500:
        raise SinkRetryableError(reason, retry_after=retry_after(response))
    raise SinkRejectedError(reason)
