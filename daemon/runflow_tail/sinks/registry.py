"""Which sink types exist: the built-in ones, and third-party ones from entry points.

The config models are the registry: each type is a pydantic model with
``type: Literal["name"]`` and a ``build(name)`` method; the discriminated union of all
of them is what ``[sinks.NAME]`` validates against. Plugins (the ``runflow_tail.sinks``
entry-point group) are discovered when a configuration is loaded, never on import, and
a plugin that cannot be used is a problem to report, not a crash.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args

from pydantic import Field

from runflow_tail.sinks.base import SinkConfigBase
from runflow_tail.sinks.discord import DiscordSinkConfig
from runflow_tail.sinks.elasticsearch import ElasticsearchSinkConfig
from runflow_tail.sinks.file import FileSinkConfig
from runflow_tail.sinks.loki import LokiSinkConfig
from runflow_tail.sinks.otlp import OtlpSinkConfig
from runflow_tail.sinks.pagerduty import PagerDutySinkConfig
from runflow_tail.sinks.s3 import S3SinkConfig
from runflow_tail.sinks.slack import SlackSinkConfig
from runflow_tail.sinks.stdout import StdoutSinkConfig
from runflow_tail.sinks.syslog import SyslogSinkConfig
from runflow_tail.sinks.webhook import WebhookSinkConfig

ENTRY_POINT_GROUP = "runflow_tail.sinks"
BUILTIN_SINK_MODELS: tuple[type[SinkConfigBase], ...] = (
    StdoutSinkConfig,
    FileSinkConfig,
    WebhookSinkConfig,
    OtlpSinkConfig,
    ElasticsearchSinkConfig,
    LokiSinkConfig,
    S3SinkConfig,
    SyslogSinkConfig,
    SlackSinkConfig,
    DiscordSinkConfig,
    PagerDutySinkConfig,
)


@dataclass(frozen=True)
class SinkTypes:
    """The sink types a configuration may use, and the plugins that could not be used."""

    models: tuple[type[SinkConfigBase], ...]
    problems: tuple[str, ...] = ()

    def names(self) -> set[str]:
        return {name for model in self.models if (name := type_name(model)) is not None}

    def alert_only(self) -> frozenset[str]:
        return frozenset(
            name
            for model in self.models
            if model.alert_only and (name := type_name(model)) is not None
        )


BUILTIN = SinkTypes(BUILTIN_SINK_MODELS)


def type_name(model: type[SinkConfigBase]) -> str | None:
    choices = get_args(model.model_fields["type"].annotation)
    return choices[0] if len(choices) == 1 and isinstance(choices[0], str) else None


@functools.cache
def discover() -> SinkTypes:
    """The built-in types plus every installed plugin (loaded once per process)."""
    builtin_names = BUILTIN.names()
    models = list(BUILTIN_SINK_MODELS)
    problems: list[str] = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            model: Any = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the daemon
            problems.append(f"sink plugin {entry_point.value!r} failed to load: {exc}")
            continue
        if not (isinstance(model, type) and issubclass(model, SinkConfigBase)):
            problems.append(f"sink plugin {entry_point.value!r} is not a SinkConfigBase subclass")
        elif type_name(model) != entry_point.name or entry_point.name in builtin_names:
            problems.append(
                f"sink plugin {entry_point.value!r} must declare type: "
                f"Literal[{entry_point.name!r}] and not reuse a built-in type name"
            )
        else:
            models.append(model)
    return SinkTypes(tuple(models), tuple(problems))


def sink_config_union(types: SinkTypes) -> Any:
    """The annotation ``[sinks.NAME]`` validates against: one model per ``type``."""
    return Annotated[Union[types.models], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:
    SinkConfig = SinkConfigBase
else:
    SinkConfig = sink_config_union(BUILTIN)
