"""What the HTTP sinks share: their options, one client setup, one POST, one reading of the answer.

A 2xx delivers; by default 408, 425, 429 and 5xx, timeouts and broken connections are
worth retrying (``Retry-After`` honoured); any other answer will never succeed as sent,
so the batch becomes a dead letter. A sink whose protocol says otherwise (OTLP retries
only 429/502/503/504) passes its own ``retryable``. Every text that leaves here went
through the sink's ``redact``: a receiver that echoes a token must not put it in our logs.
"""

from __future__ import annotations

import base64
import ssl
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import anyio
import httpx
from pydantic import Field, SecretStr, model_validator

from runflow_tail.errors import SinkRejectedError, SinkRetryableError
from runflow_tail.models import PositiveDuration
from runflow_tail.observability import get_logger, register_secrets
from runflow_tail.observability import redact as redact_everywhere
from runflow_tail.pacing import parse_retry_after
from runflow_tail.sinks.base import SinkConfigBase
from runflow_tail.version import USER_AGENT

RETRYABLE_STATUSES = frozenset({408, 425, 429})
DEFAULT_REQUEST_DEADLINE = 60.0
"""Longest a whole request may take, answer included, unless a sink's options say."""
ANSWER_SHOWN = 200
"""Characters of a refusal's body quoted in the error."""
MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The most of an answer read (after decompression): Elasticsearch's per-item results for
a 10,000-entry batch are ~3 MB; a destination that sends more (or a gzip bomb) must not
take the daemon's memory with it."""
_FRAMING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})

Redact = Callable[[str], str]
RetryAfter = Callable[[httpx.Response], float | None]
Said = Callable[[httpx.Response], str]

log = get_logger(__name__)


def _unchanged(text: str) -> str:
    return text


