"""Settings: sources and precedence, the API key, value forms, error messages, routing."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from runflow_tail.config.load import load_settings
from runflow_tail.config.model import Settings, StreamSettings
from runflow_tail.errors import ConfigError
from runflow_tail.sinks.file import FileSinkConfig
from runflow_tail.sinks.stdout import StdoutSinkConfig

KEY = "sk-SECRET-1234"

WriteConfig = Callable[[str], Path]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """An environment with a key and a HOME inside tmp_path, nothing else."""
    return {"HOME": str(tmp_path), "RUNFLOW_API_KEY": KEY}


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    require_api_key: bool = True,
) -> Settings:
    return load_settings(
        config_file=config_file,
        environ=dict(environ if environ is not None else {"RUNFLOW_API_KEY": KEY}),
        overrides=overrides,
        require_api_key=require_api_key,
    )


def problems(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    require_api_key: bool = True,
) -> list[str]:
    """The problems a load reports; fails the test if the load succeeds."""
    with pytest.raises(ConfigError) as raised:
        load(config_file, environ, overrides, require_api_key=require_api_key)
    return raised.value.problems


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


# --- sources and precedence -------------------------------------------------------------


def test_defaults_apply_without_any_source(base_env: dict[str, str]) -> None:
    """With no file, no RUNFLOW_TAIL_ variables and no flags every option has its default."""
    settings = load(environ=base_env)
    assert settings.api.base_url == "https://api.runflow.io"
    assert settings.api.timeout == 30.0
    assert settings.log.level == "info"
    assert settings.state.max_journal_bytes == 1024**3
    assert settings.state.dedup_window == 600.0


def test_default_stream_and_sink(base_env: dict[str, str]) -> None:
    """Without streams or sinks there is one stream 'all' printed as JSON by a 'stdout' sink."""
    settings = load(environ=base_env)
    assert [stream.name for stream in settings.streams] == ["all"]
    assert settings.streams[0].run_id == "any"
    assert settings.streams[0].start_at == "now"
    assert settings.sinks == {"stdout": StdoutSinkConfig(type="stdout", format="json")}
    assert settings.sinks_for_stream(settings.streams[0]) == ("stdout",)


def test_file_overrides_defaults(write_config: WriteConfig, base_env: dict[str, str]) -> None:
    """A key in the TOML file replaces its default."""
    settings = load(write_config('[api]\ntimeout = "10s"\n'), base_env)
    assert settings.api.timeout == 10.0


def test_env_overrides_file(write_config: WriteConfig, base_env: dict[str, str]) -> None:
    """A RUNFLOW_TAIL_ variable beats the same key in the file."""
    path = write_config('[api]\ntimeout = "10s"\n')
    settings = load(path, {**base_env, "RUNFLOW_TAIL_API__TIMEOUT": "20s"})
    assert settings.api.timeout == 20.0


def test_flags_override_env_and_file(write_config: WriteConfig, base_env: dict[str, str]) -> None:
    """A command-line override beats both the environment and the file."""
    path = write_config('[log]\nlevel = "warning"\n')
    env = {**base_env, "RUNFLOW_TAIL_LOG__LEVEL": "error"}
    assert load(path, env).log.level == "error"
    assert load(path, env, {"log": {"level": "debug"}}).log.level == "debug"


def test_flag_for_state_dir_beats_file(
    write_config: WriteConfig, base_env: dict[str, str], tmp_path: Path
) -> None:
    """The --state-dir override replaces state.dir from the file."""
    path = write_config('[state]\ndir = "/from/file"\n')
    settings = load(path, base_env, {"state": {"dir": str(tmp_path / "flag")}})
    assert settings.state.dir == tmp_path / "flag"


def test_tables_merge_key_by_key_across_sources(
    write_config: WriteConfig, base_env: dict[str, str]
) -> None:
    """Setting one key of a table from the environment keeps the file's other keys."""
    path = write_config('[api]\ntimeout = "10s"\nbackoff_max = "60s"\n')
    settings = load(path, {**base_env, "RUNFLOW_TAIL_API__TIMEOUT": "20s"})
    assert (settings.api.timeout, settings.api.backoff_max) == (20.0, 60.0)


def test_config_file_from_environment_variable(
    write_config: WriteConfig, base_env: dict[str, str]
) -> None:
    """Without --config the file named by RUNFLOW_TAIL_CONFIG is read."""
    path = write_config('[api]\ntimeout = "7s"\n')
    settings = load(None, {**base_env, "RUNFLOW_TAIL_CONFIG": str(path)})
    assert settings.api.timeout == 7.0


def test_config_flag_beats_config_environment_variable(
    write_config: WriteConfig, base_env: dict[str, str], tmp_path: Path
) -> None:
    """--config wins over RUNFLOW_TAIL_CONFIG, which is then not read at all."""
    path = write_config('[api]\ntimeout = "7s"\n')
    env = {**base_env, "RUNFLOW_TAIL_CONFIG": str(tmp_path / "missing.toml")}
    assert load(path, env).api.timeout == 7.0


