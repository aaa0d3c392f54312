"""`runflow-tail run` that cannot start says why in a line or two and exits with the
documented code: never a traceback, whichever part of the daemon found the problem."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from runflow_tail.journal import StateDirLock

from tests.support.harness import run_cli

KEY = {"RUNFLOW_API_KEY": "rf_test_0123456789abcdef"}


def write_config(tmp_path: Path, state_dir: Path, *, listen: str = "127.0.0.1:0") -> Path:
    config = tmp_path / "runflow-tail.toml"
    config.write_text(
        f"""
[api]
base_url = "http://127.0.0.1:9"

[state]
dir = "{state_dir}"

[server]
listen = "{listen}"
"""
    )
    return config


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        yield held.getsockname()[1]


def assert_one_clear_failure(stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr and "ExceptionGroup" not in stderr
    assert len(stderr.strip().splitlines()) <= 2, stderr
    for word in words:
        assert word in stderr


def test_a_port_in_use_is_a_configuration_error(tmp_path: Path, taken_port: int) -> None:
    """The health server's port taken by another program: exit 2, naming server.listen."""
    config = write_config(tmp_path, tmp_path / "state", listen=f"127.0.0.1:{taken_port}")
    result = run_cli("run", "--config", str(config), env=KEY)
    assert result.returncode == 2
    assert_one_clear_failure(result.stderr, "server.listen", "cannot listen there")


def test_a_state_directory_that_cannot_be_made_is_a_state_error(tmp_path: Path) -> None:
    """state.dir below a plain file: exit 3, naming the directory."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = write_config(tmp_path, blocker / "state")
    result = run_cli("run", "--config", str(config), env=KEY)
    assert result.returncode == 3
    assert_one_clear_failure(result.stderr, str(blocker / "state"))


def test_a_locked_state_directory_is_a_state_error(tmp_path: Path) -> None:
    """Another daemon holding the state directory: exit 3, saying so."""
    state_dir = tmp_path / "state"
    with StateDirLock(state_dir):
        result = run_cli("run", "--config", str(write_config(tmp_path, state_dir)), env=KEY)
    assert result.returncode == 3
    assert_one_clear_failure(result.stderr, "another runflow-tail")


def test_a_bad_config_is_a_configuration_error(tmp_path: Path) -> None:
    """An invalid value: exit 2, naming the key."""
    config = write_config(tmp_path, tmp_path / "state", listen="nowhere")
    result = run_cli("run", "--config", str(config), env=KEY)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "server.listen" in result.stderr
