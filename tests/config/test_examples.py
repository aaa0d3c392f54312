"""The shipped configuration examples validate: config/examples/*.toml, and each sink table
written out (commented) in config/runflow-tail.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from runflow_tail.config.load import load_settings

from tests.support.harness import REPO, run_cli

EXAMPLES = sorted((REPO / "config" / "examples").glob("*.toml"))
ANNOTATED = REPO / "config" / "runflow-tail.toml"
NEW_SINK_TYPES = {"otlp", "elasticsearch", "loki", "s3", "syslog"}


def commented_sinks(text: str) -> dict[str, str]:
    """Each commented ``# [sinks.NAME]`` block (with its sub-tables), uncommented."""
    blocks: dict[str, str] = {}
    name, lines = None, []
    for line in [*text.splitlines(), ""]:
        header = re.fullmatch(r"# \[sinks\.([\w-]+)\]", line)
        if header or line.strip() in ("", "#"):
            if name is not None:
                blocks[name] = "\n".join(lines) + "\n"
            name, lines = (header.group(1), [line[2:]]) if header else (None, [])
        elif name is not None and line.startswith("# ") and not line.startswith("# # "):
            lines.append(line[2:])
    return blocks


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_each_example_passes_check_config(example: Path, tmp_path: Path) -> None:
    """`check-config` accepts every file in config/examples/."""
    result = run_cli(
        "check-config",
        "--config",
        str(example),
        env={"RUNFLOW_API_KEY": "k", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr


def test_every_new_sink_type_has_an_example() -> None:
    """Each of the destination sinks has its own focused example."""
    types = {re.search(r'type = "(\w+)"', path.read_text()).group(1) for path in EXAMPLES}  # type: ignore[union-attr]
    assert types >= NEW_SINK_TYPES


def test_each_documented_sink_table_validates(tmp_path: Path) -> None:
    """Each destination sink's table documented in config/runflow-tail.toml, uncommented, is
    valid (so the documented options and values are real ones)."""
    blocks = {
        name: block
        for name, block in commented_sinks(ANNOTATED.read_text()).items()
        if re.search(r'type = "(\w+)"', block).group(1) in NEW_SINK_TYPES  # type: ignore[union-attr]
    }
    assert len(blocks) == len(NEW_SINK_TYPES)
    for name, block in blocks.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(block)
        settings = load_settings(config_file=path, environ={}, require_api_key=False)
        assert name in settings.sinks
