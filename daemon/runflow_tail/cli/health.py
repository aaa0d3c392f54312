"""``runflow-tail health``: ask a running daemon's /readyz (for Docker HEALTHCHECK, scripts)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from runflow_tail.cli._common import load_settings_for
from runflow_tail.config.model import split_listen
from runflow_tail.errors import EXIT_FAILURE, EXIT_OK


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
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
    health.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="seconds to wait"
    )
    health.set_defaults(handler=_cmd_health)


def _cmd_health(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        host, port = split_listen(load_settings_for(args, require_api_key=False).server.listen)
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