def test_nested_environment_variable(base_env: dict[str, str]) -> None:
    """RUNFLOW_TAIL_API__TIMEOUT=10s sets api.timeout to ten seconds."""
    assert load(environ={**base_env, "RUNFLOW_TAIL_API__TIMEOUT": "10s"}).api.timeout == 10.0


def test_streams_as_json_list_in_environment(base_env: dict[str, str]) -> None:
    """RUNFLOW_TAIL_STREAMS takes a JSON list of stream tables."""
    streams = [{"name": "errors", "query": "level_code:error", "lookback": "2s"}, {"name": "b"}]
    settings = load(environ={**base_env, "RUNFLOW_TAIL_STREAMS": json.dumps(streams)})
    assert [stream.name for stream in settings.streams] == ["errors", "b"]
    assert settings.streams[0].query == "level_code:error"
    assert settings.streams[0].lookback == 2.0


def test_environment_list_replaces_file_list(
    write_config: WriteConfig, base_env: dict[str, str]
) -> None:
    """A list from the environment replaces the file's list instead of merging with it."""
    path = write_config('[[streams]]\nname = "a"\n[[streams]]\nname = "b"\n')
    settings = load(path, {**base_env, "RUNFLOW_TAIL_STREAMS": '[{"name": "c"}]'})
    assert [stream.name for stream in settings.streams] == ["c"]


def test_sinks_configured_by_environment_only(base_env: dict[str, str], tmp_path: Path) -> None:
    """A sink defined only by RUNFLOW_TAIL_SINKS__<NAME>__* variables replaces the default one."""
    env = {
        **base_env,
        "RUNFLOW_TAIL_SINKS__OUT__TYPE": "file",
        "RUNFLOW_TAIL_SINKS__OUT__PATH": str(tmp_path / "out.jsonl"),
    }
    settings = load(environ=env)
    assert list(settings.sinks) == ["out"]
    sink = settings.sinks["out"]
    assert isinstance(sink, FileSinkConfig)
    assert sink.path == tmp_path / "out.jsonl"


def test_environment_sink_nested_options(base_env: dict[str, str]) -> None:
    """Nested sink options and JSON lists work through the environment too."""
    env = {
        **base_env,
        "RUNFLOW_TAIL_SINKS__OUT__TYPE": "stdout",
        "RUNFLOW_TAIL_SINKS__OUT__STREAMS": '["all"]',
        "RUNFLOW_TAIL_SINKS__OUT__BATCH__MAX_EVENTS": "10",
        "RUNFLOW_TAIL_SINKS__OUT__BATCH__MAX_BYTES": "64KiB",
    }
    sink = load(environ=env).sinks["out"]
    assert sink.streams == ("all",)
    assert (sink.batch.max_events, sink.batch.max_bytes) == (10, 64 * 1024)


def test_a_partial_batch_table_keeps_the_sink_types_other_defaults(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **base_env,
        "RUNFLOW_TAIL_SINKS__OUT__TYPE": "file",
        "RUNFLOW_TAIL_SINKS__OUT__PATH": str(tmp_path / "out.jsonl"),
        "RUNFLOW_TAIL_SINKS__OUT__BATCH__MAX_WAIT": "2s",
        "RUNFLOW_TAIL_SINKS__HOOK__TYPE": "webhook",
        "RUNFLOW_TAIL_SINKS__HOOK__URL": "https://example.com/hook",
        "RUNFLOW_TAIL_SINKS__HOOK__BATCH__MAX_EVENTS": "5",
    }
    sinks = load(environ=env).sinks
    file_batch, hook_batch = sinks["out"].batching(), sinks["hook"].batching()
    assert (file_batch.max_events, file_batch.max_wait) == (10_000, 2.0)
    assert (hook_batch.max_events, hook_batch.max_bytes, hook_batch.max_wait) == (
        5,
        1024 * 1024,
        1.0,
    )


def test_environment_sink_adds_to_file_sinks(
    write_config: WriteConfig, base_env: dict[str, str]
) -> None:
    """A sink from the environment joins the file's sinks (tables merge by name)."""
    path = write_config('[sinks.console]\ntype = "stdout"\n')
    env = {**base_env, "RUNFLOW_TAIL_SINKS__OUT__TYPE": "stdout"}
    assert sorted(load(path, env).sinks) == ["console", "out"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STATE_DIRECTORY": "/var/lib/runflow-tail:/var/lib/other"}, "/var/lib/runflow-tail"),
        ({"XDG_STATE_HOME": "/xdg"}, "/xdg/runflow-tail"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/runflow-tail"),
        (
            {"STATE_DIRECTORY": "/sd", "XDG_STATE_HOME": "/xdg", "HOME": "/home/u"},
            "/sd",
        ),
    ],
)
def test_state_dir_default_order(env: dict[str, str], expected: str) -> None:
    """state.dir defaults to $STATE_DIRECTORY (first path), then $XDG_STATE_HOME, then ~."""
    assert load(environ={"RUNFLOW_API_KEY": KEY, **env}).state.dir == Path(expected)


