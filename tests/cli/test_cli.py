"""The real command line, run as a subprocess with a controlled environment."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import REPO, run_cli

ANNOTATED_CONFIG = REPO / "config" / "runflow-tail.toml"
KEY = "sk-SECRET-1234"


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME (and so the default state dir) is inside tmp_path."""
    return {"HOME": str(tmp_path / "home")}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP socket that accepts nothing by itself; connections wait in its backlog."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server
    finally:
        server.close()


def connections_made(server: socket.socket) -> int:
    """How many connections completed against the listener (they queue until accepted)."""
    server.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


# --- help and usage -----------------------------------------------------------------------


def test_top_level_help(home: dict[str, str]) -> None:
    """--help exits 0 and lists every command, the config sources and the exit codes."""
    result = run_cli("--help", env=home)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: runflow-tail")
    for word in ("run", "check-config", "sandbox", "demo", "checkpoint", "status"):
        assert word in result.stdout
    assert "exit codes: 0 ok" in result.stdout
    assert "RUNFLOW_TAIL_CONFIG" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["check-config"],
        ["sandbox"],
        ["demo"],
        ["checkpoint"],
        ["checkpoint", "show"],
        ["checkpoint", "set"],
        ["checkpoint", "reset"],
        ["status"],
    ],
    ids=" ".join,
)
def test_subcommand_help(command: list[str], home: dict[str, str]) -> None:
    """Every subcommand's --help exits 0 with its own usage line and option list."""
    result = run_cli(*command, "--help", env=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: runflow-tail {' '.join(command)}")
    assert "-h, --help" in result.stdout
    assert result.stderr == ""


def test_version(home: dict[str, str]) -> None:
    """--version prints the version and exits 0."""
    result = run_cli("--version", env=home)
    assert result.returncode == 0
    assert result.stdout.startswith("runflow-tail ")


def test_no_command_prints_help_and_exits_2(home: dict[str, str]) -> None:
    """Without a command the help is shown and the exit code is 2 (usage error)."""
    result = run_cli(env=home)
    assert result.returncode == 2
    assert "usage: runflow-tail" in result.stdout


def test_unknown_subcommand(home: dict[str, str]) -> None:
    """An unknown command exits 2 with the valid choices and no traceback."""
    result = run_cli("tial", env=home)
    assert result.returncode == 2
    assert "invalid choice: 'tial'" in result.stderr
    assert "check-config" in result.stderr
    assert_no_traceback(result)


def test_unknown_flag(home: dict[str, str]) -> None:
    """An unknown flag exits 2 naming the flag and no traceback."""
    result = run_cli("check-config", "--bogus", env=home)
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr
    assert_no_traceback(result)


def test_bad_flag_value(home: dict[str, str]) -> None:
    """A flag value outside its choices exits 2 listing the choices."""
    result = run_cli("check-config", "--log-level", "loud", env=home)
    assert result.returncode == 2
    assert "invalid choice: 'loud'" in result.stderr
    assert_no_traceback(result)


def test_checkpoint_without_action(home: dict[str, str]) -> None:
    """`checkpoint` alone exits 2 saying an action is required."""
    result = run_cli("checkpoint", env=home)
    assert result.returncode == 2
    assert "required: ACTION" in result.stderr
    assert_no_traceback(result)


# --- check-config -------------------------------------------------------------------------


def test_check_config_passes_on_the_annotated_config(home: dict[str, str]) -> None:
    """The shipped config/runflow-tail.toml validates offline and prints resolved JSON."""
    result = run_cli(
        "check-config", "--config", str(ANNOTATED_CONFIG), env={**home, "RUNFLOW_API_KEY": KEY}
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert sorted(resolved["sinks"]) == ["archive"]  # no stdout sink pouring into journald
    assert [stream["name"] for stream in resolved["streams"]] == ["all"]
    assert resolved["api"]["timeout"] == 30.0
    assert resolved["state"]["dedup_window"] == 600.0
    assert "configuration OK" in result.stderr


def test_check_config_masks_the_key_from_the_environment(home: dict[str, str]) -> None:
    """The key from RUNFLOW_API_KEY is printed masked and appears nowhere in the output."""
    result = run_cli(
        "check-config", "--config", str(ANNOTATED_CONFIG), env={**home, "RUNFLOW_API_KEY": KEY}
    )
    assert json.loads(result.stdout)["api"]["api_key"] == "**********"
    assert KEY not in result.stdout + result.stderr


def test_check_config_masks_a_systemd_credential(home: dict[str, str], tmp_path: Path) -> None:
    """A key from $CREDENTIALS_DIRECTORY is masked too."""
    (tmp_path / "runflow_api_key").write_text(KEY + "\n")
    env = {**home, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["api"]["api_key"] == "**********"
    assert KEY not in result.stdout + result.stderr


def test_check_config_reads_config_from_environment(home: dict[str, str], tmp_path: Path) -> None:
    """RUNFLOW_TAIL_CONFIG names the file when --config is not given."""
    config = tmp_path / "c.toml"
    config.write_text('[api]\ntimeout = "7s"\n')
    env = {**home, "RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_CONFIG": str(config)}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["api"]["timeout"] == 7.0


def test_check_config_flag_beats_environment(home: dict[str, str]) -> None:
    """--log-level wins over RUNFLOW_TAIL_LOG__LEVEL, which wins over the file."""
    env = {**home, "RUNFLOW_API_KEY": KEY, "RUNFLOW_TAIL_LOG__LEVEL": "error"}
    args = ("check-config", "--config", str(ANNOTATED_CONFIG))
    assert json.loads(run_cli(*args, env=env).stdout)["log"]["level"] == "error"
    flagged = run_cli(*args, "--log-level", "debug", env=env)
    assert json.loads(flagged.stdout)["log"]["level"] == "debug"


def test_check_config_prints_every_problem(home: dict[str, str], tmp_path: Path) -> None:
    """A config with several problems exits 2 and lists each on stderr, none on stdout."""
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[api]\napi_key = "{KEY}"\ntimeout = "soon"\nretries = 3\n'
        '[[streams]]\nname = "a"\n[[streams]]\nname = "a"\nsinks = ["nope"]\n'
    )
    env = {**home, "RUNFLOW_TAIL_STATE__DEDUP_WINDOW": "later"}
    result = run_cli("check-config", "--config", str(config), env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "runflow-tail: configuration problems:"
    expected = [
        f"config file {config}: api.timeout = 'soon': ",
        f"config file {config}: api.retries: unknown key",
        "environment variable RUNFLOW_TAIL_STATE__DEDUP_WINDOW: state.dedup_window = 'later': ",
        f"config file {config}: streams[1].name = 'a': ",
        f"config file {config}: streams[1].sinks = ['nope']: ",
    ]
    for start in expected:
        assert sum(line.startswith(f"  - {start}") for line in lines) == 1, (start, lines)
    assert len(lines) == 1 + len(expected)
    assert KEY not in result.stderr
    assert_no_traceback(result)


def test_check_config_malformed_toml(home: dict[str, str], tmp_path: Path) -> None:
    """Malformed TOML exits 2 with the file and position, no traceback."""
    config = tmp_path / "bad.toml"
    config.write_text("[api\n")
    result = run_cli("check-config", "--config", str(config), env={**home, "RUNFLOW_API_KEY": KEY})
    assert result.returncode == 2
    assert f"  - config file {config}: not valid TOML: " in result.stderr
    assert_no_traceback(result)


def test_check_config_missing_file(home: dict[str, str], tmp_path: Path) -> None:
    """A --config path that does not exist exits 2 naming the path."""
    missing = tmp_path / "missing.toml"
    result = run_cli("check-config", "-c", str(missing), env={**home, "RUNFLOW_API_KEY": KEY})
    assert result.returncode == 2
    assert f"config file {missing}: not found" in result.stderr
    assert_no_traceback(result)


def test_check_config_without_key_warns_and_passes_offline(home: dict[str, str]) -> None:
    """Offline, a config without any API key validates (exit 0) with one warning saying
    where a key can come from, so a shipped file can be checked before its key exists."""
    result = run_cli("check-config", "--config", str(ANNOTATED_CONFIG), env=home)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no API key: set the RUNFLOW_API_KEY environment variable, api.api_key or "
        "api.api_key_file in the config file, or (systemd) LoadCredential=runflow_api_key:<path> "
        "(`run` and `check-config --online` need one)"
    ]
    assert json.loads(result.stdout)["api"]["api_key"] is None


def test_check_config_online_without_key_is_an_error(home: dict[str, str]) -> None:
    """With --online a missing key is a configuration problem (exit 2), before any request."""
    result = run_cli("check-config", "--online", "--config", str(ANNOTATED_CONFIG), env=home)
    assert result.returncode == 2
    assert "  - no API key: set the RUNFLOW_API_KEY environment variable" in result.stderr
    assert_no_traceback(result)


def test_check_config_unreadable_key_file(home: dict[str, str], tmp_path: Path) -> None:
    """An unreadable key file exits 2 naming the variable and the path."""
    env = {**home, "RUNFLOW_TAIL_API__API_KEY_FILE": str(tmp_path / "absent")}
    result = run_cli("check-config", env=env)
    assert result.returncode == 2
    assert (
        "environment variable RUNFLOW_TAIL_API__API_KEY_FILE: api.api_key_file = "
        f"'{tmp_path / 'absent'}': cannot read the key file"
    ) in result.stderr
    assert_no_traceback(result)


# --- run ----------------------------------------------------------------------------------


def _config_against(server: socket.socket, tmp_path: Path, extra: str = "") -> Path:
    port = server.getsockname()[1]
    config = tmp_path / "run.toml"
    config.write_text(
        f'[api]\nbase_url = "http://127.0.0.1:{port}"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n' + extra
    )
    return config


def test_run_with_invalid_config_exits_before_any_request(
    home: dict[str, str], tmp_path: Path, listener: socket.socket
) -> None:
    """`run` with an invalid config exits 2 with the messages and never connects to the API."""
    config = _config_against(listener, tmp_path, "[[streams]]\npage_size = 0\n")
    result = run_cli("run", "--config", str(config), env={**home, "RUNFLOW_API_KEY": KEY})
    assert result.returncode == 2
    assert f"  - config file {config}: streams[0].page_size = 0: " in result.stderr
    assert_no_traceback(result)
    assert connections_made(listener) == 0
    assert not (tmp_path / "state").exists()


def test_run_without_key_exits_before_any_request(
    home: dict[str, str], tmp_path: Path, listener: socket.socket
) -> None:
    """`run` with no API key exits 2 and never connects to the API."""
    config = _config_against(listener, tmp_path)
    result = run_cli("run", "--config", str(config), env=home)
    assert result.returncode == 2
    assert "no API key" in result.stderr
    assert_no_traceback(result)
    assert connections_made(listener) == 0


# --- checkpoint ---------------------------------------------------------------------------


def test_checkpoint_show_without_journal(home: dict[str, str], tmp_path: Path) -> None:
    """`checkpoint show` on a state dir the daemon never used says so clearly and fails."""
    state = tmp_path / "state"
    env = {**home, "RUNFLOW_TAIL_STATE__DIR": str(state)}
    result = run_cli("checkpoint", "show", env=env)
    assert result.returncode != 0
    problem = [line for line in result.stderr.splitlines() if "no journal" in line]
    assert len(problem) == 1
    assert f"no journal at {state / 'journal.sqlite3'}" in problem[0]
    assert "has not run with this state directory yet" in problem[0]
    assert result.stdout == ""
    assert_no_traceback(result)


def test_only_the_sandbox_commands_load_its_web_stack() -> None:
    """Every command builds every command's parser; starlette and uvicorn cost each one
    (health, a check-config in a pre-start hook) time for nothing unless it serves."""
    probe = (
        "import sys\n"
        "from runflow_tail.cli import build_parser\n"
        "build_parser().parse_args(['health'])\n"
        "print(sorted(m for m in ('uvicorn', 'starlette') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
