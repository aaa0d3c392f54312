"""RunflowClient and parse_page, driven through an injected ``httpx.MockTransport``."""

from __future__ import annotations

import email.utils
import hashlib
import importlib.abc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr
from runflow_tail.api.client import SORT_ASCENDING, Page, RunflowClient, parse_page
from runflow_tail.api.settings import ApiSettings
from runflow_tail.errors import (
    ApiConfigurationError,
    ApiCursorRejected,
    ApiError,
    ApiMalformedResponse,
    ApiRateLimited,
    ApiTransportError,
    ApiUnavailable,
    RetryableApiError,
)
from runflow_tail.pacing import RateLimiter
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.times import NS_PER_SECOND, parse_instant
from runflow_tail.version import __version__

pytestmark = pytest.mark.anyio

API_KEY = "rf_live_S3CRET-key-do-not-leak"
BASE_URL = "https://api.runflow.test"
HOST = "api.runflow.test"
TS = "2023-11-07T05:31:56Z"
TS_NS = parse_instant(TS)
RUN = "0190f3c4-0000-7000-8000-000000000001"

Handler = Callable[[httpx.Request], httpx.Response]


class RecordingLimiter(RateLimiter):
    """A fast limiter that remembers every pause it was asked for."""

    def __init__(self) -> None:
        super().__init__(1000.0)
        self.pauses: list[float] = []

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        super().pause(seconds)


def settings(**overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "base_url": BASE_URL,
        "api_key": SecretStr(API_KEY),
        "max_requests_per_second": 1000,
        **overrides,
    }
    return ApiSettings(**values)


def page_body(items: list[Any], **cursors: Any) -> bytes:
    return json.dumps({"items": items, **cursors}).encode()


def entry(entry_id: str = "e1", timestamp: str = TS, **extra: Any) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": timestamp, "message": "hello", **extra}


def answer(
    status: int = 200,
    body: bytes = b'{"items": [], "next": null}',
    headers: dict[str, str] | None = None,
) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    return handle


class Api:
    """A scripted API that records the requests it received."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


async def fetch(
    handler: Handler,
    *,
    api: ApiSettings | None = None,
    limiter: RateLimiter | None = None,
    **kwargs: Any,
) -> tuple[Page, list[httpx.Request]]:
    recorder = Api(handler)
    client = RunflowClient(
        api or settings(), limiter=limiter, transport=httpx.MockTransport(recorder)
    )
    try:
        page = await client.fetch_logs(RUN, **kwargs)
    finally:
        await client.aclose()
    return page, recorder.requests


async def fetch_error(handler: Handler, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await fetch(handler, **kwargs)
    assert API_KEY not in str(caught.value)
    return caught.value


# -- requests ----------------------------------------------------------------------------


async def test_request_carries_bearer_key_and_user_agent() -> None:
    """Every request sends the key as a Bearer token and identifies runflow-tail's version."""
    _, requests = await fetch(answer())
    assert requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert requests[0].headers["User-Agent"] == f"runflow-tail/{__version__}"


async def test_organization_header_is_absent_by_default() -> None:
    """Without organization_id no X-Organization-Id header is sent (the key's org applies)."""
    _, requests = await fetch(answer())
    assert "X-Organization-Id" not in requests[0].headers


async def test_organization_header_is_sent_when_configured() -> None:
    """A configured organization_id is sent as X-Organization-Id."""
    _, requests = await fetch(answer(), api=settings(organization_id="org_42"))
    assert requests[0].headers["X-Organization-Id"] == "org_42"


async def test_request_targets_the_runs_logs_endpoint() -> None:
    """Logs are fetched with GET /v1/runs/{run_id}/logs on the configured host."""
    _, requests = await fetch(answer())
    assert requests[0].method == "GET"
    assert requests[0].url.host == HOST
    assert requests[0].url.path == f"/v1/runs/{RUN}/logs"


async def test_request_params_limit_sort_query_and_fields() -> None:
    """limit, sort_by (timestamp then id, ascending), q and fields are sent as given."""
    _, requests = await fetch(
        answer(), query="level_code:error", fields=("id", "timestamp", "message"), limit=123
    )
    params = requests[0].url.params
    assert params["limit"] == "123"
    assert params["sort_by"] == SORT_ASCENDING == "timestamp:asc,id:asc"
    assert params["q"] == "level_code:error"
    assert params["fields"] == "id,timestamp,message"