# --- the API key --------------------------------------------------------------------------


def test_api_key_from_runflow_api_key(base_env: dict[str, str]) -> None:
    """RUNFLOW_API_KEY supplies the key."""
    key = load(environ=base_env).api.api_key
    assert key is not None
    assert key.get_secret_value() == KEY


def test_api_key_from_file_setting(write_config: WriteConfig, tmp_path: Path) -> None:
    """api.api_key in the file supplies the key."""
    settings = load(write_config(f'[api]\napi_key = "{KEY}"\n'), {"HOME": str(tmp_path)})
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == KEY


def test_api_key_from_key_file(write_config: WriteConfig, tmp_path: Path) -> None:
    """api.api_key_file is read and stripped of surrounding whitespace."""
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    settings = load(write_config(f'[api]\napi_key_file = "{key_file}"\n'), {})
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == KEY


def test_api_key_file_from_environment(tmp_path: Path) -> None:
    """RUNFLOW_TAIL_API__API_KEY_FILE names a key file too."""
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    settings = load(environ={"RUNFLOW_TAIL_API__API_KEY_FILE": str(key_file)})
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == KEY


def test_api_key_from_systemd_credentials_directory(tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY/runflow_api_key supplies the key when nothing else does."""
    (tmp_path / "runflow_api_key").write_text(KEY + "\n")
    settings = load(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == KEY


def _key_sources(tmp_path: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Each key source as (TOML text, environment), each carrying its own key value."""
    key_file = tmp_path / "key_file"
    key_file.write_text("from-key-file")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "runflow_api_key").write_text("from-credentials")
    return {
        "nested_env": ("", {"RUNFLOW_TAIL_API__API_KEY": "from-nested-env"}),
        "env": ("", {"RUNFLOW_API_KEY": "from-env"}),
        "file_key": ('api_key = "from-file-key"\n', {}),
        "file_key_file": (f'api_key_file = "{key_file}"\n', {}),
        "credentials": ("", {"CREDENTIALS_DIRECTORY": str(credentials)}),
    }


@pytest.mark.parametrize(
    ("present", "winner"),
    [
        (["env", "file_key"], "from-env"),
        (["env", "file_key_file"], "from-env"),
        (["env", "credentials"], "from-env"),
        (["file_key", "file_key_file"], "from-file-key"),
        (["file_key", "credentials"], "from-file-key"),
        (["file_key_file", "credentials"], "from-key-file"),
        (["nested_env", "env", "file_key"], "from-nested-env"),
        (["env", "file_key", "file_key_file", "credentials"], "from-env"),
    ],
)
def test_api_key_precedence(
    present: list[str], winner: str, write_config: WriteConfig, tmp_path: Path
) -> None:
    """RUNFLOW_API_KEY > api.api_key > api.api_key_file > $CREDENTIALS_DIRECTORY."""
    sources = _key_sources(tmp_path)
    toml = "[api]\n" + "".join(sources[name][0] for name in present)
    env: dict[str, str] = {}
    for name in present:
        env.update(sources[name][1])
    settings = load(write_config(toml), env)
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == winner


def test_environment_key_wins_without_reading_a_broken_key_file(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    """With RUNFLOW_API_KEY set, a missing api.api_key_file is never read, so no error."""
    path = write_config(f'[api]\napi_key_file = "{tmp_path / "missing"}"\n')
    settings = load(path, {"RUNFLOW_API_KEY": KEY})
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == KEY


def test_no_key_needed_when_not_required() -> None:
    """require_api_key=False (checkpoint commands) loads without any key."""
    assert load(environ={}, require_api_key=False).api.api_key is None


def test_missing_key_says_where_to_put_one() -> None:
    """Without any key the message lists every place a key can come from."""
    message = only(problems(environ={}))
    assert message.startswith("no API key")
    for place in ("RUNFLOW_API_KEY", "api.api_key_file", "LoadCredential=runflow_api_key"):
        assert place in message


def test_missing_key_mentions_empty_credentials_directory(tmp_path: Path) -> None:
    """A CREDENTIALS_DIRECTORY without runflow_api_key is named in the missing-key message."""
    message = only(problems(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}))
    assert f"CREDENTIALS_DIRECTORY={tmp_path} holds no runflow_api_key" in message


def test_missing_key_reported_with_other_problems(write_config: WriteConfig) -> None:
    """A missing key is listed together with the file's other problems."""
    found = problems(write_config('[api]\ntimeout = "soon"\n'), {})
    assert len(found) == 2, found
    assert any(problem.startswith("no API key") for problem in found)


def test_unreadable_key_file(write_config: WriteConfig, tmp_path: Path) -> None:
    """A key file that cannot be read names the source, the key, the path and what to check."""
    missing = tmp_path / "nope" / "key"
    path = write_config(f'[api]\napi_key_file = "{missing}"\n')
    message = only(problems(path, {}))
    assert message.startswith(f"config file {path}: api.api_key_file = '{missing}': ")
    assert "cannot read the key file (No such file or directory)" in message
    assert "readable file" in message


