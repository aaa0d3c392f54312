"""The configuration model: what every option means, its default, and what is valid.

Loading (sources, precedence, error messages) lives in ``config.load``; this module
only describes the shape, so a reader finds every option in one place. The ``[api]``
section is ``api.settings.ApiSettings``, the ``[[alerts]]`` rules are ``config.alerts``,
and each sink type's options live with the sink (``sinks/``): the config is the factory.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, SecretStr, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from runflow_tail.api.settings import ApiSettings
from runflow_tail.config.alerts import (
    ALERT_ENGINE_CONSUMER,
    AlertRule,
    alert_stream,
    check_alert_references,
)
from runflow_tail.filters import parse_filter
from runflow_tail.models import ByteSize, Duration, FrozenModel, PositiveDuration
from runflow_tail.observability import LogFormat, LogLevel
from runflow_tail.sinks.registry import (
    BUILTIN,
    SinkConfig,
    SinkTypes,
    sink_config_union,
)
from runflow_tail.sinks.stdout import StdoutSinkConfig
from runflow_tail.times import TimeValueError, parse_duration, validate_start

DEFAULT_FIELDS = ("id", "run_id", "level_code", "message", "timestamp", "meta")
REQUIRED_FIELDS = ("id", "timestamp")
DEFAULT_PAGE_SIZE = 500
DEFAULT_POLL_INTERVAL = 2.0
DEFAULT_LOOKBACK = 5.0
DEFAULT_STREAM_NAME = "all"
DEFAULT_SINK_NAME = "stdout"
DEFAULT_MAX_JOURNAL_BYTES = 1024**3
DEFAULT_DEDUP_WINDOW = 600.0
DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_BACKFILL_PARALLELISM = 16
DEFAULT_BACKFILL_AFTER = 10.0
DEFAULT_LEASE_TTL = 15.0
POSTGRES_EXTRA_HINT = "pip install 'runflow-tail[postgres]'"

_STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RUN_ID = re.compile(r"any|[0-9A-Za-z][0-9A-Za-z_-]{0,127}")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class StateSettings(FrozenModel):
    dir: Path | None = None
    """Where the journal lives; default $STATE_DIRECTORY, else ~/.local/state/runflow-tail."""
    max_journal_bytes: ByteSize = DEFAULT_MAX_JOURNAL_BYTES
    """When the journal reaches this size, polling pauses until sinks catch up."""
    dedup_window: PositiveDuration = DEFAULT_DEDUP_WINDOW
    """Delivered entries stay this long (by timestamp) so re-reads are recognised."""
    backend: Literal["sqlite", "postgres"] = "sqlite"
    """Where the state lives: "sqlite" (a file in ``dir``, one daemon) or "postgres" (a
    database several daemons share, each stream and sink leased to one of them)."""
    dsn: SecretStr | None = None
    """backend = "postgres": a libpq connection string or URI, e.g.
    ``postgresql://tail@db.internal:5432/runflow``. Unset (and no ``dsn_file``): libpq's
    PG* environment variables (PGHOST, PGUSER, PGPASSWORD, ...) and ~/.pgpass."""
    dsn_file: Path | None = None
    """A file holding the DSN (a mounted secret), instead of ``dsn``."""
    pg_schema: str = "runflow_tail"
    """The PostgreSQL schema the tables live in (created if missing): daemons that share
    one share state; another schema is another, independent set of daemons."""
    member: str | None = None
    """This daemon's name among those sharing the database (default: host name and pid);
    a sink's ``pin`` names it."""
    lease_ttl: PositiveDuration = Field(DEFAULT_LEASE_TTL, ge=0.5, le=600)
    """How long a stream's or sink's lease lasts without renewal: another daemon takes
    over a dead one's work after at most this (plus a poll interval). Renewed every third
    of it; a daemon that cannot renew stops that work before its lease can expire."""

    @field_validator("pg_schema")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        if not _SCHEMA_NAME.fullmatch(value):
            raise ValueError(
                "expected 1-63 lowercase letters, digits or '_', not starting with a digit"
            )
        return value

    @field_validator("member")
    @classmethod
    def _member_name(cls, value: str | None) -> str | None:
        if value is not None and not _MEMBER_NAME.fullmatch(value):
            raise ValueError("expected 1-64 letters, digits, '_', '.', '-' or ':'")
        return value

    @model_validator(mode="after")
    def _postgres_ready(self) -> StateSettings:
        if self.dsn is not None and self.dsn_file is not None:
            raise ValueError("set state.dsn or state.dsn_file, not both")
        if self.backend == "postgres" and importlib.util.find_spec("psycopg") is None:
            raise ValueError(
                f"backend = 'postgres' needs the psycopg package: {POSTGRES_EXTRA_HINT}"
            )
        return self


