"""The ``[[alerts]]`` section: what each rule watches, when it fires, where it sends.

A rule watches some streams (default: all), and fires for a *group* of entries (default:
per run) once ``threshold`` entries matching ``match`` arrived within ``window``; after
firing, the group stays quiet for ``cooldown``. With ``resolve_match`` a fired group is
an open incident until a later entry of the group matches it (PagerDuty gets a
``resolve``; chat destinations a "resolved" message). With ``digest`` the alerts of a
period go out as one message. ``destinations`` names sinks; each receives the rule's
alerts through its own internal stream ``alerts.<sink>``.

This is the rules' configuration only; ``alerts.rules`` compiles them for the engine.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from runflow_tail.filters import Filter, parse_filter
from runflow_tail.models import Duration, FrozenModel, PositiveDuration
from runflow_tail.run_object import run_paths, unknown_path_problem

ALERT_ENGINE_CONSUMER = "alerts:engine"
"""The engine's offset in ``sink_offsets``; the colon keeps it apart from sink names."""
ALERT_STREAM_PREFIX = "alerts."
DEFAULT_GROUP_BY = ("run_id",)
DEFAULT_COOLDOWN = 300.0
DEFAULT_LINES = 5
DEFAULT_TITLE = "{headline}"
DEFAULT_TEXT = "{detail}"
MAX_THRESHOLD = 10_000
MAX_LINES = 50

Severity = Literal["critical", "error", "warning", "info"]

TEMPLATE_FIELDS = frozenset(
    {
        "rule",
        "severity",
        "kind",
        "group",
        "group_key",
        "stream",
        "run",
        "line",
        "counts",
        "headline",
        "detail",
        "fired_at",
        "first_match_at",
        "last_match_at",
        "link",
    }
)
"""What ``title`` and ``text`` may refer to, e.g. ``{run.failure_message}``, ``{group.run_id}``."""
LINE_FIELDS = frozenset({"id", "stream", "timestamp", "level_code", "message", "run_id"})
COUNT_FIELDS = frozenset({"matches", "suppressed", "total"})

_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_LINK_START = re.compile(r"https?://|\{")


def alert_stream(destination: str) -> str:
    """The internal journal stream a destination sink reads its alerts from."""
    return ALERT_STREAM_PREFIX + destination


