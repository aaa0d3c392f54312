"""The ``runflow-tail`` command line.

Exit codes: 0 ok; 1 unexpected failure; 2 usage or configuration error; 3 state
directory problem (locked, unreadable journal); 4 the Runflow API refused the request
(bad key, filter or run). No expected error ends in a Python traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, RunflowTailError

EPILOG = """\
exit codes: 0 ok, 1 unexpected failure, 2 usage or configuration error,
            3 state directory problem, 4 the Runflow API refused the request

Configuration: --config FILE (or RUNFLOW_TAIL_CONFIG), then RUNFLOW_TAIL_* environment
variables (RUNFLOW_TAIL_API__TIMEOUT=10s), then flags. The API key comes from
RUNFLOW_API_KEY, api.api_key_file, or systemd's $CREDENTIALS_DIRECTORY/runflow_api_key.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line and a hint, like every other config error."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _common(with_config: bool = True) -> _Parser:
    common = _Parser(add_help=False)
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
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info, or log.level)",
    )
    common.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        help="log format on stderr: JSON lines, or readable console (default: auto = "
        "console on a TTY, JSON otherwise)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    from .sandbox.arguments import add_sandbox_arguments

    parser = _Parser(
        prog="runflow-tail",
        description="Tail Runflow run logs into stdout, files, webhooks and alerts: "
        "durably, exactly once, in order.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runflow-tail {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common()

    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the daemon: poll every stream, deliver to every sink",
        description="Poll every configured stream and deliver new entries to every sink "
        "until SIGTERM/SIGINT (graceful: finishes the batch in hand; a second signal stops "
        "at once). SIGHUP reopens output files.",
    )
    run.add_argument("--state-dir", type=Path, help="override state.dir")
    run.set_defaults(handler=_cmd_run)

    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration (offline)",
        description="Print every configuration problem and exit 2, or print the resolved "
        "configuration (secrets masked) and exit 0.",
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask the API whether the key works and each stream's query is accepted",
    )
    check.set_defaults(handler=_cmd_check_config)

    sandbox = commands.add_parser(
        "sandbox",
        parents=[_common(with_config=False)],
        help="serve a local Runflow API simulator for offline testing",
        description="Serve the sandbox: a faithful Runflow API simulator with a live world "
        "of runs, every documented variant and fault selectable by flags.",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--port", type=int, default=8080, help="port (0 = any free port)")
    add_sandbox_arguments(sandbox)
    sandbox.set_defaults(handler=_cmd_sandbox)

    demo = commands.add_parser(
        "demo",
        parents=[_common(with_config=False)],
        help="zero-config demo: a sandbox world tailed to your terminal",
        description="Start the sandbox in-process and tail its live world to the terminal "
        "with the real tail engine, until Ctrl-C.",
    )
    demo.add_argument("--rate", type=float, default=1.0, help="runs started per second")
    demo.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    demo.set_defaults(handler=_cmd_demo)

    health = commands.add_parser(
        "health",
        parents=[common],
        help="ask a running daemon whether it is ready (exit 0/1)",
        description="GET /readyz from a running daemon: print its answer, exit 0 when ready, "
        "1 when not (or unreachable). For Docker HEALTHCHECK and scripts.",
    )
    health.add_argument(
        "--url", help="the readiness URL (default: http://<server.listen>/readyz from the config)"
    )
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (5)")
    health.set_defaults(handler=_cmd_health)

    from .checkpoint_cli import add_operator_commands

    add_operator_commands(commands, common)
    from .replay import add_replay_command
    from .tail import add_tail_command

    add_replay_command(commands, common)
    add_tail_command(commands, common)
    from .alerts.cli import add_alerts_command

    add_alerts_command(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return handler(args)
    except RunflowTailError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


def _print_error(exc: RunflowTailError) -> None:
    if isinstance(exc, ConfigError):
        print("runflow-tail: configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
    else:
        print(f"runflow-tail: {exc}", file=sys.stderr)


def load_from_args(
    args: argparse.Namespace, *, require_api_key: bool = True, extra: dict[str, Any] | None = None
) -> Any:
    from .config_loader import environ_snapshot, load_settings

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
    return load_settings(
        config_file=getattr(args, "config", None),
        environ=environ_snapshot(),
        overrides=overrides,
        require_api_key=require_api_key,
    )


def _configure_logging(args: argparse.Namespace, settings: Any = None) -> None:
    from .observability import configure_logging

    configure_logging(
        args.log_level or (settings.log.level if settings else "info"),
        args.log_format or (settings.log.format if settings else "auto"),
    )


def _cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from .config_loader import environ_snapshot
    from .daemon import Daemon, RunOptions
    from .systemd import SystemdNotifier

    settings = load_from_args(args)
    _configure_logging(args, settings)
    options = RunOptions(
        reload=lambda: load_from_args(args),
        notifier=SystemdNotifier.from_environ(environ_snapshot()),
    )
    anyio.run(Daemon(settings, settings.state.dir, options).run)
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    import msgspec

    from .sinks import PLUGIN_LOAD_ERRORS

    settings = load_from_args(args)
    if PLUGIN_LOAD_ERRORS:
        raise ConfigError(PLUGIN_LOAD_ERRORS)
    if args.online:
        import anyio

        from .online_check import check_online

        _configure_logging(args, settings)
        problems = anyio.run(check_online, settings)
        if problems:
            raise ConfigError(problems)
    resolved = settings.model_dump(mode="json")
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(resolved), indent=2).decode() + "\n")
    print("configuration OK", file=sys.stderr)
    return EXIT_OK


def _cmd_health(args: argparse.Namespace) -> int:
    import httpx

    url = args.url
    if url is None:
        from .settings import split_listen

        host, port = split_listen(load_from_args(args, require_api_key=False).server.listen)
        # A wildcard address is where the daemon listens, not where to connect.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        url = f"http://[{host}]:{port}/readyz" if ":" in host else f"http://{host}:{port}/readyz"
    try:
        response = httpx.get(url, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"runflow-tail: {url} is not reachable ({type(exc).__name__})", file=sys.stderr)
        return EXIT_FAILURE
    print(response.text)
    return EXIT_OK if response.status_code == 200 else EXIT_FAILURE


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import options_from_arguments
    from .sandbox_cli import serve_forever

    _configure_logging(args)
    return serve_forever(options_from_arguments(args), host=args.host, port=args.port)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .observability import configure_logging

    # The demo's stdout is the show; daemon chatter on stderr only when asked for.
    configure_logging(args.log_level or "warning", args.log_format or "auto")
    return run_demo(rate=args.rate, seconds=args.seconds)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main"]
