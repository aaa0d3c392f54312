"""Loading settings: TOML file < environment < command-line flags, with errors a person can act on.

Each source is read on its own (the file with ``tomllib``, the environment with
pydantic-settings' ``EnvSettingsSource``), merged, then validated once by ``Settings``.
Because we know which source supplied each key, every problem names its source
(file or variable), the key path, the offending value (secrets masked) and what is
expected. This module is the only reader of the process environment.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import EnvSettingsSource

from .errors import ConfigError
from .settings import Settings

ENV_PREFIX = "RUNFLOW_TAIL_"
ENV_DELIMITER = "__"
CONFIG_ENV = "RUNFLOW_TAIL_CONFIG"
API_KEY_ENV = "RUNFLOW_API_KEY"
CREDENTIAL_NAME = "runflow_api_key"
SECRET_KEYS = frozenset({"api_key", "secret", "password", "token", "authorization", "headers"})
_NOT_SETTINGS = {CONFIG_ENV}


class _Environment(EnvSettingsSource):
    """pydantic-settings' env parsing (``__`` nesting, JSON for lists), from a given mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._given = {k: v for k, v in environ.items() if k not in _NOT_SETTINGS}
        super().__init__(Settings, env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Case-insensitive, as pydantic-settings does with os.environ.
        return {name.lower(): value for name, value in self._given.items()}


def load_settings(
    *,
    config_file: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    require_api_key: bool = True,
) -> Settings:
    """Build the settings; raise ``ConfigError`` listing every problem found."""
    problems: list[str] = []
    config_file = config_file or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    file_data = _read_toml(config_file, problems) if config_file else {}
    env_data, env_names = _read_environment(environ, problems)
    key_data: dict[str, Any] = {}
    if environ.get(API_KEY_ENV) and not _lookup(env_data, ("api", "api_key")):
        key_data = {"api": {"api_key": environ[API_KEY_ENV]}}
        env_names[("api", "api_key")] = API_KEY_ENV
    merged = _merge(file_data, key_data, env_data, dict(overrides or {}))
    _apply_credentials_directory(merged, environ)
    _apply_no_color(merged, environ)
    sources = _Provenance(config_file, file_data, env_names, overrides or {})
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(problems + [sources.describe(error) for error in exc.errors()]) from None
    if problems:
        raise ConfigError(problems)
    settings = _resolve_api_key(settings, sources, problems, require=require_api_key)
    settings = _resolve_state_dir(settings, environ)
    if problems:
        raise ConfigError(problems)
    return settings


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; tables merge key by key, anything else (lists too) is replaced."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"config file {path}: not found; pass an existing file to --config")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"config file {path}: cannot be read ({exc})")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path}: not valid TOML: {exc}")
    return {}


def _read_environment(
    environ: Mapping[str, str], problems: list[str]
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    names: dict[tuple[str, ...], str] = {}
    top_level = set(Settings.model_fields)
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in _NOT_SETTINGS:
            path = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER))
            names[path] = name
            if path[0] not in top_level:
                problems.append(
                    f"environment variable {name}: {path[0]!r} is not a setting"
                    f"{_suggest(path[0], top_level)}"
                )
    try:
        data = _Environment(environ)()
    except Exception as exc:  # noqa: BLE001 - pydantic-settings raises SettingsError subclasses
        problems.append(_settings_error_text(exc))
        data = {}
    return data, names


def _settings_error_text(exc: Exception) -> str:
    field = re.search(r'field "([^"]+)"', str(exc))
    where = f"environment variable {ENV_PREFIX}{field[1].upper()}" if field else "environment"
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return f"{where}: not valid JSON ({cause.msg} at position {cause.pos})"
    return f"{where}: {exc}"


def _apply_credentials_directory(merged: dict[str, Any], environ: Mapping[str, str]) -> None:
    """systemd's ``LoadCredential=runflow_api_key:...`` as the last place to look for the key."""
    api = merged.setdefault("api", {})
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if (
        isinstance(api, dict)
        and directory
        and not api.get("api_key")
        and not api.get("api_key_file")
    ):
        candidate = Path(directory) / CREDENTIAL_NAME
        if candidate.exists():
            api["api_key_file"] = str(candidate)
    if api == {}:
        del merged["api"]


def _apply_no_color(merged: dict[str, Any], environ: Mapping[str, str]) -> None:
    """https://no-color.org: NO_COLOR set (to anything) turns automatic color off."""
    if not environ.get("NO_COLOR"):
        return
    for sink in (merged.get("sinks") or {}).values():
        if (
            isinstance(sink, dict)
            and sink.get("type") == "stdout"
            and sink.get("color", "auto") == "auto"
        ):
            sink["color"] = "never"