class ServerSettings(FrozenModel):
    """The health, readiness and metrics endpoint."""

    enabled: bool = True
    listen: str = DEFAULT_LISTEN
    """host:port for /healthz, /readyz and /metrics ("[::1]:9464" for IPv6)."""
    ready_poll_multiplier: float = Field(3.0, ge=1)
    """/readyz fails once a stream has not polled successfully for this many intervals."""
    ready_sink_failing_after: PositiveDuration = 60.0
    """/readyz fails once a sink has been failing for this long."""
    startup_timeout: PositiveDuration = 30.0
    """systemd: report READY=1 at the latest after this long, even if a stream has not
    polled successfully yet (with a STATUS saying which and why)."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value


def split_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464")
    return host, int(port)


class LogSettings(FrozenModel):
    level: LogLevel = "info"
    format: LogFormat = "auto"


class StreamSettings(FrozenModel):
    name: str = DEFAULT_STREAM_NAME
    run_id: str = "any"
    query: str = ""
    fields: tuple[str, ...] = DEFAULT_FIELDS
    """Top-level fields to fetch; an empty list fetches whole entries (with the `run`)."""
    page_size: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=500)
    poll_interval: PositiveDuration = DEFAULT_POLL_INTERVAL
    start_at: str = "now"
    lookback: Duration = DEFAULT_LOOKBACK
    strategy: Literal["auto", "range", "cursor"] = "auto"
    backfill_parallelism: int = Field(DEFAULT_BACKFILL_PARALLELISM, ge=1, le=32)
    """When far behind, fetch this many time slices at once (range strategy; 1 = never)."""
    backfill_after: PositiveDuration = DEFAULT_BACKFILL_AFTER
    """How far behind (watermark vs now) a stream must be to backfill in parallel."""
    sinks: tuple[str, ...] | None = None

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _STREAM_NAME.fullmatch(value):
            raise ValueError("expected 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("run_id")
    @classmethod
    def _run_id_shape(cls, value: str) -> str:
        if not _RUN_ID.fullmatch(value):
            raise ValueError("expected a run id (UUID) or 'any'")
        return value

    @field_validator("query")
    @classmethod
    def _query_parses(cls, value: str) -> str:
        parse_filter(value)
        return value

    @field_validator("fields", mode="before")
    @classmethod
    def _fields_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("fields")
    @classmethod
    def _fields_include_identity(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # id and timestamp are what the journal keys on; fetching them is not optional.
        if not value:
            return value
        return tuple(dict.fromkeys((*value, *REQUIRED_FIELDS)))

    @field_validator("start_at")
    @classmethod
    def _start_parses(cls, value: str) -> str:
        try:
            return validate_start(value)
        except ValueError as exc:
            raise ValueError(
                f"expected 'now', 'beginning', an RFC 3339 timestamp or a relative time "
                f"like '-15m' ({exc})"
            ) from exc


def _default_streams() -> tuple[StreamSettings, ...]:
    return (StreamSettings(),)


def _default_sinks() -> dict[str, SinkConfig]:
    return {DEFAULT_SINK_NAME: StdoutSinkConfig(type="stdout", format="json")}


class Settings(BaseSettings):
    """The whole configuration; build it with ``config.load.load_settings``."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    api: ApiSettings = ApiSettings()
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()
    server: ServerSettings = ServerSettings()
    streams: tuple[StreamSettings, ...] = Field(default_factory=_default_streams)
    sinks: dict[str, SinkConfig] = Field(default_factory=_default_sinks)
    alerts: tuple[AlertRule, ...] = ()
    """Alert rules ([[alerts]]); see config/alerts.py."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader merges file, environment and flags itself so it can say which
        # source a bad value came from; the model only validates the merged result.
        return (init_settings,)

    @field_validator("streams")
    @classmethod
    def _at_least_one_stream(cls, value: tuple[StreamSettings, ...]) -> tuple[StreamSettings, ...]:
        # A validator rather than min_length: pydantic reports min_length even when the
        # list is only short because an item failed, which reads as a second problem.
        if not value:
            raise ValueError("expected at least one stream ([[streams]] table)")
        return value

    @model_validator(mode="after")
    def _names_resolve(self) -> Settings:
        alert_only = {sink.type for sink in self.sinks.values() if sink.alert_only}
        problems = cross_check(self.model_dump(), alert_only)
        if problems:
            raise PydanticCustomError(
                CROSS_CHECK_ERROR, "\n".join(problem.text() for problem in problems)
            )
        return self

    def sinks_for_stream(self, stream: StreamSettings) -> tuple[str, ...]:
        """Names of the sinks that receive this stream, honouring both sides' subscriptions
        (alert destinations receive alerts only)."""
        return tuple(
            name
            for name, sink in self.sinks.items()
            if (stream.sinks is None or name in stream.sinks)
            and (sink.streams is None or stream.name in sink.streams)
            and not self.receives_alerts_only(name)
        )

    def streams_for_sink(self, sink_name: str) -> tuple[str, ...]:
        """The journal streams a sink reads: its log streams, or an alert destination's
        internal stream ``alerts.<sink>``."""
        if sink_name in self.alert_destinations():
            return (alert_stream(sink_name),)
        return tuple(
            stream.name for stream in self.streams if sink_name in self.sinks_for_stream(stream)
        )

    def alert_destinations(self) -> tuple[str, ...]:
        """Sinks named by any alert rule, in first-mention order."""
        return tuple(dict.fromkeys(d for rule in self.alerts for d in rule.destinations))

    def receives_alerts_only(self, sink_name: str) -> bool:
        sink = self.sinks.get(sink_name)
        return sink_name in self.alert_destinations() or (sink is not None and sink.alert_only)

    def streams_for_rule(self, rule: AlertRule) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams if rule.streams is None or s.name in rule.streams)

    def subscriptions(self) -> dict[str, tuple[str, ...]]:
        """Who reads each journal stream (retention waits for exactly these): its sinks, the
        alert engine when a rule watches it, and each destination its alert stream."""
        watched = {name for rule in self.alerts for name in self.streams_for_rule(rule)}
        found = {
            stream.name: self.sinks_for_stream(stream)
            + ((ALERT_ENGINE_CONSUMER,) if stream.name in watched else ())
            for stream in self.streams
        }
        for destination in self.alert_destinations():
            found[alert_stream(destination)] = (destination,)
        return found


CROSS_CHECK_ERROR = "cross_check"
"""The pydantic error type of ``Settings``' cross-section check (the loader reports it itself)."""