async def test_empty_query_and_fields_are_not_sent() -> None:
    """An empty filter and an empty projection leave q, fields and pq out of the request."""
    _, requests = await fetch(answer())
    assert set(requests[0].url.params.keys()) == {"limit", "sort_by"}


def test_client_without_key_is_a_configuration_error() -> None:
    """A client cannot be built without an API key, and the error says where to put one."""
    with pytest.raises(ApiConfigurationError, match="RUNFLOW_API_KEY"):
        RunflowClient(ApiSettings(base_url=BASE_URL))


async def test_repr_does_not_contain_the_key() -> None:
    """repr(client) names the base URL but never the API key."""
    client = RunflowClient(settings(), transport=httpx.MockTransport(answer()))
    try:
        assert BASE_URL in repr(client)
        assert API_KEY not in repr(client)
    finally:
        await client.aclose()


# -- cursors -----------------------------------------------------------------------------


async def test_next_cursor_is_read_from_next() -> None:
    """The reference's `next` field is the page's next cursor."""
    page, _ = await fetch(answer(body=page_body([entry()], next="tok1", previous=None)))
    assert page.next_cursor == "tok1"


async def test_next_cursor_is_read_from_next_pq() -> None:
    """The concept page's `next_pq` field is accepted as the next cursor too."""
    page, _ = await fetch(answer(body=page_body([entry()], next_pq="tok2", prev_pq=None)))
    assert page.next_cursor == "tok2"


@pytest.mark.parametrize("cursors", [{}, {"next": None}, {"next_pq": None}])
def test_no_next_cursor_means_the_end(cursors: dict[str, Any]) -> None:
    """A missing or null next cursor reads as the end of the results."""
    assert parse_page(page_body([entry()], **cursors)).next_cursor is None


@pytest.mark.parametrize(
    "token",
    [
        "eyJrIjpbMV19.c2ln",
        # Standard base64 may start with '/' or end in 'pq=': still a bare token.
        "/w8AAAB+ab==",
        "AAAApq=",
    ],
)
async def test_bare_token_cursor_is_sent_as_pq(token: str) -> None:
    """A bare cursor token is sent unchanged as the pq parameter."""
    _, requests = await fetch(answer(), cursor=token)
    assert requests[0].url.params["pq"] == token
    assert requests[0].url.host == HOST


@pytest.mark.parametrize("cursor", ["pq=tok%2B1&from_prev=false", "?pq=tok%2B1"])
async def test_query_string_cursor_supplies_pq(cursor: str) -> None:
    """A cursor that is a query string carrying pq= contributes its decoded pq value."""
    _, requests = await fetch(answer(), cursor=cursor)
    assert requests[0].url.params["pq"] == "tok+1"
    assert requests[0].url.path == f"/v1/runs/{RUN}/logs"


@pytest.mark.parametrize(
    "cursor",
    [
        f"{BASE_URL}/v1/runs/{RUN}/logs?pq=tok3&limit=50",
        f"/v1/runs/{RUN}/logs?pq=tok3&limit=50",
        "https://attacker.example:8443/steal?pq=tok3&limit=50",
        "http://169.254.169.254/latest?pq=tok3&limit=50",
    ],
)
async def test_url_cursor_uses_only_its_query_against_our_origin(cursor: str) -> None:
    """A URL cursor's query is sent to our own endpoint, whatever host or path it names."""
    _, requests = await fetch(answer(), cursor=cursor)
    [request] = requests
    assert (request.url.scheme, request.url.host, request.url.port) == ("https", HOST, None)
    assert request.url.path == f"/v1/runs/{RUN}/logs"
    assert request.url.params["pq"] == "tok3"
    assert request.url.params["limit"] == "50"


# -- page parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "2023-11-07T05:31:56.5Z",
        "2023-11-07T05:31:56.50Z",
        "2023-11-07T05:31:56.500+00:00",
        "2023-11-07T05:31:56.5000Z",
        "2023-11-07T05:31:56.50000+00:00",
        "2023-11-07T05:31:56.500000Z",
        "2023-11-07T05:31:56.5000000+00:00",
        "2023-11-07T05:31:56.50000000Z",
        "2023-11-07T05:31:56.500000000+00:00",
    ],
)
def test_fractional_timestamps_parse_to_the_same_instant(timestamp: str) -> None:
    """1 to 9 fractional digits, with Z or +00:00, read as the same nanosecond instant."""
    [parsed] = parse_page(page_body([entry(timestamp=timestamp)])).entries
    assert parsed.timestamp_ns == TS_NS + NS_PER_SECOND // 2


