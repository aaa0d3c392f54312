"""What a new user types in the first hour: help with defaults, exact values, where the
API is, and a one-shot tail that gives up instead of hanging."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from runflow_tail.cli import build_parser, main
from runflow_tail.cli.demo import path_hint
from runflow_tail.sandbox import SandboxThread
from runflow_tail.times import format_instant

from tests.support.harness import run_cli


def help_of(*command: str) -> str:
    parser = build_parser()
    for name in command:
        parser = next(
            action.choices[name]
            for action in parser._actions
            if isinstance(action.choices, dict) and name in action.choices
        )
    return " ".join(parser.format_help().split())


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (("sandbox",), "address to listen on (default: 127.0.0.1)"),
        (("sandbox",), "(0: any free port) (default: 8080)"),
        (("demo",), "runs started per second (default: 1.0)"),
        (("tail",), "or an RFC 3339 time (default: 10m)"),
        (("tail",), "poll interval when following (default: 2s)"),
        (("tail",), "retries forever (default: 20s)"),
        (("health",), "seconds to wait (default: 5.0)"),
    ],
)
def test_help_shows_each_default_from_the_flag_itself(command: tuple[str, ...], shown: str) -> None:
    """An option with a default shows it in --help, taken from the same add_argument call."""
    assert shown in help_of(*command)


def test_help_describes_every_option() -> None:
    """No option of any command is listed in --help without a description."""
    parser = build_parser()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action.choices, dict):
                stack.extend(action.choices.values())
            elif action.option_strings:
                assert action.help, f"{current.prog} {action.option_strings[0]} has no help"


def test_an_unknown_flag_shows_the_usage_of_the_command_typed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tail --bogus` exits 2 with tail's usage and the flag named, not the top level's usage."""
    with pytest.raises(SystemExit) as stopped:
        main(["tail", "--bogus"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: runflow-tail tail ")
    assert err.rstrip().endswith("runflow-tail tail: error: unrecognized arguments: --bogus")


def test_an_unknown_level_names_the_known_ones_and_the_escape(tmp_path: Path) -> None:
    """`--level errr` exits 2 before any request, suggesting `error`, listing the known
    levels and how to filter on any other level."""
    # A subprocess: the command configures process-wide logging, which must not leak into
    # the tests that run after this one.
    result = run_cli("tail", "--level", "errr", env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    err = result.stderr
    assert "--level 'errr': not a level runflow-tail knows; did you mean 'error'?" in err
    assert "(known: alert, critical, debug, emergency, error, fatal, info" in err
    assert "give --query 'level_code:errr'" in err


def test_the_api_url_comes_from_the_flag_then_our_variable_then_runflow_api_url(
    tmp_path: Path,
) -> None:
    """api.base_url: --api-url beats RUNFLOW_TAIL_API__BASE_URL, which beats RUNFLOW_API_URL,
    which beats the config file."""
    config = tmp_path / "c.toml"
    config.write_text('[api]\nbase_url = "http://file.example"\n')
    env = {"HOME": str(tmp_path), "RUNFLOW_API_URL": "http://plain.example"}

    def resolved(*flags: str, **extra: str) -> str:
        result = run_cli("check-config", "-c", str(config), *flags, env={**env, **extra})
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["api"]["base_url"])

    assert resolved() == "http://plain.example"
    assert resolved(RUNFLOW_TAIL_API__BASE_URL="http://ours.example") == "http://ours.example"
    assert resolved("--api-url", "http://flag.example/") == "http://flag.example"


def test_a_bad_api_url_flag_is_named_as_the_command_line(tmp_path: Path) -> None:
    """A malformed --api-url is a configuration problem attributed to the command line."""
    result = run_cli("check-config", "--api-url", "api.runflow.io", env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "  - command line: api.base_url = 'api.runflow.io': " in result.stderr


def test_a_one_shot_tail_gives_up_on_an_unreachable_api_with_one_line(
    tmp_path: Path, refused_port: int
) -> None:
    """A one-shot tail whose API refuses connections exits 4 after --give-up-after, with one
    line on stderr naming the API's URL and how to point elsewhere; stdout stays empty."""
    started = time.monotonic()
    result = run_cli(
        "tail",
        "--since",
        "1h",
        "--give-up-after",
        "1s",
        "--api-url",
        f"http://127.0.0.1:{refused_port}",
        env={"HOME": str(tmp_path), "RUNFLOW_API_KEY": "rf_test_key_123"},
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 4
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"runflow-tail: gave up after 1s without a good answer from the Runflow API at "
        f"http://127.0.0.1:{refused_port}: "
    )
    assert "RUNFLOW_API_URL" in lines[0]
    assert "rf_test_key_123" not in result.stderr
    assert elapsed < 15


def test_an_api_refusal_in_tail_names_the_api(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """A tail the API refuses (a wrong key) exits 4 with one line naming the API's URL."""
    result = run_cli(
        "tail",
        env={
            "HOME": str(tmp_path),
            "RUNFLOW_API_KEY": "rf_not_the_sandbox_key",
            "RUNFLOW_API_URL": sandbox_thread.url,
        },
    )
    assert result.returncode == 4
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"runflow-tail: {sandbox_thread.url}: "), lines
    assert "401" in lines[0]


def test_the_demo_says_how_to_put_runflow_tail_on_path_only_when_it_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off PATH, the demo's hints start with sourcing this venv's activate script (relative to
    the current directory); once runflow-tail is on PATH, that hint is gone."""
    scripts = tmp_path / ".venv" / "bin"
    scripts.mkdir(parents=True)
    (scripts / "activate").write_text("")
    command = scripts / "runflow-tail"
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    hint = path_hint(scripts, cwd=tmp_path)
    assert hint is not None and hint.startswith("  . .venv/bin/activate ")
    assert "pipx install ." in hint
    monkeypatch.setenv("PATH", f"{scripts}:/usr/bin:/bin")
    assert path_hint(scripts, cwd=tmp_path) is None


@pytest.mark.sandbox_options(rate_limit_per_second=5)
def test_max_requests_per_second_on_the_command_line_beats_the_config(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """A config that lifts the rate cap overruns an API limited to 5 requests a second (429s);
    the same tail with --max-requests-per-second 4 stays under it: the flag wins."""
    config = tmp_path / "c.toml"
    config.write_text("[api]\nmax_requests_per_second = 1000\n")
    sandbox_thread.generate(
        3_000, timestamp=format_instant(time.time_ns() - 60 * 10**9), step_ms=10
    )
    env = {
        "HOME": str(tmp_path),
        "RUNFLOW_API_KEY": sandbox_thread.api_key,
        "RUNFLOW_API_URL": sandbox_thread.url,
    }

    def throttled(*flags: str) -> tuple[int, int]:
        sandbox_thread.reset_stats()
        result = run_cli("tail", "-c", str(config), "--format", "json", *flags, env=env)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 3_000
        stats = sandbox_thread.stats()
        return int(stats["by_status"].get("429", 0)), int(stats["logs_requests"])

    unthrottled, _ = throttled()
    assert unthrottled > 0, "the config's rate should overrun the API's limit"
    refused, requests = throttled("--max-requests-per-second", "4")
    assert refused == 0
    assert requests >= 6
