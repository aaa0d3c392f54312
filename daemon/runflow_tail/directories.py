"""Directories created with exactly the mode asked for, whatever the umask."""

from __future__ import annotations

from pathlib import Path


def make_directories(directory: Path, mode: int) -> None:
    """Create ``directory`` and its missing parents with ``mode``; the umask would take
    bits away (a journal's 0700, a sink's 0750). Directories that already exist are left
    as their owner set them."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=mode)
        except FileExistsError:
            continue
        created.chmod(mode)
