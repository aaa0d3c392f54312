"""What a sink is, and the options every sink shares.

A sink does one thing: ``send`` a batch to its destination, and ``aclose``. Batching,
retries, offsets, filtering and dead letters live once, in the delivery loop.
A sink signals failure by raising ``SinkRetryableError`` (try again later) or
``SinkRejectedError`` (this batch can never succeed); anything else it raises is
treated as retryable and logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import Field, field_validator

from runflow_tail.filters import parse_filter
from runflow_tail.models import ByteSize, Duration, Entry, FrozenModel, PositiveDuration

DEFAULT_MAX_EVENTS = 500
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


@runtime_checkable
class Sink(Protocol):
    async def send(self, batch: Sequence[Entry]) -> None: ...

    async def aclose(self) -> None: ...


class BatchSettings(FrozenModel):
    """How the delivery loop groups entries before one ``send``."""

    max_events: int = Field(DEFAULT_MAX_EVENTS, ge=1, le=100_000)
    max_bytes: ByteSize = DEFAULT_MAX_BYTES
    max_wait: Duration = Field(0.0, le=3600)
    """How long to wait for a fuller batch once one entry is ready (0 = send at once)."""


class SinkConfigBase(FrozenModel):
    """Options every sink type accepts; each type subclasses it with ``type: Literal[...]``."""

    type: str
    match: str = ""
    """Only entries matching this expression (the `q` language) reach the sink."""
    streams: tuple[str, ...] | None = None
    """Stream names this sink subscribes to (default: every stream)."""
    batch: BatchSettings | bool = BatchSettings()
    """Batch limits, or `false` to send entries one at a time."""
    max_retry_duration: Duration | None = None
    """Give up on a failing batch after this long and dead-letter it (default: never)."""
    backoff_initial: PositiveDuration = 1.0
    backoff_max: PositiveDuration = 32.0
    """Retries back off exponentially with full jitter between these (Retry-After wins)."""
    pin: str | None = None
    """With state.backend = "postgres": deliver only on the daemon whose state.member, or
    whose host name, is this (a file sink writes on whichever daemon delivers it)."""

    stable_batches: ClassVar[bool] = False
    """Whether an interrupted batch must be re-sent with exactly the same entries (so that
    idempotency keys derived from it stay the same across restarts)."""
    alert_only: ClassVar[bool] = False
    """Whether this type only ever receives alerts (chat and pager destinations), never
    log entries: a stream cannot route to it, and it cannot subscribe to streams."""

    def batching(self) -> BatchSettings:
        if isinstance(self.batch, BatchSettings):
            return self.batch
        if self.batch:
            default = type(self).model_fields["batch"].default
            return default if isinstance(default, BatchSettings) else BatchSettings()
        return BatchSettings(max_events=1)

    @field_validator("batch")
    @classmethod
    def _batch_keeps_type_defaults(cls, value: BatchSettings | bool) -> BatchSettings | bool:
        """A ``[sinks.NAME.batch]`` table that sets some limits keeps this sink type's
        defaults for the others (a file sink's 10,000 events, a webhook's 1 s wait)."""
        default = cls.model_fields["batch"].default
        if isinstance(value, BatchSettings) and isinstance(default, BatchSettings):
            return default.model_copy(
                update={name: getattr(value, name) for name in value.model_fields_set}
            )
        return value

    @field_validator("match")
    @classmethod
    def _match_parses(cls, value: str) -> str:
        parse_filter(value)
        return value

    def needs_fields(self) -> bool:
        """Whether the sink decodes entries (``Entry.data()``) rather than ship their bytes.
        Then the delivery loop decodes each entry first and dead-letters, alone, one that
        cannot be decoded (invalid UTF-8, absurd nesting), so the sink never sees it."""
        return True

    def build(self, name: str) -> Sink:
        raise NotImplementedError(f"sink type {self.type!r} does not implement build()")