class AlertRule(FrozenModel):
    name: str
    """Unique; appears in every alert and keys the rule's state in the journal."""
    streams: tuple[str, ...] | None = None
    """Streams whose entries this rule watches (default: every stream)."""
    match: str
    """An expression in the filter language, e.g. `run.status_code:failed`."""
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    """Dotted fields that make a group, e.g. ["run_id"] or ["run.flow_id"]."""
    threshold: int = Field(1, ge=1, le=MAX_THRESHOLD)
    """Fire once this many entries of a group matched within `window`."""
    window: PositiveDuration | None = None
    """Required when threshold > 1; measured by the entries' own timestamps."""
    cooldown: Duration = DEFAULT_COOLDOWN
    """After firing, further matches of the group only count until this has passed (0: none)."""
    digest: PositiveDuration | None = None
    """Collect this rule's alerts for this long and send them as one message."""
    resolve_match: str = ""
    """A later entry of a fired group that matches this resolves the incident."""
    destinations: tuple[str, ...] = Field(min_length=1)
    """Sink names; each gets every alert of this rule."""
    severity: Severity = "error"
    title: str = DEFAULT_TITLE
    text: str = DEFAULT_TEXT
    lines: int = Field(DEFAULT_LINES, ge=0, le=MAX_LINES)
    """How many triggering log lines an alert quotes."""
    link: str = ""
    """A template for a link to the run, e.g. https://app.example.com/runs/{run.id}."""

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _RULE_NAME.fullmatch(value):
            raise ValueError("expected 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("match", "resolve_match")
    @classmethod
    def _expression_parses(cls, value: str) -> str:
        # FilterSyntaxError is a ValueError whose message names the column.
        check_run_fields(parse_filter(value).fields())
        return value

    @field_validator("match")
    @classmethod
    def _match_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "expected an expression, e.g. 'run.status_code:failed' or 'level_code:error' "
                "(an empty match would alert on every entry)"
            )
        return value

    @field_validator("group_by")
    @classmethod
    def _group_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not _FIELD_PATH.fullmatch(path):
                raise ValueError(f"{path!r} is not a field path; expected e.g. 'run_id'")
        check_run_fields(value)
        return value

    @field_validator("title", "text")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        check_template(value)
        return value

    @field_validator("link")
    @classmethod
    def _link_shape(cls, value: str) -> str:
        if value and not _LINK_START.match(value):
            raise ValueError(
                "expected a link template starting with https://, e.g. "
                "'https://app.example.com/runs/{run.id}'"
            )
        check_template(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AlertRule:
        if self.threshold > 1 and self.window is None:
            raise ValueError(
                f'threshold = {self.threshold} needs a window (e.g. window = "5m"): the '
                "number of matches is counted within it"
            )
        if self.digest is not None and self.resolve_match.strip():
            raise ValueError(
                "digest and resolve_match cannot be combined: a digest is not one incident "
                "that a later entry could resolve"
            )
        for template in (self.title, self.text, self.link):
            for name in template_fields(template):
                key = name.partition(".")[2]
                if name.startswith("group.") and key not in self.group_by:
                    raise ValueError(
                        f"template field {{{name}}} can never be filled: the group holds "
                        f"{', '.join(sorted(self.group_by))} (group_by)"
                        + (f"; write {{{key}}} instead" if key.startswith("run.") else "")
                    )
        return self

    def compiled_match(self) -> Filter:
        return parse_filter(self.match)

    def compiled_resolve(self) -> Filter | None:
        return parse_filter(self.resolve_match) if self.resolve_match.strip() else None

    def needs_run(self) -> bool:
        """Whether matching or grouping looks at `run.*` (fetched when entries lack it)."""
        fields = set(self.compiled_match().fields())
        resolve = self.compiled_resolve()
        if resolve is not None:
            fields |= resolve.fields()
        fields |= set(self.group_by)
        return any(path == "run" or path.startswith("run.") for path in fields)

    def run_fields(self) -> set[str]:
        """The run fields (below ``run.``) the rule's expressions, groups and templates name."""
        fields = set(self.compiled_match().fields()) | set(self.group_by)
        resolve = self.compiled_resolve()
        if resolve is not None:
            fields |= resolve.fields()
        for template in (self.title, self.text, self.link):
            fields |= set(template_fields(template))
        return run_paths(fields)


def template_fields(text: str) -> list[str]:
    """The field names a (valid) template refers to, e.g. ``["run.failure_code"]``."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name]
    except ValueError:
        return []


def check_template(text: str) -> None:
    """Raise ValueError for a template that cannot be rendered or that names a field that
    can never be filled: bad braces, unknown top-level names, run fields the API does not
    have, unknown line or count fields."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(
            f"not a valid template ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    for _literal, name, _spec, _conversion in parts:
        if name is None:
            continue
        root, _, rest = name.partition(".")
        if not name or root not in TEMPLATE_FIELDS or not _FIELD_PATH.fullmatch(name):
            known = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(
                f"unknown template field {{{name}}}; expected one of {known} "
                "(with dotted keys, e.g. {run.failure_message})"
            )
        closed = {"line": LINE_FIELDS, "counts": COUNT_FIELDS}.get(root)
        if closed is not None and rest and rest not in closed:
            known = ", ".join(f"{root}.{field}" for field in sorted(closed))
            raise ValueError(f"template field {{{name}}} can never be filled; expected {known}")
        if root == "run" and rest:
            problem = unknown_path_problem(rest)
            if problem is not None:
                raise ValueError(f"template field {{{name}}} can never be filled: {problem}")


def check_run_fields(fields: Collection[str]) -> None:
    """Raise ValueError naming the first ``run.*`` field that no run can ever have."""
    for path in sorted(run_paths(fields)):
        problem = unknown_path_problem(path)
        if problem is not None:
            raise ValueError(problem)


def check_alert_references(
    data: Mapping[str, Any], stream_names: Sequence[str], alert_only_types: Collection[str]
) -> list[tuple[tuple[str | int, ...], Any, str]]:
    """Problems spanning ``[[alerts]]``, streams and sinks, on plain (unvalidated) data:
    unique rule names, known streams and destinations, and alert-only routing
    (``alert_only_types``: the sink types that never receive log entries).

    Returns ``(loc, value, message)`` triples; a value of the wrong shape is skipped,
    since its own validation error is reported anyway.
    """
    problems: list[tuple[tuple[str | int, ...], Any, str]] = []
    rules_raw = data.get("alerts", ())
    rules = (
        [(i, r) for i, r in enumerate(rules_raw) if isinstance(r, Mapping)]
        if isinstance(rules_raw, list | tuple)
        else []
    )
    sinks_raw = data.get("sinks", {})
    sinks = sinks_raw if isinstance(sinks_raw, Mapping) else {}
    first_index: dict[str, int] = {}
    destinations: dict[str, int] = {}
    for index, rule in rules:
        name = rule.get("name")
        if isinstance(name, str):
            if name in first_index:
                problems.append(
                    (
                        ("alerts", index, "name"),
                        name,
                        f"alerts[{first_index[name]}] already has this name; rule names must "
                        "be unique",
                    )
                )
            else:
                first_index[name] = index
        wanted_streams = rule.get("streams")
        if isinstance(wanted_streams, list | tuple):
            known = ", ".join(sorted(stream_names)) or "none"
            for stream in wanted_streams:
                if isinstance(stream, str) and stream not in stream_names:
                    problems.append(
                        (
                            ("alerts", index, "streams"),
                            list(wanted_streams),
                            f"{stream!r} is not a configured stream; expected one of: {known}",
                        )
                    )
        wanted = rule.get("destinations")
        if not isinstance(wanted, list | tuple):
            continue
        configured = ", ".join(sorted(sinks)) or "none"
        for sink in wanted:
            if not isinstance(sink, str):
                continue
            if sink not in sinks:
                problems.append(
                    (
                        ("alerts", index, "destinations"),
                        list(wanted),
                        f"{sink!r} is not a configured sink ([sinks.{sink}]); expected one of: "
                        f"{configured}",
                    )
                )
            else:
                destinations.setdefault(sink, index)
    for name, sink in sinks.items():
        if not isinstance(sink, Mapping):
            continue
        why = _alert_only_reason(name, sink, destinations, alert_only_types)
        if why is not None and isinstance(sink.get("streams"), list | tuple):
            problems.append(
                (
                    ("sinks", name, "streams"),
                    list(sink["streams"]),
                    f"{why}: it receives alerts only, never log streams; remove `streams`",
                )
            )
    streams_raw = data.get("streams", ())
    for index, stream in enumerate(streams_raw if isinstance(streams_raw, list | tuple) else ()):
        listed = stream.get("sinks") if isinstance(stream, Mapping) else None
        if not isinstance(listed, list | tuple):
            continue
        for sink_name in listed:
            sink = sinks.get(sink_name) if isinstance(sink_name, str) else None
            why = (
                _alert_only_reason(sink_name, sink, destinations, alert_only_types)
                if isinstance(sink, Mapping)
                else None
            )
            if why is not None:
                problems.append(
                    (
                        ("streams", index, "sinks"),
                        list(listed),
                        f"{why}: it receives alerts only, never log entries; remove it here",
                    )
                )
    return problems


def _alert_only_reason(
    name: str,
    sink: Mapping[str, Any],
    destinations: Mapping[str, int],
    alert_only_types: Collection[str],
) -> str | None:
    if name in destinations:
        return f"sink {name!r} is an alert destination (alerts[{destinations[name]}])"
    if sink.get("type") in alert_only_types:
        return f"sink {name!r} is a {sink.get('type')} sink"
    return None
