"""Third-party sinks through the `runflow_tail.sinks` entry point: the README example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runflow_tail.sandbox import SandboxThread

from tests.support.harness import config_toml, wait_for_sync

README = Path(__file__).resolve().parents[2] / "README.md"


def _install_readme_plugin(site: Path) -> None:
    """Write the README's example sink plus entry-point metadata, as pip would install it."""
    text = README.read_text()
    section = text[text.index("### Write your own sink") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    (site / "runflow_tail_lines.py").write_text(code.group(1))
    dist = site / "runflow_tail_lines-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: runflow-tail-lines\nVersion: 0.1\n"
    )
    entry_point = re.search(
        r'\[project\.entry-points\."runflow_tail\.sinks"\]\n(\w+) = "([^"]+)"', section
    )
    assert entry_point is not None
    (dist / "entry_points.txt").write_text(
        f"[runflow_tail.sinks]\n{entry_point.group(1)} = {entry_point.group(2)}\n"
    )


def _env(site: Path, sandbox: SandboxThread) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "RUNFLOW_API_KEY": sandbox.api_key}


@pytest.mark.slow
def test_the_readme_plugin_sink_receives_entries(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """The README's 30-line sink, registered by entry point, is configured by `type` and gets
    every entry."""
    site = tmp_path / "site"
    site.mkdir()
    _install_readme_plugin(site)
    sandbox_thread.generate(25, step_ms=1, message="plugin line {i}", full_run=False)
    lines = tmp_path / "lines.txt"
    sinks = f'[sinks.mine]\ntype = "lines"\npath = "{lines}"\n'
    config = tmp_path / "c.toml"
    config.write_text(config_toml(sandbox_thread, tmp_path / "state", tmp_path / "x", sinks=sinks))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "runflow_tail", "run", "--config", str(config)],
        env=_env(site, sandbox_thread),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_sync(lambda: lines.exists() and lines.read_text().count("\n") >= 25)
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=10) == 0
    text = lines.read_text().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in text) == sorted(
        f"plugin line {i}" for i in range(25)
    )


def test_plugin_options_are_validated_like_builtin_ones(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """A plugin sink missing its required option fails check-config with the key named."""
    site = tmp_path / "site"
    site.mkdir()
    _install_readme_plugin(site)
    config = tmp_path / "c.toml"
    config.write_text(
        config_toml(
            sandbox_thread,
            tmp_path / "state",
            tmp_path / "x",
            sinks='[sinks.mine]\ntype = "lines"\n',
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "runflow_tail", "check-config", "--config", str(config)],
        env=_env(site, sandbox_thread),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "sinks.mine.path" in result.stderr and "missing" in result.stderr
