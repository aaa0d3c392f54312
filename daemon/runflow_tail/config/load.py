"""Loading settings: TOML file < environment < command-line flags, with errors a person can act on.

Each source is read on its own (the file with ``tomllib``, the environment with
pydantic-settings' ``EnvSettingsSource``), merged, then validated once by ``Settings``.
Because we know which source supplied each key, every problem names its source
(file or variable), the key path, the offending value (secrets masked) and what is
expected. This module is the only reader of the process environment.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import EnvSettingsSource

from runflow_tail.config.model import (
    CROSS_CHECK_ERROR,
    Settings,
    cross_check,
    dotted_key,
    settings_model,
)
from runflow_tail.config.problems import (
    MASK,
    MAY_HOLD_SECRETS,
    SECRET_KEYS,
    Provenance,
    is_other_union_member,
    lookup,
    show_value,
    suggest,
)
from runflow_tail.errors import ConfigError
from runflow_tail.sinks import registry

ENV_PREFIX = "RUNFLOW_TAIL_"
ENV_DELIMITER = "__"
CONFIG_ENV = "RUNFLOW_TAIL_CONFIG"
API_KEY_ENV = "RUNFLOW_API_KEY"
API_URL_ENV = "RUNFLOW_API_URL"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
CREDENTIAL_NAME = "runflow_api_key"
_NOT_SETTINGS = {CONFIG_ENV}


class _Environment(EnvSettingsSource):
    """pydantic-settings' env parsing (``__`` nesting, JSON for lists), from a given mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._given = {k: v for k, v in environ.items() if k.upper() not in _NOT_SETTINGS}
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
    config_label = f"config file {config_file}"
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
        config_label = f"config file {config_file} (from {CONFIG_ENV})"
    file_data = _read_toml(config_file, config_label, problems) if config_file else {}
    env_data, env_names = _read_environment(environ, problems)
    # RUNFLOW_API_KEY (the variable the Runflow docs name) and RUNFLOW_API_URL beside it,
    # below our own RUNFLOW_TAIL_API__* variables.
    plain: dict[str, Any] = {}
    for variable, key in ((API_KEY_ENV, "api_key"), (API_URL_ENV, "base_url")):
        if environ.get(variable) and not lookup(env_data, ("api", key)):
            plain[key] = environ[variable]
            env_names[("api", key)] = variable
    env_layer = _merge({"api": plain} if plain else {}, env_data)
    credential = _credentials_file(_merge(file_data, env_layer, dict(overrides or {})), environ)
    if credential is not None:
        # systemd's LoadCredential=: the last place to look for the key.
        env_layer = _merge(env_layer, {"api": {"api_key_file": str(credential)}})
        env_names[("api", "api_key_file")] = CREDENTIALS_ENV
    merged = _merge(file_data, env_layer, dict(overrides or {}))
    _apply_no_color(merged, environ)
    untidy = _tidy_secrets(merged, ())
    # Plugins are found now, when a configuration is loaded, never when a module is imported.
    sink_types = registry.discover()
    model = settings_model(sink_types)
    sources = Provenance(
        config_label, file_data, env_layer, env_names, overrides or {}, sink_types, model
    )
    problems += [
        f"{sources.source_of(loc)}: {dotted_key(loc)}: the secret holds a line break or "
        "another control character; expected it on one line (its value is not shown)"
        for loc in untidy
    ]
    # Without a readable file or environment the key may be in what could not be read.
    require = require_api_key and not problems
    key_from_file = _check_api_key(merged, environ, sources, problems, require=require)
    cross = cross_check(merged, sink_types.alert_only())
    settings: Settings | None = None
    try:
        settings = model(**merged)
    except ValidationError as exc:
        errors = exc.errors()
        if cross:
            # Reported below with their sources, from the same check on the unvalidated data.
            errors = [error for error in errors if error["type"] != CROSS_CHECK_ERROR]
        problems += [
            sources.describe(error) for error in errors if not is_other_union_member(error)
        ]
    problems += [sources.describe_cross(problem) for problem in cross]
    if problems or settings is None:
        # Values under secret keys are masked where shown; this catches any other path.
        secrets = _known_secrets(merged, environ, key_from_file)
        raise ConfigError([_scrub(problem, secrets) for problem in problems]) from None
    if key_from_file is not None:
        api = settings.api.model_copy(update={"api_key": SecretStr(key_from_file)})
        settings = settings.model_copy(update={"api": api})
    return _resolve_state_dir(settings, environ)


