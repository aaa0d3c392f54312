"""The sandbox: a faithful Runflow logs API simulator, for offline config tests and our tests.

Serve it in-process (``serve_sandbox``), in a background thread (``SandboxThread``), or
from the command line (``runflow-tail sandbox``, built on ``add_sandbox_arguments``).
"""

from __future__ import annotations

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
