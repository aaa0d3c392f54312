"""Sinks: built-in types, and third-party types from the ``runflow_tail.sinks`` entry points.

The config models are the registry: each type is a pydantic model with
``type: Literal["name"]`` and a ``build(name)`` method; the discriminated union of all
of them is what ``[sinks.NAME]`` validates against.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args

from pydantic import Field

from .base import BatchSettings, Sink, SinkConfigBase
from .discord import DiscordSinkConfig
from .file import FileSinkConfig
from .pagerduty import PagerDutySinkConfig
from .slack import SlackSinkConfig
from .stdout import StdoutSinkConfig
from .webhook import WebhookSinkConfig

ENTRY_POINT_GROUP = "runflow_tail.sinks"
BUILTIN_SINK_MODELS: tuple[type[SinkConfigBase], ...] = (
    StdoutSinkConfig,
    FileSinkConfig,
    WebhookSinkConfig,
    SlackSinkConfig,
    DiscordSinkConfig,
    PagerDutySinkConfig,
)
PLUGIN_LOAD_ERRORS: list[str] = []
"""Plugins that could not be loaded; ``check-config`` reports them."""


def _type_name(model: type[SinkConfigBase]) -> str | None:
    choices = get_args(model.model_fields["type"].annotation)
    return choices[0] if len(choices) == 1 and isinstance(choices[0], str) else None


def _plugin_models() -> list[type[SinkConfigBase]]:
    builtin_names = {_type_name(model) for model in BUILTIN_SINK_MODELS}
    models: list[type[SinkConfigBase]] = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            model: Any = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the daemon
            PLUGIN_LOAD_ERRORS.append(f"sink plugin {entry_point.value!r} failed to load: {exc}")
            continue
        if not (isinstance(model, type) and issubclass(model, SinkConfigBase)):
            PLUGIN_LOAD_ERRORS.append(
                f"sink plugin {entry_point.value!r} is not a SinkConfigBase subclass"
            )
        elif _type_name(model) != entry_point.name or entry_point.name in builtin_names:
            PLUGIN_LOAD_ERRORS.append(
                f"sink plugin {entry_point.value!r} must declare type: "
                f"Literal[{entry_point.name!r}] and not reuse a built-in type name"
            )
        else:
            models.append(model)
    return models


SINK_MODELS: tuple[type[SinkConfigBase], ...] = (*BUILTIN_SINK_MODELS, *_plugin_models())

if TYPE_CHECKING:
    SinkConfig = SinkConfigBase
else:
    SinkConfig = Annotated[Union[SINK_MODELS], Field(discriminator="type")]  # noqa: UP007

__all__ = [
    "ENTRY_POINT_GROUP",
    "SINK_MODELS",
    "BatchSettings",
    "DiscordSinkConfig",
    "FileSinkConfig",
    "PagerDutySinkConfig",
    "Sink",
    "SinkConfig",
    "SinkConfigBase",
    "SlackSinkConfig",
    "StdoutSinkConfig",
    "WebhookSinkConfig",
]