def _resolve_api_key(
    settings: Settings, sources: _Provenance, problems: list[str], *, require: bool
) -> Settings:
    api = settings.api
    if api.api_key is None and api.api_key_file is not None:
        try:
            key = api.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            where = sources.source_of(("api", "api_key_file"))
            problems.append(
                f"{where}: api.api_key_file = {str(api.api_key_file)!r}: cannot read the key "
                f"file ({exc.strerror}); check the path and that this user may read it"
            )
            return settings
        if not key:
            problems.append(f"api.api_key_file {str(api.api_key_file)!r} is empty")
            return settings
        api = api.model_copy(update={"api_key": SecretStr(key)})
        settings = settings.model_copy(update={"api": api})
    if require and settings.api.api_key is None:
        problems.append(
            "no API key: set the RUNFLOW_API_KEY environment variable, api.api_key_file in the "
            "config file, or (systemd) LoadCredential=runflow_api_key:<path>"
        )
    return settings


def _resolve_state_dir(settings: Settings, environ: Mapping[str, str]) -> Settings:
    if settings.state.dir is not None:
        return settings
    if environ.get("STATE_DIRECTORY"):
        # systemd's StateDirectory= may list several paths separated by colons.
        directory = Path(environ["STATE_DIRECTORY"].split(":")[0])
    elif environ.get("XDG_STATE_HOME"):
        directory = Path(environ["XDG_STATE_HOME"]) / "runflow-tail"
    else:
        directory = Path(environ.get("HOME", ".")) / ".local" / "state" / "runflow-tail"
    state = settings.state.model_copy(update={"dir": directory})
    return settings.model_copy(update={"state": state})


class _Provenance:
    """Which source gave a key, and how to describe a validation error for a person."""

    def __init__(
        self,
        config_file: Path | None,
        file_data: Mapping[str, Any],
        env_names: Mapping[tuple[str, ...], str],
        overrides: Mapping[str, Any],
    ) -> None:
        self._config_file = config_file
        self._file_data = file_data
        self._env_names = env_names
        self._overrides = overrides

    def source_of(self, path: tuple[str | int, ...]) -> str:
        keys = tuple(str(part).lower() for part in path)
        for length in range(len(keys), 0, -1):
            if _lookup(self._overrides, path[:length]) is not None:
                return "command line"
            if keys[:length] in self._env_names:
                return f"environment variable {self._env_names[keys[:length]]}"
        if path and _lookup(self._file_data, path[:1]) is not None and self._config_file:
            return f"config file {self._config_file}"
        return "settings"

    def describe(self, error: Mapping[str, Any]) -> str:
        loc = _display_loc(error["loc"])
        where = self.source_of(loc)
        key = _dotted(loc)
        kind = error["type"]
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = "unknown key" + _suggest(str(loc[-1]), _known_keys(loc[:-1]))
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "union_tag_invalid":
            tag = str(error.get("ctx", {}).get("tag", ""))
            types = {str(model.model_fields["type"].default) for model in _sink_models()}
            message = f"unknown sink type {tag!r}{_suggest(tag, types)}"
            key += ".type"
        elif kind == "union_tag_not_found":
            message = (
                "every sink needs a type ("
                + ", ".join(
                    sorted(str(model.model_fields["type"].default) for model in _sink_models())
                )
                + ")"
            )
        quiet = kind in ("missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found")
        value = "" if quiet else f" = {_show_value(loc, error.get('input'))}"
        if not loc:
            return "\n".join(f"{where}: {line}" for line in message.splitlines())
        return f"{where}: {key}{value}: {message}"


def _sink_models() -> tuple[type[BaseModel], ...]:
    from .sinks import SINK_MODELS

    return SINK_MODELS


def _display_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop the discriminator tag pydantic inserts after ``sinks.<name>``."""
    parts = list(loc)
    if len(parts) >= 3 and parts[0] == "sinks" and isinstance(parts[2], str):
        tags = {model.model_fields["type"].default for model in _sink_models()}
        if parts[2] in tags:
            del parts[2]
    return tuple(parts)


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show_value(loc: tuple[str | int, ...], value: Any) -> str:
    if any(str(part).lower() in SECRET_KEYS for part in loc):
        return "'********'"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _known_keys(loc: tuple[str | int, ...]) -> set[str]:
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                return set()
            model = _model_of(field.annotation)
        else:
            return set()
    return (
        set(model.model_fields)
        if isinstance(model, type) and issubclass(model, BaseModel)
        else set()
    )


def _model_of(annotation: Any) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _suggest(word: str, choices: set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(sorted(choices))}" if choices else ""


def _lookup(data: Mapping[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = data
    for part in path:
        if isinstance(node, list) and isinstance(part, int):
            node = node[part] if part < len(node) else None
        else:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


def environ_snapshot() -> dict[str, str]:
    """The process environment, read once at the command line's edge."""
    return dict(os.environ)
