"""The tests' own PostgreSQL server does not outlive a test process killed before its
teardown (a SIGKILL, or ``timeout``'s SIGTERM)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.support.harness import REPO, wait_for_sync
from tests.support.postgres import require_server

pytestmark = pytest.mark.slow  # a test process of its own, and its server

STARTS_A_SERVER = """
import sys, time
from tests.support.postgres import make_server
server = make_server()
print(server.process.pid, server.directory, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Dead but not yet reaped by init counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_a_killed_test_process_takes_its_server_with_it() -> None:
    require_server()
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv (util-linux) here: the server is not tied to the test process")
    tests = subprocess.Popen(
        [sys.executable, "-c", STARTS_A_SERVER], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert tests.stdout is not None
    pid_text, directory = tests.stdout.readline().split()
    postmaster = int(pid_text)
    try:
        assert alive(postmaster)
        tests.send_signal(signal.SIGKILL)
        tests.wait()
        wait_for_sync(lambda: not alive(postmaster), timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGQUIT)
        shutil.rmtree(directory, ignore_errors=True)