class CrossProblem(NamedTuple):
    """A problem spanning sections: where (``loc``), the value there, and what is wrong."""

    loc: tuple[str | int, ...]
    value: Any
    message: str
    related: tuple[str | int, ...] | None = None
    """Another key the problem involves; its source is named when ``loc`` has none."""

    def text(self) -> str:
        return f"{dotted_key(self.loc)} = {self.value!r}: {self.message}"


def dotted_key(loc: Sequence[str | int]) -> str:
    """``("streams", 0, "name")`` as ``streams[0].name``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def cross_check(
    data: Mapping[str, Any], alert_only_types: Collection[str] = BUILTIN.alert_only()
) -> list[CrossProblem]:
    """Checks that span sections: unique stream names, stream/sink references, lookback,
    alert rules (``alert_only_types``: sink types that receive alerts only).

    Works on plain (unvalidated) data so the loader can report these problems together
    with every other one; a value it cannot read is skipped, since its own validation
    error is reported anyway.
    """
    problems: list[CrossProblem] = []
    streams_raw = data.get("streams", [{}])
    streams = (
        [s for s in streams_raw if isinstance(s, Mapping)]
        if isinstance(streams_raw, list | tuple)
        else []
    )
    sinks_raw = data.get("sinks", {DEFAULT_SINK_NAME: {}})
    sinks = sinks_raw if isinstance(sinks_raw, Mapping) else None
    first_index: dict[str, int] = {}
    for index, stream in enumerate(streams):
        name = stream.get("name", DEFAULT_STREAM_NAME)
        if not isinstance(name, str):
            continue
        if name in first_index:
            problems.append(
                CrossProblem(
                    ("streams", index, "name"),
                    name,
                    f"streams[{first_index[name]}] already has this name; stream names "
                    "must be unique",
                )
            )
        else:
            first_index[name] = index
    if sinks is not None:
        configured = ", ".join(sorted(sinks)) or "none"
        for index, stream in enumerate(streams):
            wanted = stream.get("sinks")
            if not isinstance(wanted, list | tuple):
                continue
            for sink in wanted:
                if isinstance(sink, str) and sink not in sinks:
                    problems.append(
                        CrossProblem(
                            ("streams", index, "sinks"),
                            list(wanted),
                            f"{sink!r} is not a configured sink; expected one of: {configured}",
                        )
                    )
        stream_names = ", ".join(sorted(first_index)) or "none"
        for name, sink_config in sinks.items():
            wanted = sink_config.get("streams") if isinstance(sink_config, Mapping) else None
            if not isinstance(wanted, list | tuple):
                continue
            for stream_name in wanted:
                if isinstance(stream_name, str) and stream_name not in first_index:
                    problems.append(
                        CrossProblem(
                            ("sinks", name, "streams"),
                            list(wanted),
                            f"{stream_name!r} is not a configured stream; expected one of: "
                            f"{stream_names}",
                        )
                    )
    problems += [
        CrossProblem(loc, value, message)
        for loc, value, message in check_alert_references(
            {**data, "sinks": sinks_raw}, list(first_index), alert_only_types
        )
    ]
    state = data.get("state")
    dedup_window = _seconds(
        state.get("dedup_window", DEFAULT_DEDUP_WINDOW)
        if isinstance(state, Mapping)
        else DEFAULT_DEDUP_WINDOW
    )
    for index, stream in enumerate(streams):
        lookback = _seconds(stream.get("lookback", DEFAULT_LOOKBACK))
        if lookback is not None and dedup_window is not None and lookback >= dedup_window:
            problems.append(
                CrossProblem(
                    ("streams", index, "lookback"),
                    stream.get("lookback", DEFAULT_LOOKBACK),
                    f"must be shorter than state.dedup_window ({dedup_window:g}s), which keeps "
                    f"delivered entries long enough to recognise re-reads (lookback is "
                    f"{lookback:g}s)",
                    related=("state", "dedup_window"),
                )
            )
    return problems


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return parse_duration(value)
    except TimeValueError:
        return None


@functools.cache
def settings_model(types: SinkTypes = BUILTIN) -> type[Settings]:
    """``Settings`` whose ``[sinks.NAME]`` accepts every type in ``types`` (plugins too)."""
    if types.models == BUILTIN.models:
        return Settings
    sinks: Any = dict[str, sink_config_union(types)]  # type: ignore[misc]
    model: type[Settings] = create_model(
        "Settings", __base__=Settings, sinks=(sinks, Field(default_factory=_default_sinks))
    )
    return model
