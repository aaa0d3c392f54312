"""Describing a configuration problem for a person: which source gave the key (file,
variable or flag), its dotted path, the value with secrets masked, and what is expected."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from runflow_tail.config.model import CrossProblem, Settings, dotted_key
from runflow_tail.sinks.registry import BUILTIN, SinkTypes

SECRET_KEYS = frozenset(
    # webhook_url: chat webhook URLs carry their token; routing_key: PagerDuty's integration
    # key; tenant_id: Loki's X-Scope-OrgID (a tenant may be all that guards its logs).
    {
        "api_key",
        "secret",
        "password",
        "token",
        "authorization",
        "headers",
        "webhook_url",
        "routing_key",
        "bearer_token",
        "basic_password",
        "secret_access_key",
        "session_token",
        "tenant_id",
        "dsn",
    }
)
MAY_HOLD_SECRETS = frozenset({"api", "sinks", "state"})
MASK = "********"

_MESSAGES_BY_LOC: dict[tuple[tuple[str | int, ...], str], str] = {
    (("streams",), "tuple_type"): "expected a list of stream tables ([[streams]] in TOML)",
    (("sinks",), "dict_type"): "expected a table of named sinks ([sinks.NAME] in TOML)",
    (("alerts",), "tuple_type"): "expected a list of alert rules ([[alerts]] in TOML)",
}


class Provenance:
    """Which source gave a key, and how to describe a validation error for a person."""

    def __init__(
        self,
        config_label: str,
        file_data: Mapping[str, Any],
        env_data: Mapping[str, Any],
        env_names: Mapping[tuple[str, ...], str],
        overrides: Mapping[str, Any],
        sink_types: SinkTypes = BUILTIN,
        model: type[Settings] = Settings,
    ) -> None:
        self._sink_types = sink_types
        self._model = model
        self._config_label = config_label
        self._file_data = file_data
        self._env_data = env_data
        self._env_names = env_names
        self._overrides = overrides

    def supplied(self, path: tuple[str | int, ...]) -> bool:
        """Whether any source (rather than a default) gave this key."""
        layers = (self._overrides, self._env_data, self._file_data)
        return any(_supplies(layer, path) for layer in layers)

    def source_of(self, path: tuple[str | int, ...]) -> str:
        """The source that gave the value at ``path``; for a table, every source that
        contributed to it (tables merge key by key; anything else is replaced whole)."""
        found: list[str] = []
        layers: tuple[tuple[Mapping[str, Any], Callable[[], str]], ...] = (
            (self._overrides, lambda: "command line"),
            (self._env_data, lambda: self._env_label(path)),
            (self._file_data, lambda: self._config_label),
        )
        for data, label in layers:
            supplied = _supplies(data, path)
            if supplied is None:
                continue
            if supplied == "value" and found:
                break  # a lower layer's value, replaced by the tables above it
            found.append(label())
            if supplied == "value":
                break
        return " and ".join(found) or "settings"

    def _env_label(self, path: tuple[str | int, ...]) -> str:
        keys = tuple(str(part).lower() for part in path)
        names = sorted(
            name
            for key, name in self._env_names.items()
            if key[: len(keys)] == keys or keys[: len(key)] == key
        )
        if not names:
            return "environment"
        plural = "s" if len(names) > 1 else ""
        return f"environment variable{plural} {', '.join(names)}"

    def describe(self, error: Mapping[str, Any]) -> str:
        loc = _display_loc(error["loc"], self._sink_types.names())
        where = self.source_of(loc)
        key = _dotted(loc)
        kind = error["type"]
        value_input = error.get("input")
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            known = _known_keys(self._model, tuple(error["loc"])[:-1])
            message = "unknown key" + suggest(str(loc[-1]), known)
        elif kind == "missing":
            message = "required key is missing"
            where = self.source_of(loc[:-1])
        elif kind == "union_tag_invalid":
            tag = str(error.get("ctx", {}).get("tag", ""))
            message = f"unknown sink type {tag!r}{suggest(tag, self._sink_types.names())}"
            if self._sink_types.problems:
                message += f" ({'; '.join(self._sink_types.problems)})"
            key += ".type"
            where = self.source_of((*loc, "type"))
            value_input = tag
            kind = "value_error"
        elif kind == "union_tag_not_found":
            message = (
                "every sink needs a type (" + ", ".join(sorted(self._sink_types.names())) + ")"
            )
        elif (loc, kind) in _MESSAGES_BY_LOC:
            message = _MESSAGES_BY_LOC[(loc, kind)]
        elif kind == "model_type":
            message = "expected a table of settings"
        quiet = kind in ("missing", "extra_forbidden", "union_tag_not_found") or (
            # A whole table failed a check across its keys; the message names the values.
            isinstance(value_input, Mapping) and kind in ("value_error", "assertion_error")
        )
        value = "" if quiet else f" = {show_value(loc, value_input)}"
        if not loc:
            return "\n".join(f"{where}: {line}" for line in message.splitlines())
        return f"{where}: {key}{value}: {message}"

    def describe_cross(self, problem: CrossProblem) -> str:
        loc = problem.loc
        if problem.related is not None and not self.supplied(loc):
            where = self.source_of(problem.related)
        else:
            where = self.source_of(loc)
        return f"{where}: {dotted_key(loc)} = {show_value(loc, problem.value)}: {problem.message}"


def _supplies(data: Mapping[str, Any], path: tuple[str | int, ...]) -> str | None:
    """Whether ``data`` holds ``path``: None (no), "table" (a table there, merged with others'),
    or "value" (anything else, including a list above it: that replaces other sources')."""
    node: Any = data
    for part in path:
        if isinstance(node, list | tuple):
            return "value"
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return "table" if isinstance(node, Mapping) else "value"


UNION_MEMBER_LABELS = frozenset({"BatchSettings"})
SCALAR_MEMBER_LABELS = frozenset({"bool", "int", "float", "str"})


def _display_loc(loc: tuple[Any, ...], sink_types: set[str]) -> tuple[str | int, ...]:
    """Drop the discriminator tag pydantic inserts after ``sinks.<name>``, and the union
    member it inserts below (``batch.BatchSettings.max_events`` is ``batch.max_events``)."""
    parts = list(loc)
    if len(parts) >= 3 and parts[0] == "sinks" and parts[2] in sink_types:
        del parts[2]
    return tuple(part for part in parts if part not in UNION_MEMBER_LABELS)


def is_other_union_member(error: Mapping[str, Any]) -> bool:
    """A table given where a union also allows a scalar: the scalar member's complaint
    (``batch.bool: Input should be a valid boolean``) only repeats the real one."""
    loc = tuple(error["loc"])
    return bool(loc) and loc[-1] in SCALAR_MEMBER_LABELS and isinstance(error.get("input"), Mapping)


_dotted = dotted_key


def show_value(loc: tuple[str | int, ...], value: Any) -> str:
    if any(str(part).lower() in SECRET_KEYS for part in loc) or (
        # Something other than a table where one that holds the key belongs: maybe the key.
        len(loc) == 1 and loc[0] in MAY_HOLD_SECRETS and not isinstance(value, Mapping)
    ):
        return repr(MASK)
    text = repr(_masked(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _masked(value: Any) -> Any:
    """``value`` with anything under a secret-looking key replaced by a mask."""
    if isinstance(value, Mapping):
        return {
            key: MASK if str(key).lower() in SECRET_KEYS else _masked(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    if isinstance(value, SecretStr):
        return MASK
    return value


def _known_keys(model: type[Settings], loc: tuple[str | int, ...]) -> set[str]:
    """The keys the table at a pydantic error location accepts (empty if unknown)."""
    node: Any = model
    for part in loc:
        node = _child(_strip(node), part)
        if node is None:
            return set()
    node = _strip(node)
    return set(node.model_fields) if _is_model(node) else set()


def _child(node: Any, part: str | int) -> Any:
    """The annotation one step below ``node`` along a pydantic error location."""
    if _is_model(node):
        field = node.model_fields.get(str(part))
        return None if field is None else field.annotation
    origin, args = get_origin(node), get_args(node)
    if origin is dict:
        return args[1]
    if origin in (tuple, list):
        return args[0]
    if origin in (Union, UnionType):
        # A discriminated union (sinks): the location names the chosen type. A plain one
        # (``BatchSettings | bool``): it names the member tried.
        for model in args:
            if _is_model(model) and model.__name__ == part:
                return model
            field = model.model_fields.get("type") if _is_model(model) else None
            if field is not None and field.default == part:
                return model
    return None


def _strip(node: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    while True:
        if get_origin(node) is Annotated:
            node = get_args(node)[0]
            continue
        if get_origin(node) in (Union, UnionType):
            others = [arg for arg in get_args(node) if arg is not type(None)]
            if len(others) == 1:
                node = others[0]
                continue
        return node


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


def suggest(word: str, choices: set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(sorted(choices))}" if choices else ""


def lookup(data: Mapping[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = data
    for part in path:
        if isinstance(node, list) and isinstance(part, int):
            node = node[part] if part < len(node) else None
        else:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node
