"""The sandbox: a faithful Runflow logs API simulator, for offline config tests and our tests.

Serve it in-process (``serve_sandbox``), in a background thread (``SandboxThread``), or
from the command line (``runflow-tail sandbox``, built on ``add_sandbox_arguments``).

Names are imported on first use: every ``runflow-tail`` command builds the sandbox's
flags, and only the sandbox commands need starlette and uvicorn loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runflow_tail.sandbox.app import create_app
    from runflow_tail.sandbox.arguments import add_sandbox_arguments, options_from_arguments
    from runflow_tail.sandbox.options import (
        DEFAULT_API_KEY,
        DEFAULT_ORGANIZATION_ID,
        SandboxOptions,
        ScriptedFault,
    )
    from runflow_tail.sandbox.server import SandboxHandle, SandboxThread, serve_sandbox
    from runflow_tail.sandbox.world import World

_HOMES = {
    "create_app": "app",
    "add_sandbox_arguments": "arguments",
    "options_from_arguments": "arguments",
    "DEFAULT_API_KEY": "options",
    "DEFAULT_ORGANIZATION_ID": "options",
    "SandboxOptions": "options",
    "ScriptedFault": "options",
    "SandboxHandle": "server",
    "SandboxThread": "server",
    "serve_sandbox": "server",
    "World": "world",
}

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_ORGANIZATION_ID",
    "SandboxHandle",
    "SandboxOptions",
    "SandboxThread",
    "ScriptedFault",
    "World",
    "add_sandbox_arguments",
    "create_app",
    "options_from_arguments",
    "serve_sandbox",
]


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
