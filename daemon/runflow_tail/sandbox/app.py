"""The Runflow API as the sandbox serves it: routes, auth, errors, faults and pagination."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runflow_tail.filters import FilterSyntaxError, parse_filter
from runflow_tail.pacing import parse_retry_after
from runflow_tail.sandbox.control import control_routes
from runflow_tail.sandbox.cursors import (
    Cursor,
    CursorError,
    decode_cursor,
    encode_cursor,
    query_fingerprint,
)
from runflow_tail.sandbox.options import (
    DEFAULT_LIMIT,
    DEFAULT_USER_ID,
    MAX_LIMIT,
    RUN_LOGS_CAP,
    CursorForm,
)
from runflow_tail.sandbox.responses import (
    RAW_SEND_SCOPE_KEY,
    DropConnection,
    default_code,
    error_response,
    json_response,
    retry_after_header,
    truncated,
)
from runflow_tail.sandbox.store import Entry, EntryFilter, SortError, parse_sort, sort_values
from runflow_tail.sandbox.world import RateDecision, World

Handler = Callable[[Request], Awaitable[Response]]
RUN_STATUSES = (
    "queued",
    "dispatching",
    "running",
    "succeeded",
    "failed",
    "canceled",
    "partial_succeeded",
)
ARRIVED_SCOPE_KEY = "runflow_tail.sandbox.arrived"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class _InvalidRequest(Exception):
    """A request the API refuses; carries the response to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class SandboxAPI:
    """The /v1 endpoints over one World."""

    def __init__(self, world: World) -> None:
        self.world = world

    # -- plumbing ---------------------------------------------------------------------------

    def error(self, status: int, code: str, message: str, **kwargs: Any) -> Response:
        return error_response(self.world.options.error_style, status, code, message, **kwargs)

    def guarded(self, handler: Handler) -> Handler:
        """Auth, organization and rate limit before ``handler``; rate headers after it."""

        async def endpoint(request: Request) -> Response:
            options = self.world.options
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return self.error(401, "UNAUTHORIZED", "missing 'Authorization: Bearer <key>'")
            if not hmac.compare_digest(token.encode(), options.api_key.encode()):
                return self.error(401, "UNAUTHORIZED", "the API key is not valid")
            organization = request.headers.get("x-organization-id")
            if (
                organization is not None
                and options.organization_id is not None
                and organization != options.organization_id
            ):
                message = f"the API key has no access to organization {organization}"
                return self.error(403, "PERMISSION_DENIED", message)
            arrived = request.scope.get(ARRIVED_SCOPE_KEY, time.monotonic())
            waiting = self.world.retry_after_remaining(token, arrived)
            if waiting > 0 and options.enforce_retry_after:
                # A rate limiter refuses whoever comes back before the time it gave.
                self.world.stats.requests_before_retry_after += 1
                headers = {"Retry-After": str(math.ceil(waiting))}
                message = f"retry after {waiting:.3f}s, as told"
                return self.error(429, "RATE_LIMITED", message, headers=headers)
            decision = self.world.take_request(token)
            if not decision.allowed:
                headers = retry_after_header(options.retry_after)
                headers.update(self._rate_headers(decision))
                response = self.error(429, "RATE_LIMITED", "too many requests", headers=headers)
            else:
                response = await handler(request)
                response.headers.update(self._rate_headers(decision))
            if response.status_code == 429:
                told = parse_retry_after(response.headers.get("retry-after"))
                if told is not None:
                    self.world.note_retry_after(token, told)
            return response

        return endpoint

    def _rate_headers(self, decision: RateDecision) -> dict[str, str]:
        options = self.world.options
        if not options.rate_limit_headers or options.rate_limit_per_second is None:
            return {}
        return {
            "X-RateLimit-Limit": str(decision.limit),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-Reset": f"{decision.reset_seconds:.3f}",
        }

    # -- endpoints --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def me(self, request: Request) -> Response:
        options = self.world.options
        return json_response(
            {
                "id": DEFAULT_USER_ID,
                "email": options.user_email,
                "organization_id": options.organization_id,
            }
        )

    async def statuses(self, request: Request) -> Response:
        return json_response({"items": [{"code": code} for code in RUN_STATUSES]})

    async def get_run(self, request: Request) -> Response:
        run = self.world.runs.get(request.path_params["run_id"])
        if run is None:
            return self.error(404, "RUN_NOT_FOUND", "no such run")
        entries = self.world.visible_run_entries(run.id, RUN_LOGS_CAP)
        # The run as it is now, with its own log entries, each carrying "run": null.
        doc = {key: value for key, value in run.doc.items() if key != "logs"}
        chunks: list[bytes] = [msgspec.json.encode(doc)[:-1], b',"logs":[']
        for index, entry in enumerate(entries):
            chunks.extend((b"," if index else b"", entry.head[:-1], b',"run":null}'))
        chunks.append(b"]}")
        return json_response(b"".join(chunks))

    async def get_entry(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        entry = self.world.store.by_id.get(request.path_params["log_id"])
        if (
            entry is None
            or entry.visible_at > self.world.now()
            or (run_id != "any" and entry.run_id != run_id)
        ):
            return self.error(404, "LOG_NOT_FOUND", "no such log entry")
        fields = _fields(request.query_params.get("fields"))
        chunks: list[bytes] = []
        _join_entries(chunks, [entry], fields)
        return json_response(b"".join(chunks))

    async def list_logs(self, request: Request) -> Response:
        world = self.world
        world.stats.logs_requests += 1
        world.stats.recent_logs_queries.append(dict(request.query_params))
        fault = world.next_fault()
        if fault is not None and fault.kind == "drop":
            world.stats.by_status["dropped"] += 1
            return DropConnection()
        if fault is not None and fault.kind == "error":
            code = fault.code or default_code(fault.status)
            message = fault.message or f"sandbox fault: {fault.status} {code}"
            headers = retry_after_header(fault.retry_after)
            return self.error(fault.status, code, message, headers=headers)
        try:
            response = self._page(request)
        except _InvalidRequest as invalid:
            response = invalid.response
        if fault is not None and fault.kind == "malformed":
            return truncated(bytes(response.body) if response.status_code == 200 else b"")
        return response

    # -- pagination -------------------------------------------------------------------------

    def _page(self, request: Request) -> Response:
        world = self.world
        options = world.options
        run_id = request.path_params["run_id"]
        if run_id != "any" and run_id not in world.runs:
            raise _InvalidRequest(self.error(404, "RUN_NOT_FOUND", f"no run {run_id}"))
        params = request.query_params
        limit = self._limit(params.get("limit"))
        try:
            sort = parse_sort(params.get("sort_by"))
        except SortError as exc:
            raise self._invalid_param("sort_by", str(exc)) from exc
        from_prev = self._boolean("from_prev", params.get("from_prev"))
        q = params.get("q") or ""
        entry_filter = self._filter(q)
        fields = _fields(params.get("fields"))
        fingerprint = query_fingerprint(run_id, q, sort)
        now = world.now()
        cursor: Cursor | None = None
        if params.get("pq"):
            try:
                cursor = decode_cursor(
                    params["pq"], fingerprint=fingerprint, now_ns=now, ttl=options.cursor_ttl
                )
            except CursorError as exc:
                raise _InvalidRequest(self.error(400, exc.code, str(exc))) from exc
        backwards = from_prev if from_prev is not None else bool(cursor and cursor.backwards)
        after = cursor.key if cursor else None
        page = world.store.query(
            run_id=None if run_id == "any" else run_id,
            entry_filter=entry_filter,
            sort=sort,
            after=after,
            backwards=backwards,
            limit=limit,
            now=now,
        )
        items = page.items

        def key_of(entry: Entry) -> list[Any]:
            return sort_values(entry, None, sort)

        if backwards:
            next_key = key_of(items[-1]) if items and after is not None else after
            prev_key = key_of(items[0]) if items and page.has_more else None
        else:
            next_key = key_of(items[-1]) if items and page.has_more else None
            prev_key = (key_of(items[0]) if items else after) if after is not None else None
        links = _Links(request, run_id, options.cursor_form)
        first = links.render(Cursor(None, fingerprint, now)) if options.emit_first else None
        next_link = None if next_key is None else links.render(Cursor(next_key, fingerprint, now))
        stuck = options.fault_stuck_cursor
        if stuck is not None and cursor is not None and next_key is not None:
            # The cursor followed comes back as the next one (or a new one for the same
            # place): a client that trusts it walks in place forever.
            issued = cursor.issued_ns if stuck == "same" else now
            next_link = links.render(Cursor(cursor.key, fingerprint, issued, cursor.backwards))
        prev_link = None
        if prev_key is not None:
            prev_link = links.render(Cursor(prev_key, fingerprint, now, backwards=True))
        names = ("next", "previous") if options.cursor_field == "next" else ("next_pq", "prev_pq")
        tail = {"first": first, names[0]: next_link, names[1]: prev_link}
        chunks: list[bytes] = [b'{"items":[']
        _join_entries(chunks, items, fields)
        chunks.append(b"],")
        chunks.append(msgspec.json.encode(tail)[1:])
        return json_response(b"".join(chunks))

    def _limit(self, raw: str | None) -> int:
        if raw is None:
            return DEFAULT_LIMIT
        try:
            limit = int(raw)
        except ValueError:
            raise self._invalid_param("limit", f"limit must be an integer, got {raw!r}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise self._invalid_param("limit", f"limit must be between 1 and {MAX_LIMIT}")
        return limit

    def _boolean(self, name: str, raw: str | None) -> bool | None:
        if raw is None or raw.lower() in _FALSE:
            return None if raw is None else False
        if raw.lower() in _TRUE:
            return True
        raise self._invalid_param(name, f"{name} must be true or false, got {raw!r}")

    def _filter(self, q: str) -> EntryFilter | None:
        if not q.strip():
            return None
        try:
            entry_filter = parse_filter(q)
        except FilterSyntaxError as exc:
            raise _InvalidRequest(self.error(400, "INVALID_FILTER", str(exc))) from exc
        if self.world.options.reject_timestamp_range and entry_filter.has_range_on("timestamp"):
            message = "range comparisons on timestamp are not supported in q"
            raise _InvalidRequest(self.error(400, "UNSUPPORTED_FILTER", message))
        return entry_filter

    def _invalid_param(self, name: str, message: str) -> _InvalidRequest:
        errors = [{"loc": ["query", name], "msg": message, "type": "value_error"}]
        return _InvalidRequest(self.error(422, "VALIDATION_ERROR", message, errors=errors))


class _Links:
    """Renders cursors in the configured form: a bare token, a query string, or a URL."""

    _KEPT = ("limit", "q", "sort_by", "fields")

    def __init__(self, request: Request, run_id: str, form: CursorForm) -> None:
        self.form = form
        self.base = str(request.base_url).rstrip("/")
        self.run_id = run_id
        given = request.query_params
        self.params = {name: given[name] for name in self._KEPT if name in given}

    def render(self, cursor: Cursor) -> str:
        token = encode_cursor(cursor)
        if self.form == "token":
            return token
        # The whole query travels with the cursor, so the link fetches the page on its own.
        params: dict[str, str] = {"pq": token} if cursor.key is not None else {}
        params["limit"] = str(DEFAULT_LIMIT)
        params.update(self.params)
        if cursor.backwards:
            params["from_prev"] = "true"
        query = urlencode(params)
        if self.form == "query":
            return query
        return f"{self.base}/v1/runs/{self.run_id}/logs?{query}"


def _fields(raw: str | None) -> frozenset[str] | None:
    if raw is None:
        return None
    names = frozenset(name.strip() for name in raw.split(",") if name.strip())
    return names or None


def _join_entries(chunks: list[bytes], entries: list[Entry], fields: frozenset[str] | None) -> None:
    for index, entry in enumerate(entries):
        if index:
            chunks.append(b",")
        piece = entry.parts() if fields is None else entry.projected(fields)
        if isinstance(piece, bytes):
            chunks.append(piece)
        else:
            chunks.extend(piece)


class _Instrumented:
    """Counts API requests and statuses, adds latency, and keeps the server's raw ``send``
    in the scope so a dropped-connection fault can reach the transport."""

    def __init__(self, app: ASGIApp, world: World) -> None:
        self.app = app
        self.world = world

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        world = self.world
        stats = world.stats
        stats.requests_total += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            scope[RAW_SEND_SCOPE_KEY] = send
            # Latency stands for the network: a request counts as arrived before it.
            scope[ARRIVED_SCOPE_KEY] = time.monotonic()
            if world.options.latency:
                await anyio.sleep(world.options.latency)

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    stats.by_status[str(message["status"])] += 1
                await send(message)

            await self.app(scope, receive, counting_send)
        finally:
            stats.in_flight -= 1


def create_app(world: World) -> ASGIApp:
    """The sandbox as an ASGI app: the /v1 API plus the /_sandbox control endpoints."""
    api = SandboxAPI(world)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return api.error(status, default_code(status), str(message))

    routes = [
        Route("/v1/health", api.health),
        Route("/v1/readiness", api.health),
        Route("/v1/auth/me", api.guarded(api.me)),
        Route("/v1/runs/statuses", api.guarded(api.statuses)),
        Route("/v1/runs/{run_id}/logs", api.guarded(api.list_logs)),
        Route("/v1/runs/{run_id}/logs/{log_id}", api.guarded(api.get_entry)),
        Route("/v1/runs/{run_id}", api.guarded(api.get_run)),
        *control_routes(world),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.world = world
    return _Instrumented(app, world)