def retry_after_header(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"))


def default_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def body_text(response: httpx.Response) -> str:
    # Cut well past what is shown: the cut that shows it comes after redaction, so a
    # secret at this cut could only be partly hidden beyond the part shown.
    return response.text[: ANSWER_SHOWN * 64].strip()


class HttpOptions(SinkConfigBase):
    """Options every HTTP sink takes: extra headers, one kind of auth, timeout and TLS."""

    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers; values are treated as secrets (masked everywhere)."""
    bearer_token: SecretStr | None = None
    basic_username: str | None = None
    basic_password: SecretStr | None = None
    timeout: PositiveDuration = 10.0
    """Longest wait for any one step of a request (connecting, each read)."""
    request_deadline: PositiveDuration = DEFAULT_REQUEST_DEADLINE
    """Longest a whole request may take (a receiver trickling its answer is cut off)."""
    verify: bool = True
    """TLS certificate verification; turn off only for testing (a warning is logged)."""
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _auth_is_consistent(self) -> HttpOptions:
        if self.bearer_token is not None and self.basic_username is not None:
            raise ValueError("use either bearer_token or basic_username/basic_password, not both")
        if (self.basic_username is None) != (self.basic_password is None):
            raise ValueError("basic auth needs both basic_username and basic_password")
        return self

    def secret_values(self) -> list[str]:
        """Every secret this sink sends, for ``redactor`` (subclasses add their own)."""
        values = [value.get_secret_value() for value in self.headers.values()]
        for secret in (self.bearer_token, self.basic_password):
            if secret is not None:
                values.append(secret.get_secret_value())
        if self.basic_username is not None and self.basic_password is not None:
            # What an echoed Authorization header would show.
            pair = f"{self.basic_username}:{self.basic_password.get_secret_value()}"
            values.append(base64.b64encode(pair.encode()).decode())
        return values

    def auth_headers(self) -> dict[str, str]:
        headers = {key: value.get_secret_value() for key, value in self.headers.items()}
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        return headers

    def http_client(
        self, name: str, *, content_type: str = "application/json", **headers: str
    ) -> httpx.AsyncClient:
        auth = None
        if self.basic_username is not None and self.basic_password is not None:
            auth = httpx.BasicAuth(self.basic_username, self.basic_password.get_secret_value())
        verify: ssl.SSLContext | bool = self.verify
        if self.verify and self.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
        if not self.verify:
            log.warning(
                "sink.tls_verification_disabled",
                sink=name,
                reason="verify = false: certificates are not checked; use ca_file instead",
            )
        return http_client(
            timeout=self.timeout,
            deadline=self.request_deadline,
            headers={"Content-Type": content_type, **self.auth_headers(), **headers},
            auth=auth,
            verify=verify,
        )


def redactor(secrets: Iterable[str]) -> Redact:
    """The one redaction (``observability.redact``), told this sink's secrets: a sink built
    outside the daemon (replay, ``alerts test``, a plugin's tests) masks them too, in every
    form an echo may take, and so does every other text that leaves the process."""
    register_secrets(secrets)
    return redact_everywhere


def url_label(url: str) -> str:
    """A URL as it may be logged: without its query or credentials, which may hold tokens."""
    return str(httpx.URL(url).copy_with(query=None, userinfo=b""))


_deadlines: weakref.WeakKeyDictionary[httpx.AsyncClient, float] = weakref.WeakKeyDictionary()


def http_client(
    *,
    timeout: float,
    deadline: float = DEFAULT_REQUEST_DEADLINE,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """A client that never follows redirects (a redirect could carry a token elsewhere);
    each ``post`` through it must finish within ``deadline`` seconds."""
    client = httpx.AsyncClient(
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})},
        auth=auth,
        timeout=httpx.Timeout(timeout),
        verify=verify,
        follow_redirects=False,
    )
    _deadlines[client] = deadline
    return client


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    label: str,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    redact: Redact = _unchanged,
    retry_after: RetryAfter = retry_after_header,
    retryable: Callable[[int], bool] = default_retryable,
    said: Said = body_text,
) -> httpx.Response:
    """POST ``content``; return the 2xx answer, else raise the sink error it calls for.

    ``said`` extracts the destination's own explanation from a refusal (a protobuf
    ``Status``, Loki's plain text, ...); it is quoted, redacted, in the error.
    """
    deadline = _deadlines.get(http, DEFAULT_REQUEST_DEADLINE)
    try:
        with anyio.fail_after(deadline):
            response, complete = await _bounded_post(http, url, content, headers, params)
    except TimeoutError as exc:
        raise SinkRetryableError(f"{label}: no complete answer within {deadline:g}s") from exc
    except httpx.TimeoutException as exc:
        raise SinkRetryableError(f"{label}: no answer within {http.timeout.read or 0:g}s") from exc
    except httpx.HTTPError as exc:
        raise SinkRetryableError(redact(f"{label}: {type(exc).__name__}: {exc}")) from exc
    status = response.status_code
    if not complete and 200 <= status < 300:
        # What a 2xx says it kept may be past the cut; sending again is the safe reading.
        raise SinkRetryableError(
            f"{label} answered HTTP {status} with more than {MAX_ANSWER_BYTES:,} bytes (read "
            "no further), so what it kept is unknown; the batch will be sent again"
        )
    if 200 <= status < 300:
        return response
    # Redacted whole, then cut: a secret cut in two would no longer match.
    explanation = redact(said(response))[:ANSWER_SHOWN]
    reason = f"{label} answered HTTP {status}" + (f": {explanation}" if explanation else "")
    if retryable(status):
        raise SinkRetryableError(reason, retry_after=retry_after(response))
    raise SinkRejectedError(reason, status=status)


async def _bounded_post(
    http: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: Mapping[str, str] | None,
    params: Mapping[str, str] | None,
) -> tuple[httpx.Response, bool]:
    """The answer with at most ``MAX_ANSWER_BYTES`` of its body, and whether that was all."""
    request = http.build_request("POST", url, content=content, headers=headers, params=params)
    streamed = await http.send(request, stream=True)
    chunks: list[bytes] = []
    size = 0
    complete = True
    try:
        async for chunk in streamed.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                complete = False
                break
    finally:
        await streamed.aclose()
    body = b"".join(chunks)[:MAX_ANSWER_BYTES]
    # The body is decoded already: a copy without the framing headers reads as it is.
    kept = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _FRAMING_HEADERS]
    answer = httpx.Response(streamed.status_code, headers=kept, content=body, request=request)
    return answer, complete
