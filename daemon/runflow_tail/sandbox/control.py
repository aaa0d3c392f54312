"""The /_sandbox control endpoints: tests (often in other processes) steer the sandbox here.

No auth: the sandbox listens on loopback and these endpoints exist to be scripted.
Errors here always use the flat envelope, whatever ``error_style`` the API plays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runflow_tail.sandbox.options import ScriptedFault
from runflow_tail.sandbox.responses import error_response, json_response
from runflow_tail.sandbox.simulator import play_instantly
from runflow_tail.sandbox.store import Entry
from runflow_tail.sandbox.world import EntryError, World
from runflow_tail.times import NS_PER_SECOND, TimeValueError, parse_instant

IDS_RETURNED_UP_TO = 1000
MAX_GENERATE = 5_000_000


class GenerateSpec(BaseModel):
    """``{"generate": {...}}``: many entries of one run, for bulk and burst scenarios."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=0, le=MAX_GENERATE, description="How many entries.")
    timestamp: str | None = Field(
        None, description="RFC 3339 of the first entry; None: the last entry is now."
    )
    step_ms: float = Field(
        0.0, ge=0, description="Milliseconds between entries; 0: one identical timestamp."
    )
    run_id: str | None = Field(None, description="Run of the entries; None: a new run.")
    level_code: str = Field("info", description="Level of every entry.")
    message: str = Field("entry {i}", description="Message; {i} is the entry's index.")
    visible_after: float = Field(0.0, ge=0, description="Seconds from now until visible.")
    full_run: bool = Field(True, description="Embed a full run snapshot (else a small stub).")


class ClustersSpec(BaseModel):
    """``{"clusters": {...}}``: history with long quiet gaps, as real organizations have.

    One burst of ``entries`` per age (seconds before now, oldest first or in any order),
    each burst ``step_ms`` apart entry to entry, each of its own run.
    """

    model_config = ConfigDict(extra="forbid")

    ages: list[float] = Field(
        min_length=1, description="Seconds before now at which each cluster starts."
    )
    entries: int = Field(1000, ge=1, le=MAX_GENERATE, description="Entries per cluster.")
    step_ms: float = Field(8.0, ge=0, description="Milliseconds between entries of a cluster.")
    full_run: bool = Field(False, description="Embed a full run snapshot (else a small stub).")


class AppendRequest(BaseModel):
    """``POST /_sandbox/entries``: partial entries, a generate spec, or sparse clusters."""

    model_config = ConfigDict(extra="forbid")

    entries: list[dict[str, Any]] | None = None
    generate: GenerateSpec | None = None
    clusters: ClustersSpec | None = None
    visible_after: float = Field(0.0, ge=0, description="For 'entries': seconds until visible.")

    @model_validator(mode="after")
    def _one_source(self) -> AppendRequest:
        given = [self.entries, self.generate, self.clusters]
        if sum(source is not None for source in given) != 1:
            raise ValueError("give exactly one of 'entries', 'generate' or 'clusters'")
        return self


class FaultsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: list[ScriptedFault]