def test_key_file_that_is_a_directory(tmp_path: Path) -> None:
    """A directory as key file is reported against the variable that named it."""
    message = only(problems(environ={"RUNFLOW_TAIL_API__API_KEY_FILE": str(tmp_path)}))
    assert message.startswith(
        f"environment variable RUNFLOW_TAIL_API__API_KEY_FILE: api.api_key_file = '{tmp_path}'"
    )
    assert "cannot read the key file" in message


def test_empty_key_file(tmp_path: Path) -> None:
    """An empty key file is a problem, not an empty key."""
    (tmp_path / "runflow_api_key").write_text("\n")
    message = only(problems(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}))
    assert message.startswith("environment variable CREDENTIALS_DIRECTORY: api.api_key_file = ")
    assert "the key file is empty; expected the API key" in message


def test_key_file_not_text(tmp_path: Path) -> None:
    """A binary key file is reported, not a traceback, and its bytes are not echoed."""
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xff\xfe" + KEY.encode())
    message = only(problems(environ={"RUNFLOW_TAIL_API__API_KEY_FILE": str(key_file)}))
    assert "not UTF-8 text" in message
    assert KEY not in message


def test_empty_api_key_value(write_config: WriteConfig) -> None:
    """api.api_key = "" is reported rather than sent to the API as an empty key."""
    path = write_config('[api]\napi_key = "  "\n')
    assert only(problems(path, {})) == (
        f"config file {path}: api.api_key is empty; expected the API key (or leave it unset "
        "to use another source)"
    )


# --- value forms --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml_value", "seconds"),
    [
        ("2", 2.0),
        ("2.5", 2.5),
        ('"2"', 2.0),
        ('"500ms"', 0.5),
        ('"2s"', 2.0),
        ('"5m"', 300.0),
        ('"1h"', 3600.0),
        ('"1h30m"', 5400.0),
    ],
)
def test_durations_in_file(toml_value: str, seconds: float, write_config: WriteConfig) -> None:
    """Durations are seconds as numbers or strings like 500ms, 2s, 5m, 1h."""
    settings = load(write_config(f"[api]\ntimeout = {toml_value}\n"))
    assert settings.api.timeout == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("2", 2.0), ("1h", 3600.0)])
def test_durations_in_environment(text: str, seconds: float) -> None:
    """Durations from the environment take the same forms."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STATE__DEDUP_WINDOW": text}
    settings = load(environ={**env, "RUNFLOW_TAIL_STREAMS": '[{"lookback": 0.1}]'})
    assert settings.state.dedup_window == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("toml_value", "size"),
    [
        ("1024", 1024),
        ('"1024"', 1024),
        ('"100B"', 100),
        ('"512KiB"', 512 * 1024),
        ('"10MB"', 10_000_000),
        ('"10 mb"', 10_000_000),
        ('"2kb"', 2000),
        ('"3MiB"', 3 * 1024**2),
        ('"1GiB"', 1024**3),
        ('"1.5GiB"', 1024**3 * 3 // 2),
        ('"2GB"', 2 * 1000**3),
    ],
)
def test_sizes_in_file(toml_value: str, size: int, write_config: WriteConfig) -> None:
    """Sizes are bytes as integers or strings with B, kB, MB, GB, KiB, MiB, GiB."""
    settings = load(write_config(f"[state]\nmax_journal_bytes = {toml_value}\n"))
    assert settings.state.max_journal_bytes == size


def test_size_in_environment() -> None:
    """Sizes from the environment take the same forms."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STATE__MAX_JOURNAL_BYTES": "10MB"}
    assert load(environ=env).state.max_journal_bytes == 10_000_000


