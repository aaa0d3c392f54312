"""What the sandbox plays: every variant the Runflow docs leave open, and every fault.

Each field has a default that behaves like the documented API with no faults, so
``SandboxOptions()`` is a quiet, well-behaved Runflow. All fields can also be changed at
runtime through ``PATCH /_sandbox/options`` (validated by this same model).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_API_KEY = "rf_sandbox_0123456789abcdef"
DEFAULT_ORGANIZATION_ID = "0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"
DEFAULT_USER_ID = "0190b3a4-0000-7000-8000-00000000a11c"
DEFAULT_USER_EMAIL = "sandbox@example.com"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
RUN_LOGS_CAP = 100

CursorField = Literal["next", "next_pq"]
CursorForm = Literal["token", "query", "url"]
ErrorStyle = Literal["flat", "nested", "text"]
TimestampStyle = Literal["z", "offset", "mixed"]
RetryAfter = float | Literal["date"] | None
RunSchema = Literal["current", "older"]


class SandboxOptions(BaseModel):
    """The sandbox's behaviour; unknown names are rejected so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- identity -------------------------------------------------------------------------
    api_key: str = Field(
        DEFAULT_API_KEY,
        min_length=1,
        description="The one API key accepted as 'Authorization: Bearer <key>'.",
    )
    organization_id: str | None = Field(
        DEFAULT_ORGANIZATION_ID,
        description=(
            "The key's organization; a request whose X-Organization-Id header differs gets "
            "403 PERMISSION_DENIED. None accepts any header."
        ),
    )
    user_email: str = Field(DEFAULT_USER_EMAIL, description="Email reported by /v1/auth/me.")

    # -- documented-but-open variants -----------------------------------------------------
    cursor_field: CursorField = Field(
        "next",
        description=(
            "Names of the page cursors: 'next' gives next/previous (the API reference), "
            "'next_pq' gives next_pq/prev_pq (one concept page)."
        ),
    )
    cursor_form: CursorForm = Field(
        "token",
        description=(
            "What a cursor string holds: 'token' (the bare pq value), 'query' (a query string "
            "carrying pq= and the other parameters) or 'url' (a whole URL to GET as-is)."
        ),
    )
    emit_first: bool = Field(
        True, description="Whether responses carry a 'first' cursor (False: always null)."
    )
    reject_timestamp_range: bool = Field(
        False,
        description="Answer 400 UNSUPPORTED_FILTER when q holds a range on timestamp.",
    )
    cursor_ttl: float | None = Field(
        None,
        gt=0,
        description="Seconds a cursor stays valid, then 400 CURSOR_EXPIRED; None: forever.",
    )
    error_style: ErrorStyle = Field(
        "flat",
        description=(
            "Error body shape: 'flat' {code,message,errors}, 'nested' {error:{code,message}}, "
            "or 'text' (a plain-text body, like a proxy)."
        ),
    )
    timestamp_style: TimestampStyle = Field(
        "mixed",
        description=(
            "How new entries write their timestamp: 'z' (...Z), 'offset' (...+00:00), or "
            "'mixed' (per entry Z or +00:00 with 0/3/6/9 fractional digits)."
        ),
    )
    canceled_spelling: Literal["canceled", "cancelled"] = Field(
        "canceled", description="Spelling of the canceled run status (older docs: 'cancelled')."
    )
    failure_stage_key: Literal["failure_stage_code", "failure_stage"] = Field(
        "failure_stage_code", description="Key under which a run carries its failure stage."
    )
    rate_limit_headers: bool = Field(
        False,
        description="Send X-RateLimit-Limit/-Remaining/-Reset on every API response (older docs).",
    )

    # -- the run object: the reference shows two versions ---------------------------------
    run_schema: RunSchema = Field(
        "current",
        description=(
            "Which version of the run object the reference shows to serve (for runs started "
            "after a change): 'current' (no top-level status_code; failure_code, "
            "failure_message, model, ...) or 'older' (status_code, target_type, source_code)."
        ),
    )

    # -- load and faults --------------------------------------------------------------------
    latency: float = Field(0.0, ge=0, description="Seconds added to every /v1 API request.")
    rate_limit_per_second: float | None = Field(
        None,
        gt=0,
        description="Requests per second per API key, then 429 RATE_LIMITED; None: no limit.",
    )
    retry_after: RetryAfter = Field(
        None,
        description=(
            "Retry-After on 429s: None (no header, as newer docs say), a number of seconds, "
            "or 'date' (an HTTP-date 1-2 seconds ahead)."
        ),
    )
    enforce_retry_after: bool = Field(
        True,
        description=(
            "Refuse (429 again) and count every request that arrives before the end of a "
            "Retry-After the API gave, as rate limiters do."
        ),
    )
    retry_after_crossing: float = Field(
        0.05,
        ge=0,
        description=(
            "Seconds after a 429 went out during which an arriving request is taken to have "
            "crossed it on the way (sent before the client could know), not to be early."
        ),
    )
    fault_429_every: int | None = Field(
        None,
        ge=1,
        description="Every Nth /logs request gets 429 (with retry_after); None: never.",
    )
    fault_429_rate: float = Field(
        0.0, ge=0, le=1, description="Probability that a /logs request gets 429 RATE_LIMITED."
    )
    fault_5xx_rate: float = Field(
        0.0, ge=0, le=1, description="Probability that a /logs request gets a 5xx error."
    )
    fault_5xx_statuses: list[int] = Field(
        default_factory=lambda: [500, 502, 503, 504],
        min_length=1,
        description="Statuses drawn from for random 5xx faults.",
    )
    fault_malformed_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Probability that a /logs request gets 200 with a truncated JSON body.",
    )
    fault_drop_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Probability that a /logs request has its connection closed, unanswered.",
    )
    fault_seed: int = Field(0, description="Seed of the random generator that draws faults.")
    fault_stuck_cursor: Literal["same", "fresh"] | None = Field(
        None,
        description=(
            "A page cursor that never advances: 'same' answers a followed cursor with that "
            "same cursor again, 'fresh' with a new cursor for the same position (the same "
            "entries); None: cursors advance."
        ),
    )
    late_delay: float = Field(
        0.0,
        ge=0,
        description="New entries become visible this many seconds after their own timestamp.",
    )

    # -- the simulated world --------------------------------------------------------------
    world_rate: float = Field(
        0.0,
        ge=0,
        description="Runs the simulator starts per second (on average); 0 disables it.",
    )
    world_seed: int = Field(0, description="Seed of the world's ids, texts and choices.")
    world_run_seconds: float = Field(
        4.0, gt=0, description="Typical wall-clock length of a simulated run, in seconds."
    )
    world_lines_per_run: int = Field(
        8, ge=1, le=1000, description="Typical number of log lines a simulated run writes."
    )
    world_fail_ratio: float = Field(
        0.2, ge=0, le=1, description="Share of simulated runs that end failed."
    )
    world_cancel_ratio: float = Field(
        0.05, ge=0, le=1, description="Share of simulated runs that end canceled."
    )
    world_partial_ratio: float = Field(
        0.05, ge=0, le=1, description="Share of simulated runs that end partial_succeeded."
    )
    world_unusual_level_rate: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Share of simulated lines at an undocumented level (trace, notice, critical).",
    )

    @model_validator(mode="after")
    def _ratios_fit(self) -> SandboxOptions:
        if self.world_fail_ratio + self.world_cancel_ratio + self.world_partial_ratio > 1:
            raise ValueError("world_fail_ratio + world_cancel_ratio + world_partial_ratio > 1")
        faults = (
            self.fault_429_rate
            + self.fault_5xx_rate
            + self.fault_malformed_rate
            + self.fault_drop_rate
        )
        if faults > 1:
            raise ValueError("the fault_*_rate options add up to more than 1")
        return self

    def updated(self, changes: dict[str, Any]) -> SandboxOptions:
        """A validated copy with ``changes`` applied (raises pydantic.ValidationError)."""
        return SandboxOptions.model_validate({**self.model_dump(), **changes})


class ScriptedFault(BaseModel):
    """One deterministic fault for the next /logs request.

    ``{"status": 429, "retry_after": "2"}``, ``{"status": 503}``, ``{"kind": "malformed"}``,
    ``{"kind": "drop"}``, ``{"status": 400, "code": "CURSOR_EXPIRED"}``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["error", "malformed", "drop"] = Field(
        "error", description="An error response, a 200 with a garbled body, or a dropped connection"
    )
    status: int = Field(503, ge=400, le=599, description="Status of an error fault.")
    code: str | None = Field(None, description="Error code; defaults by status.")
    message: str | None = Field(None, description="Error message; a default names the fault.")
    retry_after: str | float | None = Field(
        None, description="Retry-After header: seconds, 'date' (1-2 s ahead) or a raw value."
    )
