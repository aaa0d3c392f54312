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
from runflow_tail.journal import JOURNAL_NAME, JournalStore, OperatorStore
from runflow_tail.observability import LogFormat, LogLevel, configure_logging, register_secrets
from runflow_tail.service.state import open_shared_store

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
_LEAF = "_runflow_tail_parser"
"""Where a (sub)command's parser leaves itself in the namespace, for usage errors."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """One source for help: each option's default is shown from the ``add_argument`` call
    that sets it, so the text cannot drift from the behaviour. Paragraphs are wrapped;
    text with line breaks (examples) is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = (
            default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
            and (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        )
        return f"{text} (default: %(default)s)" if shown else action.help


class Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line and the usage of the command that was typed (not
    the top level's), like every other config error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        # The innermost command parses last and names itself first; its parents keep that.
        if not hasattr(parsed, _LEAF):
            setattr(parsed, _LEAF, self)
        return parsed, extras

    def parse_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        leaf: argparse.ArgumentParser = vars(parsed).pop(_LEAF, self)
        if extras:
            leaf.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


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
        help="log verbosity (default: the config's log.level, else info; demo and a "
        "following tail: warning, a one-shot tail: error)",
    )
    common.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log format on stderr: JSON lines, or readable console (default: auto = "
        "console on a TTY, JSON otherwise)",
    )
    return common


def add_api_url(parser: argparse.ArgumentParser) -> None:
    """``--api-url``: the commands that talk to the Runflow API."""
    parser.add_argument(
        "--api-url",
        metavar="URL",
        help="the Runflow API's base URL (default: api.base_url, else $RUNFLOW_API_URL, "
        "else https://api.runflow.io); e.g. http://127.0.0.1:8080 for the sandbox",
    )


def add_max_requests_per_second(parser: argparse.ArgumentParser) -> None:
    """``--max-requests-per-second``: a faster (or gentler) rate for this process only."""
    parser.add_argument(
        "--max-requests-per-second",
        type=float,
        metavar="RATE",
        help="requests per second to the API for this process only, e.g. 50 to drain a "
        "backlog faster; the limit is per organization and shared with your other clients "
        "(default: api.max_requests_per_second, else 5)",
    )


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
    if getattr(args, "api_url", None) is not None:
        overrides["api"] = {**overrides.get("api", {}), "base_url": args.api_url}
    if getattr(args, "max_requests_per_second", None) is not None:
        rate = args.max_requests_per_second
        overrides["api"] = {**overrides.get("api", {}), "max_requests_per_second": rate}
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


def open_journal_store(settings: Settings) -> OperatorStore:
    """The state directory's journal (or the shared PostgreSQL state), for an operator
    command; a clear error when the daemon has never run there."""
    if settings.state.backend == "postgres":
        return open_shared_store(settings)
    assert settings.state.dir is not None
    path = settings.state.dir / JOURNAL_NAME
    if not path.exists():
        raise ConfigError(
            f"no journal at {path}: the daemon has not run with this state directory yet "
            "(check state.dir / --config)"
        )
    return JournalStore(path)