def test_fields_accept_comma_separated_text() -> None:
    """A stream's fields may be a comma-separated string; id and timestamp are always added."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STREAMS": '[{"fields": "message, run_id"}]'}
    assert load(environ=env).streams[0].fields == ("message", "run_id", "id", "timestamp")


# --- bad input: every message names source, key, value and what is expected --------------


def test_malformed_toml(write_config: WriteConfig) -> None:
    """Malformed TOML names the file and the position of the mistake."""
    path = write_config('[api]\ntimeout = "2s\n')
    message = only(problems(path))
    assert message.startswith(f"config file {path}: not valid TOML: ")
    assert "line 2" in message


def test_config_file_not_found(tmp_path: Path) -> None:
    """A missing --config file is reported with its path."""
    missing = tmp_path / "missing.toml"
    assert only(problems(missing)) == (
        f"config file {missing}: not found; expected an existing TOML file"
    )


def test_config_file_from_environment_not_found(tmp_path: Path) -> None:
    """A missing file named by RUNFLOW_TAIL_CONFIG says that the variable named it."""
    missing = tmp_path / "missing.toml"
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_CONFIG": str(missing)}
    assert only(problems(environ=env)).startswith(
        f"config file {missing} (from RUNFLOW_TAIL_CONFIG): not found"
    )


def test_config_file_not_utf8(tmp_path: Path) -> None:
    """A config file that is not UTF-8 is reported, not a traceback."""
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[api]\ntimeout = '\xff'\n")
    assert only(problems(path)).startswith(f"config file {path}: not UTF-8 text")


def test_unknown_key_in_file(write_config: WriteConfig) -> None:
    """An unknown key names the file, the key path and the closest known key."""
    path = write_config("[api]\ntimeout_s = 3\n")
    assert only(problems(path)) == (
        f"config file {path}: api.timeout_s: unknown key; did you mean 'timeout'?"
    )


def test_unknown_key_in_a_batch_table_is_one_plain_problem(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    """``batch`` may be a table or true/false: a typo in the table is reported once, at its
    own key, not also as 'not a boolean' or under pydantic's name for the table's type."""
    out = tmp_path / "out.jsonl"
    path = write_config(
        f"[sinks.out]\ntype = 'file'\npath = '{out}'\n[sinks.out.batch]\nmax_evnts = 5\n"
    )
    assert only(problems(path)) == (
        f"config file {path}: sinks.out.batch.max_evnts: unknown key; did you mean 'max_events'?"
    )


def test_unknown_top_level_table_in_file(write_config: WriteConfig) -> None:
    """An unknown table names the file and suggests the section meant."""
    path = write_config("[stream]\nname = 'a'\n")
    assert only(problems(path)) == (
        f"config file {path}: stream: unknown key; did you mean 'streams'?"
    )


def test_unknown_key_in_sink_lists_the_known_ones(write_config: WriteConfig) -> None:
    """An unknown sink option with no close match lists what the sink type accepts."""
    path = write_config('[sinks.out]\ntype = "stdout"\nzzz = 1\n')
    message = only(problems(path))
    assert message.startswith(f"config file {path}: sinks.out.zzz: unknown key; expected one of: ")
    assert "format" in message


def test_unknown_nested_environment_variable() -> None:
    """An unknown nested variable names the variable, the key path and a suggestion."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_API__TIMEOT": "1s"}
    assert only(problems(environ=env)) == (
        "environment variable RUNFLOW_TAIL_API__TIMEOT: api.timeot: unknown key; "
        "did you mean 'timeout'?"
    )


def test_unknown_top_level_environment_variable() -> None:
    """A RUNFLOW_TAIL_ variable that is no setting at all is reported, not ignored."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_APII__TIMEOUT": "1s"}
    assert only(problems(environ=env)) == (
        "environment variable RUNFLOW_TAIL_APII__TIMEOUT: 'apii' is not a setting; "
        "did you mean 'api'?"
    )


def test_wrong_type_in_file(write_config: WriteConfig) -> None:
    """A wrong type names the file, the key, the value and the expected type."""
    path = write_config('[api]\nmax_requests_per_second = "fast"\n')
    assert only(problems(path)) == (
        f"config file {path}: api.max_requests_per_second = 'fast': Input should be a valid "
        "number, unable to parse string as a number"
    )


def test_wrong_type_in_environment_json() -> None:
    """A wrong type inside RUNFLOW_TAIL_STREAMS names that variable and the item's key."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STREAMS": '[{"page_size": "many"}]'}
    message = only(problems(environ=env))
    assert message.startswith(
        "environment variable RUNFLOW_TAIL_STREAMS: streams[0].page_size = 'many': "
    )
    assert "valid integer" in message


def test_out_of_range_value_is_one_problem(write_config: WriteConfig) -> None:
    """page_size 501 is one problem with the limit, not also a complaint about the list."""
    path = write_config("[[streams]]\npage_size = 501\n")
    assert only(problems(path)) == (
        f"config file {path}: streams[0].page_size = 501: Input should be less than or equal to 500"
    )


def test_bad_value_from_command_line() -> None:
    """A bad flag value is attributed to the command line."""
    message = only(problems(overrides={"log": {"level": "loud"}}))
    assert message.startswith("command line: log.level = 'loud': Input should be 'debug'")


