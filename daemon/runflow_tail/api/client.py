"""The Runflow API client: one ``httpx.AsyncClient`` per API key, pages parsed without copies.

A page is decoded once into its cursor fields and the raw bytes of each item
(``msgspec.Raw``); from each item only ``id`` and ``timestamp`` are decoded. The raw bytes
are what the journal keeps and what sinks pass on: no field re-encoded, no timestamp
reformatted. Every failure leaves as an ``ApiError`` (see ``errors``).
"""

from __future__ import annotations

import email.utils
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import msgspec

from runflow_tail.api import deep_json
from runflow_tail.api.errors import classify_api_response
from runflow_tail.api.settings import ApiSettings
from runflow_tail.errors import ApiConfigurationError, ApiMalformedResponse, ApiTransportError
from runflow_tail.metrics import Metrics
from runflow_tail.models import FetchedEntry, RejectedEntry
from runflow_tail.observability import get_logger, redact, register_secrets
from runflow_tail.pacing import RateLimiter
from runflow_tail.times import MAX_NS, MIN_NS, NS_PER_SECOND, TimeValueError, parse_timestamp
from runflow_tail.version import USER_AGENT

SORT_ASCENDING = "timestamp:asc,id:asc"

log = get_logger(__name__)
PAUSE_WITHOUT_RETRY_AFTER = 1.0
"""Seconds every request waits after a 429 that names no Retry-After."""


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[FetchedEntry]
    next_cursor: str | None
    item_count: int
    """Items the API returned, including any we could not journal (see ``invalid``)."""
    invalid: int = 0
    body_bytes: int = 0
    seen_since_ns: int | None = None
    """An API-clock instant no later than when this page was evaluated (from the response's
    Date header, less the request's duration and the header's one-second resolution)."""
    rejected: tuple[RejectedEntry, ...] = ()
    """Items that cannot be journaled as entries, with the reason (dead-lettered)."""


class _PageBody(msgspec.Struct):
    items: list[msgspec.Raw]
    next: str | None = None
    next_pq: str | None = None


class _EntryKey(msgspec.Struct):
    id: str | None = None
    timestamp: str | None = None


class _PageKeys(msgspec.Struct):
    items: list[_EntryKey]


_new_entry = tuple.__new__
_decode_page = msgspec.json.Decoder(_PageBody).decode
_decode_keys = msgspec.json.Decoder(_PageKeys).decode
_decode_key = msgspec.json.Decoder(_EntryKey).decode


@dataclass(frozen=True, slots=True)
class PageBody:
    """A page as it arrived, split into its items and cursor but not yet read item by item:
    enough to ask for the next page while this one is parsed (``parse``)."""

    body: bytes
    items: list[Any]
    next_cursor: str | None
    deep: bool = False
    """Nested past the decoder: split without recursion (``deep_json``)."""
    seen_since_ns: int | None = None

    @property
    def item_count(self) -> int:
        return len(self.items)

    def parse(self) -> Page:
        return _parse_items(self)


def split_page(body: bytes) -> PageBody:
    """A page's items and cursor (the cheap part of ``parse_page``); raises
    ``msgspec.DecodeError`` for a body that is not a page."""
    try:
        page = _decode_page(body)
    except RecursionError:
        items, next_token, next_pq = deep_json.split_page(body)
        cursor = next_token if next_token is not None else next_pq
        return PageBody(body, list(items), cursor, deep=True)
    next_cursor = page.next if page.next is not None else page.next_pq
    return PageBody(body, page.items, next_cursor)


def parse_page(body: bytes) -> Page:
    """Split a page into entries; raises ``msgspec.DecodeError`` for a body that is not a page.

    An item that cannot be ordered (no readable ``id`` and ``timestamp``, a timestamp
    outside the times we can store) is returned in ``rejected`` with the reason, never
    dropped silently and never fatal. An item nested deeper than the decoder goes is kept
    as received (see ``deep_json``).
    """
    return _parse_items(split_page(body))