class RunRequest(BaseModel):
    """``POST /_sandbox/runs``: a run played to its end at once, with its entries."""

    model_config = ConfigDict(extra="forbid")

    status_code: Literal["succeeded", "failed", "canceled", "cancelled", "partial_succeeded"] = (
        "failed"
    )
    run_id: str | None = None
    lines: int = Field(3, ge=0, le=10_000, description="Log lines between start and end.")
    failure_code: str = "NODE_TIMEOUT"
    failure_message: str = "Node {node} timed out after 30s"
    failure_stage_code: str = "node_execution"
    timestamp: str | None = Field(None, description="RFC 3339 of the first entry; None: now.")
    flow: int | None = Field(
        None, ge=0, description="Index of the world's flow the run belongs to; None: any."
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def _validation_error(exc: ValidationError | ValueError) -> Response:
    if isinstance(exc, ValidationError):
        errors = [
            {"loc": ["body", *exc_error["loc"]], "msg": exc_error["msg"], "type": exc_error["type"]}
            for exc_error in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in errors)
    else:
        errors, message = None, str(exc)
    return error_response("flat", 422, "VALIDATION_ERROR", message, errors=errors)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return msgspec.json.decode(raw)


def control_routes(world: World) -> list[Route]:
    def validated(handler: Callable[[Request], Awaitable[Response]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except (ValidationError, EntryError, TimeValueError) as exc:
                return _validation_error(exc)
            except (ValueError, msgspec.DecodeError) as exc:  # undecodable JSON body
                return error_response("flat", 400, "BAD_REQUEST", f"body is not JSON: {exc}")

        return endpoint

    async def get_options(request: Request) -> Response:
        return json_response(world.options.model_dump(mode="json"))

    async def patch_options(request: Request) -> Response:
        changes = await _body(request)
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object of option names and values")
        return json_response(world.update_options(changes).model_dump(mode="json"))

    async def add_faults(request: Request) -> Response:
        faults = FaultsRequest.model_validate(await _body(request))
        world.faults.extend(faults.queue)
        return json_response({"queued": len(faults.queue), "pending": len(world.faults)})

    async def list_faults(request: Request) -> Response:
        # A person exploring the control API with curl gets an answer, not a bare 405.
        return json_response(
            {
                "pending": [fault.model_dump(mode="json") for fault in world.faults],
                "usage": {
                    "POST": 'queue faults for the next /logs requests: {"queue": [{"status": '
                    '429, "retry_after": "2"}, {"status": 503}, {"kind": "malformed"}, '
                    '{"kind": "drop"}]}',
                    "DELETE": "drop the pending faults",
                    "PATCH /_sandbox/options": "random faults: fault_429_rate, fault_5xx_rate, "
                    "fault_malformed_rate, fault_drop_rate, fault_429_every, fault_stuck_cursor",
                },
            }
        )

    async def clear_faults(request: Request) -> Response:
        world.faults.clear()
        return json_response({"pending": 0})

    async def append_entries(request: Request) -> Response:
        spec = AppendRequest.model_validate(await _body(request))
        if spec.entries is not None:
            entries = world.append(spec.entries, visible_after=spec.visible_after)
        elif spec.clusters is not None:
            layout = spec.clusters
            entries = []
            for age in layout.ages:
                entries += world.generate(
                    layout.entries,
                    timestamp_ns=world.now() - int(age * NS_PER_SECOND),
                    step_ms=layout.step_ms,
                    message="clustered entry {i}",
                    full_run=layout.full_run,
                )
        else:
            generate = spec.generate
            assert generate is not None
            start = None if generate.timestamp is None else parse_instant(generate.timestamp)
            entries = world.generate(
                generate.count,
                timestamp_ns=start,
                step_ms=generate.step_ms,
                run_id=generate.run_id,
                level_code=generate.level_code,
                message=generate.message,
                visible_after=generate.visible_after,
                full_run=generate.full_run,
            )
        return json_response(_appended(entries))

    async def clear_entries(request: Request) -> Response:
        world.store.clear()
        world.runs.clear()
        return json_response({"entries_total": 0})

    async def create_run(request: Request) -> Response:
        spec = RunRequest.model_validate(await _body(request))
        start = None if spec.timestamp is None else parse_instant(spec.timestamp)
        failure = (spec.failure_code, spec.failure_message, spec.failure_stage_code)
        outcome = "canceled" if spec.status_code == "cancelled" else spec.status_code
        run = play_instantly(
            world,
            outcome=outcome,
            run_id=spec.run_id,
            lines=spec.lines,
            start_ns=start,
            failure=failure,
            flow=None if spec.flow is None else world.flows[spec.flow % len(world.flows)],
        )
        entries = sorted(world.store.by_run.get(run.id, ()), key=lambda entry: entry.key)
        # "outcome": how the run was played, whether or not its schema shows a status.
        played = {"run": run.doc, "outcome": outcome, "ids": [entry.id for entry in entries]}
        return json_response(played)

    async def stats(request: Request) -> Response:
        return json_response(world.stats_document())

    async def reset_stats(request: Request) -> Response:
        world.reset_stats()
        return json_response(world.stats_document())

    return [
        Route("/_sandbox/options", validated(get_options), methods=["GET"]),
        Route("/_sandbox/options", validated(patch_options), methods=["PATCH"]),
        Route("/_sandbox/faults", validated(list_faults), methods=["GET"]),
        Route("/_sandbox/faults", validated(add_faults), methods=["POST"]),
        Route("/_sandbox/faults", validated(clear_faults), methods=["DELETE"]),
        Route("/_sandbox/entries", validated(append_entries), methods=["POST"]),
        Route("/_sandbox/entries", validated(clear_entries), methods=["DELETE"]),
        Route("/_sandbox/runs", validated(create_run), methods=["POST"]),
        Route("/_sandbox/stats", validated(stats), methods=["GET"]),
        Route("/_sandbox/stats/reset", validated(reset_stats), methods=["POST"]),
    ]


def _appended(entries: list[Entry]) -> dict[str, Any]:
    if len(entries) <= IDS_RETURNED_UP_TO:
        return {"count": len(entries), "ids": [entry.id for entry in entries]}
    first = min(entries, key=lambda entry: entry.key)
    last = max(entries, key=lambda entry: entry.key)
    return {
        "count": len(entries),
        "first_timestamp": first.mapping()["timestamp"],
        "last_timestamp": last.mapping()["timestamp"],
    }