@pytest.mark.parametrize("timestamp", ["2023-11-07T05:31:56Z", "2023-11-07T05:31:56+00:00"])
def test_whole_second_timestamps_parse_to_the_same_instant(timestamp: str) -> None:
    """Without a fraction, Z and +00:00 are the same instant."""
    [parsed] = parse_page(page_body([entry(timestamp=timestamp)])).entries
    assert parsed.timestamp_ns == TS_NS


def test_nine_fractional_digits_keep_nanoseconds() -> None:
    """A nanosecond-precision timestamp is not rounded through datetime microseconds."""
    [parsed] = parse_page(page_body([entry(timestamp="2023-11-07T05:31:56.123456789Z")])).entries
    assert parsed.timestamp_ns == TS_NS + 123_456_789


def test_entry_without_id_gets_a_digest_of_its_bytes() -> None:
    """An entry without id is keyed by sha256 of its raw bytes, the same on every re-read."""
    body = b'{"items": [{"timestamp": "2023-11-07T05:31:56Z", "message": "no id"}]}'
    first = parse_page(body).entries[0]
    again = parse_page(body).entries[0]
    assert first.id == "sha256:" + hashlib.sha256(first.raw).hexdigest()
    assert again.id == first.id


def test_entries_without_id_differ_by_content() -> None:
    """Two different entries without id get different digests."""
    page = parse_page(page_body([{"timestamp": TS, "n": 1}, {"timestamp": TS, "n": 2}]))
    assert len({item.id for item in page.entries}) == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "bad"},
        {"id": "bad", "timestamp": None},
        {"id": "bad", "timestamp": "yesterday"},
        {"id": "bad", "timestamp": "2023-11-07"},
        {"id": "bad", "timestamp": "2023-13-07T05:31:56Z"},
        {"id": "bad", "timestamp": 1699335116},
        "not an object",
        None,
    ],
)
def test_entry_without_a_usable_timestamp_is_skipped_and_counted(bad: Any) -> None:
    """An item without a valid timestamp is counted in Page.invalid; its neighbours are kept."""
    page = parse_page(page_body([entry("before"), bad, entry("after")]))
    assert [item.id for item in page.entries] == ["before", "after"]
    assert page.invalid == 1
    assert page.item_count == 3


def test_raw_bytes_are_kept_exactly_as_received() -> None:
    """Unicode escapes, float spellings and key order survive byte for byte."""
    item = (
        b'{"message":"caf\\u00e9 \\ud83d\\ude00 \\"q\\"","timestamp":"2023-11-07T05:31:56Z",'
        b'"id":"e1","meta":{"ratio":1.50e+3,"x":1.0,"big":12345678901234567890,"z":-0.0}}'
    )
    page = parse_page(b'{"items": [' + item + b'], "next": null}')
    assert page.entries[0].raw == item
    assert page.body_bytes == len(b'{"items": [' + item + b'], "next": null}')


def test_pretty_printed_items_are_compacted_to_one_line() -> None:
    """Items spread over several lines become one line with every value unchanged."""
    item = {
        "id": "e1",
        "timestamp": TS,
        "message": "two  spaces,\ta tab and an escaped\nnewline",
        "meta": {"nested": [1, 2.5, None, True], "empty": {}},
    }
    body = json.dumps({"items": [item], "next": None}, indent=2).encode()
    [parsed] = parse_page(body).entries
    assert b"\n" not in parsed.raw
    assert json.loads(parsed.raw) == item


def test_pretty_printed_items_keep_number_spellings() -> None:
    """Compacting a pretty-printed item keeps numbers and escapes spelled as sent."""
    body = (
        b'{\r\n  "items": [\r\n    {\r\n      "id": "e1",\r\n      "timestamp": '
        b'"2023-11-07T05:31:56Z",\r\n      "v": 1.50e+3,\r\n      "s": "\\u00e9"\r\n    }'
        b"\r\n  ]\r\n}"
    )
    [parsed] = parse_page(body).entries
    assert parsed.raw == b'{"id":"e1","timestamp":"2023-11-07T05:31:56Z","v":1.50e+3,"s":"\\u00e9"}'


async def test_page_counts_items_and_keeps_order() -> None:
    """Entries come back in the order the API sent them, with the item count."""
    page, _ = await fetch(answer(body=page_body([entry("b"), entry("a")], next="n")))
    assert [item.id for item in page.entries] == ["b", "a"]
    assert page.item_count == 2
    assert page.invalid == 0


# -- errors ------------------------------------------------------------------------------


