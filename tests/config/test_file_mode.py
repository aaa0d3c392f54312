"""A file sink's `mode`, as people write permission bits: in TOML, in an environment
variable, and as check-config shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from runflow_tail.config.load import load_settings
from runflow_tail.errors import ConfigError
from runflow_tail.sinks.file import FileSinkConfig

SINK_ENV = {
    "RUNFLOW_TAIL_SINKS__OUT__TYPE": "file",
    "RUNFLOW_TAIL_SINKS__OUT__PATH": "/tmp/out.jsonl",
}


def mode_from_environment(value: str, tmp_path: Path) -> int:
    environ = {"HOME": str(tmp_path), **SINK_ENV, "RUNFLOW_TAIL_SINKS__OUT__MODE": value}
    settings = load_settings(config_file=None, environ=environ, require_api_key=False)
    sink = settings.sinks["out"]
    assert isinstance(sink, FileSinkConfig)
    return sink.mode


@pytest.mark.parametrize(("text", "bits"), [("0640", 0o640), ("0o644", 0o644), ("0O600", 0o600)])
def test_an_environment_variable_takes_octal_as_chmod_does(
    text: str, bits: int, tmp_path: Path
) -> None:
    """RUNFLOW_TAIL_SINKS__OUT__MODE accepts "0640" and "0o640" and means those bits."""
    assert mode_from_environment(text, tmp_path) == bits


def test_text_without_the_leading_zero_is_refused_not_guessed(tmp_path: Path) -> None:
    """ "420" (decimal for 0644, or octal r---w----?) is a problem naming the variable and
    showing the octal forms that work."""
    with pytest.raises(ConfigError) as raised:
        mode_from_environment("420", tmp_path)
    (problem,) = raised.value.problems
    assert problem.startswith(
        "environment variable RUNFLOW_TAIL_SINKS__OUT__MODE: sinks.out.mode = '420': "
    )
    assert "'0640'" in problem and "'0o640'" in problem


def test_toml_integers_stay_exact(tmp_path: Path) -> None:
    """In TOML, 0o640 and its decimal 416 both mean rw-r-----; 0o1000 is out of range."""
    config = tmp_path / "c.toml"
    for written in ("0o640", "416"):
        config.write_text(f'[sinks.out]\ntype = "file"\npath = "/tmp/o"\nmode = {written}\n')
        settings = load_settings(config_file=config, environ={}, require_api_key=False)
        assert settings.sinks["out"].model_dump()["mode"] == 0o640
    config.write_text('[sinks.out]\ntype = "file"\npath = "/tmp/o"\nmode = 0o1000\n')
    with pytest.raises(ConfigError, match="permission bits from 0 to 0o777"):
        load_settings(config_file=config, environ={}, require_api_key=False)


def test_check_config_shows_the_mode_in_octal() -> None:
    """The resolved configuration (check-config's JSON) shows "0640", not 416."""
    sink = FileSinkConfig(path=Path("/tmp/o"), mode=0o640)
    assert sink.model_dump(mode="json")["mode"] == "0640"
    assert FileSinkConfig(path=Path("/tmp/o"), mode=sink.model_dump(mode="json")["mode"]) == sink