def test_bad_duration_in_environment() -> None:
    """A bad duration names the variable, the key, the value and example durations."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_API__TIMEOUT": "soon"}
    assert only(problems(environ=env)) == (
        "environment variable RUNFLOW_TAIL_API__TIMEOUT: api.timeout = 'soon': 'soon' is not a "
        "duration (expected seconds as a number, or e.g. '500ms', '2s', '5m', '1h', '1h30m')"
    )


@pytest.mark.parametrize(
    ("toml_value", "expected"),
    [
        ("-1", "must not be negative"),
        ("0", "greater than 0"),
        ('"0s"', "greater than 0"),
        ("nan", "not a finite number of seconds"),
        ("inf", "not a finite number of seconds"),
        ("true", "must be a number of seconds"),
        ("[1]", "expected a duration"),
    ],
)
def test_invalid_durations(toml_value: str, expected: str, write_config: WriteConfig) -> None:
    """Non-positive, non-finite and non-numeric timeouts are refused with the reason."""
    path = write_config(f"[api]\ntimeout = {toml_value}\n")
    message = only(problems(path))
    assert message.startswith(f"config file {path}: api.timeout = ")
    assert expected in message


def test_non_finite_lookback_is_refused(write_config: WriteConfig) -> None:
    """lookback = nan (no positivity check) is still refused."""
    path = write_config("[[streams]]\nlookback = nan\n")
    assert "streams[0].lookback = nan" in only(problems(path))


@pytest.mark.parametrize("toml_value", ['"lots"', '"5k"', '"-5"', '"1e999"', "1.5", "true"])
def test_invalid_sizes(toml_value: str, write_config: WriteConfig) -> None:
    """Bad sizes name the key and value and say what a size looks like."""
    path = write_config(f"[state]\nmax_journal_bytes = {toml_value}\n")
    message = only(problems(path))
    assert message.startswith(f"config file {path}: state.max_journal_bytes = ")
    assert "expected a size" in message or "greater than or equal to 0" in message


def test_bad_start_at(write_config: WriteConfig) -> None:
    """A bad start_at lists the accepted forms."""
    path = write_config('[[streams]]\nstart_at = "yesterday"\n')
    message = only(problems(path))
    assert message.startswith(f"config file {path}: streams[0].start_at = 'yesterday': ")
    assert "'now', 'beginning', an RFC 3339 timestamp or a relative time like '-15m'" in message


def test_bad_base_url(write_config: WriteConfig) -> None:
    """A base_url that is not http(s) shows an example of a good one."""
    path = write_config('[api]\nbase_url = "ftp://x"\n')
    assert only(problems(path)) == (
        f"config file {path}: api.base_url = 'ftp://x': expected an http(s) URL such as "
        "https://api.runflow.io"
    )


def test_backoff_order_points_at_backoff_max() -> None:
    """backoff_max below backoff_initial is reported on backoff_max with both values."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_API__BACKOFF_MAX": "0.5s"}
    assert only(problems(environ=env)) == (
        "environment variable RUNFLOW_TAIL_API__BACKOFF_MAX: api.backoff_max = '0.5s': "
        "expected at least backoff_initial (1s)"
    )


def test_stream_names_an_unknown_sink(write_config: WriteConfig) -> None:
    """A stream subscribing to a sink that does not exist lists the configured sinks."""
    path = write_config(
        '[[streams]]\nname = "a"\nsinks = ["nope"]\n[sinks.console]\ntype = "stdout"\n'
        '[sinks.archive]\ntype = "file"\npath = "/tmp/x"\n'
    )
    assert only(problems(path)) == (
        f"config file {path}: streams[0].sinks = ['nope']: 'nope' is not a configured sink; "
        "expected one of: archive, console"
    )


def test_sink_names_an_unknown_stream(write_config: WriteConfig) -> None:
    """A sink subscribing to a stream that does not exist lists the configured streams."""
    path = write_config('[sinks.out]\ntype = "stdout"\nstreams = ["zz"]\n')
    assert only(problems(path)) == (
        f"config file {path}: sinks.out.streams = ['zz']: 'zz' is not a configured stream; "
        "expected one of: all"
    )


def test_duplicate_stream_names(write_config: WriteConfig) -> None:
    """Two streams with one name point at the second and the first."""
    path = write_config(
        '[[streams]]\nname = "a"\n[[streams]]\nname = "b"\n[[streams]]\nname = "a"\n'
    )
    assert only(problems(path)) == (
        f"config file {path}: streams[2].name = 'a': streams[0] already has this name; "
        "stream names must be unique"
    )


def test_duplicate_default_stream_name() -> None:
    """Two streams without a name both default to 'all' and collide."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STREAMS": "[{}, {}]"}
    assert only(problems(environ=env)).startswith(
        "environment variable RUNFLOW_TAIL_STREAMS: streams[1].name = 'all': "
    )


def test_reference_problems_reported_with_field_problems(write_config: WriteConfig) -> None:
    """Duplicate names and unknown sinks are listed along with ordinary field errors."""
    path = write_config(
        '[api]\ntimeout = "x"\n[[streams]]\nname = "a"\n[[streams]]\nname = "a"\n'
        'sinks = ["nope"]\n[sinks.out]\ntype = "stdout"\nstreams = ["zz"]\n'
    )
    found = problems(path)
    assert len(found) == 4, found
    assert [problem.split(": ")[1].split(" = ")[0] for problem in found] == [
        "api.timeout",
        "streams[1].name",
        "streams[1].sinks",
        "sinks.out.streams",
    ]
    assert all(problem.startswith(f"config file {path}: ") for problem in found)


def test_stream_may_name_a_sink_from_the_environment(write_config: WriteConfig) -> None:
    """References are resolved after merging, so a file stream may name an env-only sink."""
    path = write_config('[[streams]]\nname = "a"\nsinks = ["out"]\n')
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_SINKS__OUT__TYPE": "stdout"}
    settings = load(path, env)
    assert settings.sinks_for_stream(stream_named(settings, "a")) == ("out",)


def test_lookback_must_be_shorter_than_dedup_window(write_config: WriteConfig) -> None:
    """A dedup_window shorter than a stream's lookback is reported with both values."""
    path = write_config('[state]\ndedup_window = "1s"\n')
    assert only(problems(path)) == (
        f"config file {path}: streams[0].lookback = 5.0: must be shorter than "
        "state.dedup_window (1s), which keeps delivered entries long enough to recognise "
        "re-reads (lookback is 5s)"
    )