async def test_400_bad_filter_is_a_configuration_error() -> None:
    """A 400 about the filter is a configuration error pointing at the stream's query."""
    body = b'{"code": "INVALID_FILTER", "message": "unexpected token AND at 7", "errors": null}'
    error = await fetch_error(answer(400, body))
    assert type(error) is ApiConfigurationError
    assert "query" in str(error)
    assert "unexpected token AND at 7" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": "INVALID_CURSOR", "message": "the cursor is malformed"}',
        b'{"code": "CURSOR_EXPIRED", "message": "expired"}',
        b'{"error": {"code": "BAD_REQUEST", "message": "invalid value for pq"}}',
    ],
)
async def test_400_about_the_cursor_is_cursor_rejected(body: bytes) -> None:
    """A 400 about the page cursor is ApiCursorRejected, so the poller can re-seek."""
    error = await fetch_error(answer(400, body), cursor="tok")
    assert isinstance(error, ApiCursorRejected)
    assert error.status == 400


@pytest.mark.parametrize(
    ("status", "code", "advice"),
    [
        (401, "UNAUTHORIZED", "RUNFLOW_API_KEY"),
        (402, "PAYMENT_REQUIRED", "credit"),
        (403, "PERMISSION_DENIED", "runs:read"),
        (404, "RUN_NOT_FOUND", "run_id"),
        (422, "VALIDATION_ERROR", "page_size"),
    ],
)
async def test_client_errors_are_configuration_errors_with_advice(
    status: int, code: str, advice: str
) -> None:
    """401/402/403/404/422 are not retryable and say what to change."""
    body = json.dumps({"code": code, "message": "nope", "errors": None}).encode()
    error = await fetch_error(answer(status, body))
    assert type(error) is ApiConfigurationError
    assert not isinstance(error, RetryableApiError)
    assert (error.status, error.code, error.api_message) == (status, code, "nope")
    assert advice in str(error)
    assert RUN in str(error)


async def test_422_field_errors_are_in_the_message() -> None:
    """The field details of a 422 envelope's errors[] appear in the message."""
    body = (
        b'{"code": "VALIDATION_ERROR", "message": "invalid", '
        b'"errors": [{"loc": ["query", "limit"], "msg": "must be <= 500"}]}'
    )
    error = await fetch_error(answer(422, body))
    assert "query.limit: must be <= 500" in str(error)


async def test_error_echoing_the_key_does_not_leak_it() -> None:
    """An error body that repeats the key never carries it into the exception."""
    body = json.dumps({"code": "UNAUTHORIZED", "message": f"key {API_KEY} revoked"}).encode()
    error = await fetch_error(answer(401, body))
    assert API_KEY not in (error.api_message or "")


async def test_429_without_retry_after_pauses_the_shared_limiter() -> None:
    """A 429 without Retry-After is ApiRateLimited with no hint, and every stream waits 1 s."""
    limiter = RecordingLimiter()
    error = await fetch_error(answer(429, b'{"code": "RATE_LIMITED"}'), limiter=limiter)
    assert isinstance(error, ApiRateLimited)
    assert error.retry_after is None
    assert limiter.pauses == [1.0]


async def test_429_with_retry_after_seconds() -> None:
    """A 429's Retry-After in seconds becomes retry_after and pauses the shared limiter."""
    limiter = RecordingLimiter()
    error = await fetch_error(answer(429, b"", {"Retry-After": "7"}), limiter=limiter)
    assert isinstance(error, ApiRateLimited)
    assert error.retry_after == 7.0
    assert limiter.pauses == [7.0]


async def test_429_with_retry_after_http_date() -> None:
    """A 429's Retry-After as an HTTP date becomes the seconds until that date."""
    limiter = RecordingLimiter()
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = await fetch_error(answer(429, b"", {"Retry-After": when}), limiter=limiter)
    assert isinstance(error, ApiRateLimited)
    assert error.retry_after is not None
    assert 25 <= error.retry_after <= 31
    assert limiter.pauses == [error.retry_after]


async def test_429_pause_holds_back_the_next_request() -> None:
    """After a 429 the shared limiter makes the next request wait for Retry-After."""
    limiter = RecordingLimiter()
    await fetch_error(answer(429, b"", {"Retry-After": "60"}), limiter=limiter)
    with anyio.move_on_after(0.05) as scope:
        await limiter.acquire()
    assert scope.cancelled_caught


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_unavailable_and_retryable(status: int) -> None:
    """A 5xx answer is ApiUnavailable, which is retryable."""
    error = await fetch_error(answer(status, b"upstream down"))
    assert isinstance(error, ApiUnavailable)
    assert isinstance(error, RetryableApiError)
    assert error.status == status