def _parse_items(split: PageBody) -> Page:
    body, items = split.body, split.items
    keys: list[_EntryKey] | None = None
    if not split.deep:
        try:
            # Every id and timestamp in one pass over the page, not one decoder call per entry.
            keys = _decode_keys(body).items
        except (msgspec.DecodeError, RecursionError):
            keys = None  # some item is malformed or deep: judge each one on its own below
    entries: list[FetchedEntry] = []
    rejected: list[RejectedEntry] = []
    # One search of the page instead of one per item: pages are usually compact.
    may_hold_line_breaks = b"\n" in body
    for index, item in enumerate(items):
        raw = bytes(item)
        if may_hold_line_breaks and b"\n" in raw:
            # Only insignificant whitespace can hold a raw line break in JSON; compacting
            # it keeps every value as sent and keeps the entry one line in JSON Lines.
            raw = _compact(raw)
        try:
            key = keys[index] if keys is not None else _read_key(raw)
            if key.timestamp is None:
                raise TimeValueError("the entry has no timestamp")
            timestamp_ns = parse_timestamp(key.timestamp)
        except (msgspec.DecodeError, TimeValueError) as exc:
            rejected.append(RejectedEntry(_best_id(raw), raw, _rejection(exc)))
            continue
        # An entry without an id still deserves delivery; a digest of its bytes is stable
        # across re-reads, so de-duplication keeps working.
        entry_id = key.id or "sha256:" + hashlib.sha256(raw).hexdigest()
        entries.append(_new_entry(FetchedEntry, (entry_id, timestamp_ns, raw)))
    return Page(
        entries=entries,
        next_cursor=split.next_cursor,
        item_count=len(items),
        invalid=len(rejected),
        body_bytes=len(body),
        seen_since_ns=split.seen_since_ns,
        rejected=tuple(rejected),
    )


def _compact(raw: bytes) -> bytes:
    try:
        return msgspec.json.format(raw, indent=-1)
    except RecursionError:
        return deep_json.compact(raw)
    except msgspec.DecodeError:
        return raw  # not JSON: rejected below, as received


def _read_key(raw: bytes) -> _EntryKey:
    try:
        return _decode_key(raw)
    except RecursionError:
        found = deep_json.top_level_strings(raw, ("id", "timestamp"))
        return _EntryKey(id=found.get("id"), timestamp=found.get("timestamp"))


def _best_id(raw: bytes) -> str:
    """The item's own id when it has a readable one, else a digest of its bytes (stable
    across re-reads, so the same item is dead-lettered once)."""
    try:
        found = _read_key(raw).id
    except (msgspec.DecodeError, RecursionError):
        found = None
    return found or "sha256:" + hashlib.sha256(raw).hexdigest()


def _rejection(exc: Exception) -> str:
    if isinstance(exc, TimeValueError):
        return f"its timestamp cannot be used: {exc}"
    return f"it is not an object with a string id and timestamp: {exc}"


