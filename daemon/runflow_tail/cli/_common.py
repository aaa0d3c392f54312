"""What every command shares: the parser that exits 2 on a usage error, the common flags,
loading the configuration from flags, one logging setup, and opening the journal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runflow_tail.config.load import environ_snapshot, load_settings
from runflow_tail.config.model import Settings
from runflow_tail.config.secrets import secret_values
from runflow_tail.errors import EXIT_CONFIG, ConfigError
from runflow_tail.journal import JOURNAL_NAME, JournalStore
from runflow_tail.observability import LogFormat, LogLevel, configure_logging, register_secrets

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


class Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line and a hint, like every other config error."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def common_options(*, with_config: bool = True) -> Parser:
    """The flags every command takes (a parent parser)."""
    common = Parser(add_help=False)
    if with_config:
        common.add_argument(
            "--config",
            "-c",
            type=Path,
            metavar="FILE",
            help="TOML config file (default: $RUNFLOW_TAIL_CONFIG, else built-in defaults)",
        )
    common.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="log verbosity (default: info, or log.level)",
    )
    common.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log format on stderr: JSON lines, or readable console (default: auto = "
        "console on a TTY, JSON otherwise)",
    )
    return common


def load_settings_for(
    args: argparse.Namespace, *, require_api_key: bool = True, extra: dict[str, Any] | None = None
) -> Settings:
    """The configuration from --config, the environment and the flags in ``args``."""
    overrides: dict[str, Any] = dict(extra or {})
    log_overrides = {
        key: value
        for key, value in (("level", args.log_level), ("format", args.log_format))
        if value is not None
    }
    if log_overrides:
        overrides["log"] = log_overrides
    if getattr(args, "state_dir", None) is not None:
        overrides["state"] = {"dir": str(args.state_dir)}
    settings = load_settings(
        config_file=getattr(args, "config", None),
        environ=environ_snapshot(),
        overrides=overrides,
        require_api_key=require_api_key,
    )
    # Before anything can log or fail: every secret is masked wherever text leaves.
    register_secrets(secret_values(settings))
    return settings


def configure_logging_for(
    args: argparse.Namespace, settings: Settings | None = None, *, quiet: bool = False
) -> None:
    """Logging from the flags, else the configuration; ``quiet`` commands (whose stdout is
    the show) log warnings and worse unless asked otherwise."""
    level: LogLevel = args.log_level or (
        "warning" if quiet else settings.log.level if settings else "info"
    )
    log_format: LogFormat = args.log_format or (settings.log.format if settings else "auto")
    configure_logging(level, log_format)


def open_journal_store(settings: Settings) -> JournalStore:
    """The state directory's journal, for an operator command; a clear error when the
    daemon has never run there."""
    assert settings.state.dir is not None
    path = settings.state.dir / JOURNAL_NAME
    if not path.exists():
        raise ConfigError(
            f"no journal at {path}: the daemon has not run with this state directory yet "
            "(check state.dir / --config)"
        )
    return JournalStore(path)