def test_lookback_problem_names_the_stream_source(write_config: WriteConfig) -> None:
    """When the stream sets lookback, the message names the source of the stream."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STREAMS": '[{"lookback": "20m"}]'}
    assert only(problems(environ=env)).startswith(
        "environment variable RUNFLOW_TAIL_STREAMS: streams[0].lookback = '20m': "
    )


def test_unknown_sink_type(write_config: WriteConfig) -> None:
    """An unknown sink type suggests the closest real one."""
    path = write_config('[sinks.out]\ntype = "fil"\npath = "/tmp/x"\n')
    assert only(problems(path)) == (
        f"config file {path}: sinks.out.type = 'fil': unknown sink type 'fil'; did you mean 'file'?"
    )


def test_sink_without_type(write_config: WriteConfig) -> None:
    """A sink table without a type lists the types there are."""
    path = write_config('[sinks.out]\nformat = "json"\n')
    assert only(problems(path)) == (
        f"config file {path}: sinks.out: every sink needs a type "
        "(discord, elasticsearch, file, loki, otlp, pagerduty, s3, slack, stdout, syslog, webhook)"
    )


def test_file_sink_without_path(write_config: WriteConfig) -> None:
    """A file sink without a path names the missing key."""
    path = write_config('[sinks.out]\ntype = "file"\n')
    assert only(problems(path)) == f"config file {path}: sinks.out.path: required key is missing"


def test_environment_only_sink_problems_name_the_variable() -> None:
    """Problems in a sink defined by the environment name the variables that define it."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_SINKS__OUT__TYPE": "fil"}
    assert only(problems(environ=env)) == (
        "environment variable RUNFLOW_TAIL_SINKS__OUT__TYPE: sinks.out.type = 'fil': "
        "unknown sink type 'fil'; did you mean 'file'?"
    )


def test_environment_only_file_sink_without_path() -> None:
    """A missing key in an env-defined sink names the variable that created the sink."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_SINKS__OUT__TYPE": "file"}
    assert only(problems(environ=env)) == (
        "environment variable RUNFLOW_TAIL_SINKS__OUT__TYPE: sinks.out.path: required key "
        "is missing"
    )


def test_invalid_json_in_environment() -> None:
    """Invalid JSON names the variable, its value, the position and an example."""
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STREAMS": "[{"}
    message = only(problems(environ=env))
    assert message.startswith(
        "environment variable RUNFLOW_TAIL_STREAMS: streams = '[{': not valid JSON ("
    )
    assert 'expected a JSON value such as [{"name": "all"}]' in message


def test_streams_written_as_a_table(write_config: WriteConfig) -> None:
    """[streams] instead of [[streams]] says a list of tables is expected."""
    path = write_config('[streams]\nname = "x"\n')
    assert only(problems(path)) == (
        f"config file {path}: streams = {{'name': 'x'}}: expected a list of stream tables "
        "([[streams]] in TOML)"
    )


def test_empty_stream_list(write_config: WriteConfig) -> None:
    """streams = [] is refused: at least one stream is needed."""
    path = write_config("streams = []\n")
    assert only(problems(path)) == (
        f"config file {path}: streams = []: expected at least one stream ([[streams]] table)"
    )


def test_every_problem_from_every_source_is_reported(write_config: WriteConfig) -> None:
    """Problems from the file, the environment and the flags come back in one error."""
    path = write_config('[api]\ntimeout = "x"\nbogus = 1\n[[streams]]\npage_size = 0\n')
    env = {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_STATE__DEDUP_WINDOW": "later"}
    found = problems(path, env, {"log": {"format": "xml"}})
    sources = sorted(problem.split(": ")[0] for problem in found)
    assert sources == [
        "command line",
        f"config file {path}",
        f"config file {path}",
        f"config file {path}",
        "environment variable RUNFLOW_TAIL_STATE__DEDUP_WINDOW",
    ]


# --- secrets ------------------------------------------------------------------------------


SECRET_CASES = {
    "file key and bad timeout": (f'[api]\napi_key = "{KEY}"\ntimeout = "x"\n', {}),
    "file key of the wrong type": (f'[api]\napi_key = ["{KEY}"]\n', {}),
    "file key, bad backoff, unknown key": (
        f'[api]\napi_key = "{KEY}"\nbackoff_max = "0.1s"\nbogus = "{KEY}"\n',
        {},
    ),
    "file key, table as duration": (f'[api]\napi_key = "{KEY}"\nbackoff_max = {{ a = 1 }}\n', {}),
    "key as the api table": (f'api = "{KEY}"\n', {}),
    "RUNFLOW_API_KEY and bad file": ('[api]\ntimeout = "x"\n', {"RUNFLOW_API_KEY": KEY}),
    "api table as JSON": ("", {"RUNFLOW_TAIL_API": json.dumps({"api_key": KEY, "timeout": "x"})}),
    "api table as broken JSON": ("", {"RUNFLOW_TAIL_API": '{"api_key": "' + KEY + '"'}),
    "nested env key, bad backoff": (
        "",
        {"RUNFLOW_TAIL_API__API_KEY": KEY, "RUNFLOW_TAIL_API__BACKOFF_MAX": "0.1"},
    ),
    "key in sink headers": (
        '[sinks.out]\ntype = "file"\n',
        {"RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_SINKS__OUT__HEADERS": KEY},
    ),
    "key file and duplicate streams": (
        '[[streams]]\nname = "a"\n[[streams]]\nname = "a"\n',
        {"RUNFLOW_TAIL_API__API_KEY_FILE": "KEY_FILE"},
    ),
    "key file and bad sink type": (
        "",
        {"RUNFLOW_TAIL_API__API_KEY_FILE": "KEY_FILE", "RUNFLOW_TAIL_SINKS__OUT__TYPE": "fil"},
    ),
}


@pytest.mark.parametrize(("toml", "env"), SECRET_CASES.values(), ids=SECRET_CASES.keys())
def test_secret_never_in_error_messages(
    toml: str, env: dict[str, str], write_config: WriteConfig, tmp_path: Path
) -> None:
    """However a config is broken, the key's value does not appear in the error."""
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    env = {name: str(key_file) if value == "KEY_FILE" else value for name, value in env.items()}
    with pytest.raises(ConfigError) as raised:
        load(write_config(toml), env)
    error = raised.value
    for text in (*error.problems, str(error), repr(error)):
        assert KEY not in text


