"""The package's layers, as its docstring states them, checked on every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import runflow_tail

PACKAGE = Path(runflow_tail.__file__).resolve().parent
RANKS = {
    "api": 1,
    "journal": 1,
    "sinks": 2,
    "delivery": 3,
    "config": 4,
    "ingest": 5,
    "alerts": 5,
    # The PostgreSQL state: a Journal on its own store, and the lease manager; it reads the
    # [state] settings (config) and is used only by the daemon and the CLI.
    "postgres": 5,
    "service": 6,
    "cli": 7,
}
"""Base modules (top-level files) rank 0; a folder imports only folders of lower rank."""
LAZY_IMPORTS = {
    # The sandbox package resolves its names on first use, so that every command can build
    # the sandbox's flags and only the sandbox commands load its web stack (starlette, uvicorn).
    ("sandbox/__init__.py", "runflow_tail.sandbox"),
    # Optional extras, imported when such a sink is built, so that a configuration without
    # one loads without them (and check-config names the extra when one is missing).
    ("sinks/otlp.py", "runflow_tail.sinks.otlp_proto"),  # protobuf: runflow-tail[otlp]
    ("sinks/s3.py", "obstore"),  # obstore: runflow-tail[s3]
    # psycopg: runflow-tail[postgres]; the daemon loads the package only for that backend.
    ("service/state.py", "runflow_tail.postgres"),
}
"""Imports allowed below a module's top, each with its reason."""


def room_of(module: str) -> str:
    """``runflow_tail.api.client`` -> ``api``; a top-level module -> ``base``."""
    parts = module.split(".")
    if parts[0] != "runflow_tail" or len(parts) < 2:
        return "outside"
    if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
        return "base"
    return parts[1]


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, node, at the top of the module?) for every import in ``tree``."""
    top = {id(node) for node in getattr(tree, "body", [])}
    found: list[tuple[str, ast.AST, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "runflow_tail":
                found += [
                    (f"runflow_tail.{alias.name}", node, id(node) in top) for alias in node.names
                ]
            else:
                found.append((target, node, id(node) in top))
    return found


def broken_rules(relative: str, source: str) -> list[str]:
    """Every layer rule that the module at ``relative`` (e.g. ``api/client.py``) breaks."""
    path = Path(relative)
    is_package = path.name == "__init__.py"
    dotted = ".".join(("runflow_tail", *path.with_suffix("").parts))
    module = dotted.removesuffix(".__init__")
    # The package's own __init__ (the plugin API) and __main__ stand above every layer.
    room = "root" if relative in ("__init__.py", "__main__.py") else room_of(module)
    problems: list[str] = []
    for target, node, at_top in imports_of(ast.parse(source), module, is_package):
        line = getattr(node, "lineno", 0)
        where = f"{relative}:{line}"
        lazy_ok = any(
            relative == lazy_module and target.startswith(prefix)
            for lazy_module, prefix in LAZY_IMPORTS
        )
        if not at_top and not lazy_ok:
            # `if TYPE_CHECKING:` blocks hide upward imports from Python but not from us.
            problems.append(f"{where}: import of {target} inside a function or block")
        other = room_of(target)
        if other in ("outside", room) or room == "root":
            continue
        if other == "cli":
            problems.append(f"{where}: {room} imports cli ({target})")
        elif other == "sandbox" or room == "sandbox":
            if room == "sandbox" and other != "base":
                problems.append(f"{where}: the sandbox imports {other} ({target})")
            elif room != "sandbox" and room != "cli":
                problems.append(f"{where}: {room} imports the sandbox ({target})")
        elif room == "base":
            problems.append(f"{where}: a base module imports {other} ({target})")
        elif other != "base" and RANKS[other] >= RANKS[room]:
            problems.append(f"{where}: {room} imports {other} ({target}), which is not below it")
    return problems


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", package_modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_every_import_points_down_the_layers(path: Path) -> None:
    """No module imports a layer above its own, a neighbour on its own line, or cli."""
    relative = str(path.relative_to(PACKAGE))
    assert broken_rules(relative, path.read_text()) == []


def test_every_folder_has_a_rank() -> None:
    """A new folder must be placed in the layers before it can be used."""
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders - {"sandbox"} == set(RANKS)


@pytest.mark.parametrize(
    ("relative", "source", "broken"),
    [
        ("api/client.py", "from runflow_tail.journal import Journal\n", "api imports journal"),
        ("sinks/file.py", "from runflow_tail.ingest.poller import Poller\n", "not below it"),
        ("times.py", "from runflow_tail.config.model import Settings\n", "a base module"),
        ("service/daemon.py", "from runflow_tail.cli import main\n", "imports cli"),
        ("ingest/poller.py", "from runflow_tail.alerts import engine\n", "not below it"),
        ("sandbox/app.py", "from runflow_tail.journal import Journal\n", "the sandbox imports"),
        ("journal/store.py", "from ..sinks import base\n", "journal imports sinks"),
        ("delivery/loop.py", "def f():\n    from runflow_tail import errors\n", "inside a"),
        (
            "ingest/backfill.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from runflow_tail.service.daemon import Daemon\n",
            "inside a function or block",
        ),
    ],
)
def test_the_check_catches_each_kind_of_broken_rule(
    relative: str, source: str, broken: str
) -> None:
    """Each rule, broken on purpose, is reported (so the check above can fail)."""
    assert any(broken in problem for problem in broken_rules(relative, source))


def test_the_check_accepts_imports_that_point_down() -> None:
    source = (
        "from runflow_tail.api.client import RunflowClient\n"
        "from runflow_tail.journal import Journal\n"
        "from runflow_tail.times import now_ns\n"
        "from runflow_tail.ingest import probe\n"
    )
    assert broken_rules("ingest/poller.py", source) == []