class RunflowClient:
    """Talks to one Runflow API with one key; safe to share between streams."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if settings.api_key is None:
            raise ApiConfigurationError("no API key configured: set RUNFLOW_API_KEY")
        headers = {
            "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        if settings.organization_id:
            headers["X-Organization-Id"] = settings.organization_id
        self._base = httpx.URL(settings.base_url)
        self._http = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout),
            transport=transport,
            follow_redirects=False,
        )
        self._timeout = settings.timeout
        self._deadline = settings.request_deadline
        self._max_bytes = settings.max_response_bytes
        # A server or proxy that echoes the key must not carry it anywhere: the one
        # redaction masks it in every form an echo may take.
        register_secrets([settings.api_key.get_secret_value()])
        self.limiter = limiter or RateLimiter(settings.max_requests_per_second)
        self.requests_made = 0
        self.last_round_trip = 0.0
        """Seconds the last answered request took on the wire (no time spent waiting to go)."""
        self._metrics = metrics or Metrics()

    def __repr__(self) -> str:
        return f"RunflowClient(base_url={str(self._base)!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch_logs(
        self,
        run_id: str,
        *,
        query: str = "",
        fields: tuple[str, ...] = (),
        limit: int = 500,
        cursor: str | None = None,
    ) -> Page:
        """One page of ``GET /v1/runs/{run_id}/logs``, sorted by (timestamp, id) ascending."""
        split = await self.fetch_page_body(
            run_id, query=query, fields=fields, limit=limit, cursor=cursor
        )
        return split.parse()

    async def fetch_page_body(
        self,
        run_id: str,
        *,
        query: str = "",
        fields: tuple[str, ...] = (),
        limit: int = 500,
        cursor: str | None = None,
    ) -> PageBody:
        """``fetch_logs`` up to its items and cursor: the caller may ask for the next page
        before it reads this one's entries (``PageBody.parse``)."""
        params: dict[str, str] = {"limit": str(limit), "sort_by": SORT_ASCENDING}
        if query:
            params["q"] = query
        if fields:
            params["fields"] = ",".join(fields)
        if cursor is not None:
            params = self._follow(cursor, params)
        started = time.monotonic()
        body, headers = await self._exchange(
            f"/v1/runs/{run_id}/logs", params, what=f"fetching logs of run {run_id}"
        )
        try:
            split = split_page(body)
        except msgspec.DecodeError as exc:
            raise ApiMalformedResponse(
                f"fetching logs of run {run_id}: the API sent a body that is not a page of "
                f"entries ({exc}; {len(body)} bytes)",
                status=200,
            ) from exc
        evaluated = _evaluated_no_later_than(headers.get("date"), time.monotonic() - started)
        return replace(split, seen_since_ns=evaluated) if evaluated is not None else split

    async def get_json(self, path: str, *, what: str) -> Any:
        body = await self._get(path, {}, what=what)
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ApiMalformedResponse(f"{what}: the API sent invalid JSON ({exc})") from exc

    @staticmethod
    def _follow(cursor: str, params: dict[str, str]) -> dict[str, str]:
        """Turn whatever the API calls its next cursor into the next request's parameters.

        The documentation leaves open whether a cursor is a bare ``pq`` token, a query
        string carrying ``pq=``, or a whole URL; all three are accepted. A URL's query is
        used against our own endpoint and origin, so the bearer key never goes anywhere
        the configuration did not name.
        """
        text = cursor.strip()
        if text.startswith(("http://", "https://", "/")):
            found = dict(parse_qsl(urlsplit(text).query, keep_blank_values=True))
        elif "pq=" in text:
            found = dict(parse_qsl(text.lstrip("?"), keep_blank_values=True))
        else:
            found = {}
        # Without a pq it was a bare token after all (base64 may start with '/' or end in
        # 'pq='); dropping it would fetch the first page again and again.
        if not found.get("pq"):
            return {**params, "pq": text}
        return {**params, **found}

    async def _get(self, url: str, params: Mapping[str, str], *, what: str) -> bytes:
        body, _ = await self._exchange(url, params, what=what)
        return body

    async def _get_bounded(
        self, url: str, params: Mapping[str, str], *, what: str
    ) -> tuple[httpx.Response, bytes]:
        """The answer, read only up to ``max_response_bytes`` (decoded: a gzip bomb stops
        at the limit too)."""
        async with self._http.stream("GET", url, params=params) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                self._too_large(what, int(declared))
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    self._too_large(what, size)
                chunks.append(chunk)
        return response, b"".join(chunks)

    def _too_large(self, what: str, size: int) -> None:
        self._metrics.api_requests.labels("error").inc()
        raise ApiMalformedResponse(
            f"{what}: the API's answer is larger than api.max_response_bytes "
            f"({self._max_bytes:,} bytes; {size:,} read or announced): raise it, or lower "
            "the stream's page_size"
        )

    async def _exchange(
        self, url: str, params: Mapping[str, str], *, what: str
    ) -> tuple[bytes, httpx.Headers]:
        async with self.limiter.request():
            self.requests_made += 1
            sent = time.monotonic()
            try:
                with anyio.fail_after(self._deadline):
                    response, body = await self._get_bounded(url, params, what=what)
            except TimeoutError as exc:
                self._metrics.api_requests.labels("error").inc()
                raise ApiTransportError(
                    f"{what}: no complete answer from the API within {self._deadline:g}s "
                    "(api.request_deadline)"
                ) from exc
            except httpx.TimeoutException as exc:
                self._metrics.api_requests.labels("error").inc()
                raise ApiTransportError(
                    f"{what}: no answer from the API within {self._timeout:g}s"
                ) from exc
            except httpx.HTTPError as exc:
                self._metrics.api_requests.labels("error").inc()
                raise ApiTransportError(
                    f"{what}: the connection to the API failed ({type(exc).__name__}: {exc})"
                ) from exc
            self.last_round_trip = time.monotonic() - sent
            if response.status_code == 429:
                # Counted while this request still holds its place: what was in flight
                # when the API said "too many", this one included, is what halves.
                self.limiter.throttled()
        self._metrics.api_requests.labels(str(response.status_code)).inc()
        headers = response.headers
        self.limiter.observe_quota(
            headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
        )
        if response.is_success:
            self.limiter.succeeded()
            return body, headers
        # An error body that echoes a secret (the key, most likely) must not carry it into
        # the exception: masked here, by the one redaction, before anything reads it.
        body = redact(body.decode("utf-8", "replace")).encode()
        error = classify_api_response(response.status_code, headers, body, what=what)
        if response.status_code == 429:
            # The limit is per organization: every stream on this key waits, and fewer
            # requests go at once until the API has accepted some again.
            self.limiter.pause(error.retry_after or PAUSE_WITHOUT_RETRY_AFTER)
        raise error


def _evaluated_no_later_than(date: str | None, duration: float) -> int | None:
    """A lower bound for when the server evaluated a request, in the server's clock."""
    if not date:
        return None
    try:
        sent = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if sent.tzinfo is None:
        return None
    # The header has whole seconds and servers refresh it about once a second; the request
    # itself took `duration`.
    margin = 2.0 + duration
    evaluated = int((sent.timestamp() - margin) * NS_PER_SECOND)
    # A Date header from year 1600 or 9999 says nothing usable about the API's clock.
    return evaluated if MIN_NS <= evaluated <= MAX_NS else None