def _known_secrets(
    merged: Mapping[str, Any], environ: Mapping[str, str], key_from_file: str | None
) -> set[str]:
    found = {environ.get(API_KEY_ENV, ""), key_from_file or ""}

    def collect(node: Any, secret: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                collect(value, secret or str(key).lower() in SECRET_KEYS)
        elif isinstance(node, list | tuple):
            for item in node:
                collect(item, secret)
        elif secret and isinstance(node, str):
            found.add(node.strip())

    collect(merged, secret=False)
    # Very short values would mask ordinary words; real keys are long.
    return {secret for secret in found if len(secret) >= 6}


def _scrub(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _tidy_secrets(node: Any, path: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    """Secrets (values under secret keys, headers included) without the whitespace a
    shell, an editor or ``echo`` leaves around them: a trailing newline would make every
    request fail with the secret in the error. A control character inside a secret is a
    problem to report (never showing the value): returns where each such secret is."""
    problems: list[tuple[str | int, ...]] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in list(items):
        here = (*path, key)
        secret = any(str(part).lower() in SECRET_KEYS for part in here)
        if isinstance(value, str) and secret:
            tidy = value.strip()
            if any(ord(character) < 32 or ord(character) == 127 for character in tidy):
                problems.append(here)
            node[key] = tidy
        elif isinstance(value, dict | list):
            problems += _tidy_secrets(value, here)
    return problems


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; tables merge key by key, anything else (lists too) is replaced."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = _merge(value) if isinstance(value, Mapping) else value
    return merged


def _read_toml(path: Path, label: str, problems: list[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{label}: not found; expected an existing TOML file")
    except UnicodeDecodeError as exc:
        problems.append(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        problems.append(f"{label}: cannot be read ({exc.strerror or exc})")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{label}: not valid TOML: {exc}")
    return {}


def _read_environment(
    environ: Mapping[str, str], problems: list[str]
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    names: dict[tuple[str, ...], str] = {}
    top_level = set(Settings.model_fields)
    for name in environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in _NOT_SETTINGS:
            path = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER))
            names[path] = name
            if path[0] not in top_level:
                problems.append(
                    f"environment variable {name}: {path[0]!r} is not a setting"
                    f"{suggest(path[0], top_level)}"
                )
    try:
        data = _Environment(environ)()
    except Exception as exc:  # noqa: BLE001 - pydantic-settings raises SettingsError subclasses
        problems.append(_settings_error_text(exc, environ))
        data = {}
    return data, names


def _settings_error_text(exc: Exception, environ: Mapping[str, str]) -> str:
    field = re.search(r'field "([^"]+)"', str(exc))
    if field is None:
        return f"environment: {exc}"
    name = f"{ENV_PREFIX}{field[1].upper()}"
    raw = next((v for k, v in environ.items() if k.upper() == name), None)
    # Unparsable text cannot be masked key by key: tables that may hold secrets stay unshown.
    shown = raw is not None and field[1] not in MAY_HOLD_SECRETS
    value = f" = {show_value((field[1],), raw)}" if shown else ""
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return (
            f"environment variable {name}: {field[1]}{value}: not valid JSON ({cause.msg} at "
            f"position {cause.pos}); expected a JSON value such as "
            f'[{{"name": "all"}}] or {{"key": "value"}}, or set one key at a time as '
            f"{name}{ENV_DELIMITER}<KEY>"
        )
    return f"environment variable {name}: {field[1]}{value}: {exc}"


def _credentials_file(merged: Mapping[str, Any], environ: Mapping[str, str]) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/runflow_api_key`` when no other source names a key."""
    directory = environ.get(CREDENTIALS_ENV)
    api = merged.get("api", {})
    if (
        not directory
        or not isinstance(api, Mapping)
        or api.get("api_key")
        or api.get("api_key_file")
    ):
        return None
    candidate = Path(directory) / CREDENTIAL_NAME
    return candidate if candidate.exists() else None


def _apply_no_color(merged: dict[str, Any], environ: Mapping[str, str]) -> None:
    """https://no-color.org: NO_COLOR set (to anything) turns automatic color off."""
    if not environ.get("NO_COLOR"):
        return
    sinks = merged.get("sinks")
    for sink in sinks.values() if isinstance(sinks, Mapping) else ():
        if (
            isinstance(sink, dict)
            and sink.get("type") == "stdout"
            and sink.get("color", "auto") == "auto"
        ):
            sink["color"] = "never"


def _check_api_key(
    merged: Mapping[str, Any],
    environ: Mapping[str, str],
    sources: Provenance,
    problems: list[str],
    *,
    require: bool,
) -> str | None:
    """Check the key's sources before validation, so key problems are reported with the rest.

    Returns the key read from ``api.api_key_file`` when that is where it comes from.
    Values of the wrong type are left to validation, which reports them.
    """
    api = merged.get("api", {})
    if not isinstance(api, Mapping):
        return None
    key, key_file = api.get("api_key"), api.get("api_key_file")
    if isinstance(key, str):
        if not key.strip():
            problems.append(
                f"{sources.source_of(('api', 'api_key'))}: api.api_key is empty; expected "
                "the API key (or leave it unset to use another source)"
            )
        return None
    if key is not None or not isinstance(key_file, str | Path):
        if key is None and key_file is None and require:
            problems.append(no_key_message(environ))
        return None
    where = sources.source_of(("api", "api_key_file"))
    shown = f"api.api_key_file = {str(key_file)!r}"
    try:
        text = Path(key_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(
            f"{where}: {shown}: cannot read the key file ({exc.strerror or exc}); expected a "
            "readable file holding the API key: check the path and that this user may read it"
        )
        return None
    except UnicodeDecodeError:
        problems.append(f"{where}: {shown}: the key file is not UTF-8 text; expected the API key")
        return None
    if not text:
        problems.append(f"{where}: {shown}: the key file is empty; expected the API key")
        return None
    if any(ord(character) < 32 or ord(character) == 127 for character in text):
        problems.append(
            f"{where}: {shown}: the key holds a line break or another control character; "
            "expected the API key on one line (its value is not shown)"
        )
        return None
    return text


def no_key_message(environ: Mapping[str, str] | None = None) -> str:
    """Where a key can come from (for the problem, and check-config's offline warning)."""
    environ = environ_snapshot() if environ is None else environ
    message = (
        "no API key: set the RUNFLOW_API_KEY environment variable, api.api_key or "
        "api.api_key_file in the config file, or (systemd) LoadCredential=runflow_api_key:<path>"
    )
    directory = environ.get(CREDENTIALS_ENV)
    if directory:
        message += f" ({CREDENTIALS_ENV}={directory} holds no {CREDENTIAL_NAME})"
    return message


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


def environ_snapshot() -> dict[str, str]:
    """The process environment, read once at the command line's edge."""
    return dict(os.environ)