async def test_503_keeps_its_retry_after() -> None:
    """A 503's Retry-After is carried on the error."""
    error = await fetch_error(answer(503, b"", {"Retry-After": "12"}))
    assert error.retry_after == 12.0


@pytest.mark.parametrize(
    "exception",
    [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout],
)
async def test_timeouts_are_transport_errors(exception: type[httpx.TimeoutException]) -> None:
    """A request that times out is ApiTransportError naming the timeout."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise exception("timed out", request=request)

    error = await fetch_error(handle, api=settings(timeout=7.5))
    assert isinstance(error, ApiTransportError)
    assert "7.5s" in str(error)


@pytest.mark.parametrize(
    "exception",
    [httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError],
)
async def test_connection_errors_are_transport_errors(
    exception: type[httpx.TransportError],
) -> None:
    """A refused, reset or dropped connection is ApiTransportError."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise exception("connection reset by peer", request=request)

    error = await fetch_error(handle)
    assert isinstance(error, ApiTransportError)
    assert "connection reset by peer" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        b'{"items": [{"id": "e1", "timestamp": "2023-11-07T05:31:56Z"}',
        b"<html><body>Welcome to the captive portal</body></html>",
        b"",
        b'{"data": [], "next": null}',
        b'{"items": null}',
        b"[]",
    ],
)
async def test_200_without_a_page_is_malformed(body: bytes) -> None:
    """A 200 whose body is truncated, not JSON or has no items list is ApiMalformedResponse."""
    error = await fetch_error(answer(200, body))
    assert isinstance(error, ApiMalformedResponse)
    assert isinstance(error, RetryableApiError)
    assert error.status == 200


async def test_flat_error_envelope_is_read() -> None:
    """The flat {code, message, errors} envelope gives the error's code and message."""
    error = await fetch_error(answer(403, b'{"code": "EMAIL_NOT_VERIFIED", "message": "verify"}'))
    assert (error.code, error.api_message) == ("EMAIL_NOT_VERIFIED", "verify")


async def test_nested_error_envelope_is_read() -> None:
    """The nested {"error": {code, message}} envelope gives the error's code and message."""
    body = b'{"error": {"code": "PERMISSION_DENIED", "message": "missing runs:read"}}'
    error = await fetch_error(answer(403, body))
    assert (error.code, error.api_message) == ("PERMISSION_DENIED", "missing runs:read")


async def test_plain_text_proxy_body_is_read() -> None:
    """A non-JSON proxy body becomes the error's message text."""
    error = await fetch_error(answer(502, b"<html>502 Bad Gateway</html>\n"))
    assert error.code is None
    assert error.api_message == "<html>502 Bad Gateway</html>"
    assert "502 Bad Gateway" in str(error)


@pytest.mark.parametrize(
    "handler",
    [
        answer(400, b'{"code": "INVALID_CURSOR"}'),
        answer(401, b"Unauthorized"),
        answer(429, b"", {"Retry-After": "3"}),
        answer(500, b""),
        answer(200, b"not json"),
    ],
)
async def test_no_error_message_contains_the_key(handler: Handler) -> None:
    """Neither str(), repr() nor args of any client error contain the API key."""
    error = await fetch_error(handler)
    assert API_KEY not in repr(error)
    assert all(API_KEY not in str(arg) for arg in error.args)


class _ImportRecorder(importlib.abc.MetaPathFinder):
    """Sees every import that reaches the finders: a module not yet in sys.modules."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        self.searched.append(fullname)


@pytest.mark.anyio
async def test_fetching_pages_never_searches_for_a_module(sandbox: SandboxHandle) -> None:
    # Python never caches a failed import: a library that tries an optional import on
    # every call walks sys.path each time. httpcore did that for sniffio three times per
    # request, a quarter of the CPU a page costs (encode/httpcore#1103).
    client = RunflowClient(settings(base_url=sandbox.url, api_key=SecretStr(sandbox.api_key)))
    recorder = _ImportRecorder()
    try:
        await client.fetch_logs("any", limit=10)  # first use may import what it needs
        sys.meta_path.insert(0, recorder)
        for _ in range(3):
            await client.fetch_logs("any", limit=10)
    finally:
        if recorder in sys.meta_path:
            sys.meta_path.remove(recorder)
        await client.aclose()
    assert recorder.searched == []