def test_known_key_pasted_into_another_setting_is_masked(write_config: WriteConfig) -> None:
    """A key value echoed under a non-secret key (a paste into base_url) is still masked."""
    path = write_config(f'[api]\nbase_url = "{KEY}"\n')
    assert only(problems(path, {"RUNFLOW_API_KEY": KEY})) == (
        f"config file {path}: api.base_url = '********': expected an http(s) URL such as "
        "https://api.runflow.io"
    )


def test_secret_masked_in_repr_str_and_dump(tmp_path: Path) -> None:
    """repr, str and the JSON dump of loaded settings show the key masked."""
    (tmp_path / "runflow_api_key").write_text(KEY)
    settings = load(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    dumped = json.dumps(settings.model_dump(mode="json"))
    for text in (repr(settings), str(settings), repr(settings.api), dumped):
        assert KEY not in text
    assert settings.model_dump(mode="json")["api"]["api_key"] == "**********"


# --- routing ------------------------------------------------------------------------------


ROUTING = """
[[streams]]
name = "a"
sinks = ["x", "y"]
[[streams]]
name = "b"
[[streams]]
name = "c"
sinks = ["z"]

[sinks.x]
type = "stdout"
[sinks.y]
type = "stdout"
streams = ["b"]
[sinks.z]
type = "stdout"
streams = ["a", "b"]
"""


@pytest.mark.parametrize(("stream", "sinks"), [("a", ("x",)), ("b", ("x", "y", "z")), ("c", ())])
def test_sinks_for_stream_honours_both_sides(
    stream: str, sinks: tuple[str, ...], write_config: WriteConfig
) -> None:
    """A stream reaches a sink only if the stream lists it (or lists none) and vice versa."""
    settings = load(write_config(ROUTING))
    assert settings.sinks_for_stream(stream_named(settings, stream)) == sinks


@pytest.mark.parametrize(("sink", "streams"), [("x", ("a", "b")), ("y", ("b",)), ("z", ("b",))])
def test_streams_for_sink_honours_both_sides(
    sink: str, streams: tuple[str, ...], write_config: WriteConfig
) -> None:
    """streams_for_sink is the inverse of sinks_for_stream."""
    assert load(write_config(ROUTING)).streams_for_sink(sink) == streams


def test_streams_for_unknown_sink_is_empty() -> None:
    """An unknown sink name receives no streams."""
    assert load().streams_for_sink("nope") == ()


def test_model_checks_references_when_built_directly() -> None:
    """Settings built without the loader still refuses duplicate names and unknown sinks."""
    with pytest.raises(ValidationError) as raised:
        Settings(
            streams=(StreamSettings(name="a", sinks=("nope",)), StreamSettings(name="a")),
        )
    text = str(raised.value)
    assert "streams[1].name = 'a': streams[0] already has this name" in text
    assert "streams[0].sinks = ['nope']: 'nope' is not a configured sink" in text


def stream_named(settings: Settings, name: str) -> StreamSettings:
    (found,) = [stream for stream in settings.streams if stream.name == name]
    return found
