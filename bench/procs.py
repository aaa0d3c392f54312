"""Processes the bench runs and watches: the sandbox, the daemon, and the files it writes.

CPU and memory come from the kernel, not from the processes themselves: ``/proc/<pid>``
while a process runs (CPU at the exact moment a drain completes, before shutdown work is
added; VmHWM, the peak RSS of its own address space) and ``os.wait4`` when it is reaped
(its lifetime CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.sandbox_server import READY_PREFIX

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "rf_sandbox_0123456789abcdef"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_FIELDS = ("id", "run_id", "level_code", "message", "timestamp", "meta")


# -- /proc -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (all threads) so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def status_kb(pid: int, key: str) -> int:
    """A ``VmRSS``/``VmHWM`` style line of /proc/<pid>/status, in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def bytes_written(pid: int) -> int:
    """Bytes the process has handed to write calls so far (``wchar`` of /proc/<pid>/io:
    the journal's WAL and database writes, files, logs), cached or not."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Reaped:
    returncode: int
    cpu_seconds: float
    peak_rss_mb: float


def reap(process: subprocess.Popen[bytes], *, term_timeout: float = 20.0) -> Reaped:
    """SIGTERM, wait (SIGKILL after ``term_timeout``); the child's CPU and peak RSS.

    Peak RSS is VmHWM read until the process exits, not ``ru_maxrss``: Linux carries the
    high-water mark of the address space replaced at exec into ``ru_maxrss``, and
    subprocess spawns with vfork, so that mark is the *bench's* RSS (180 MB after a
    full-object drain), which would hide the daemon's own.
    """
    if process.returncode is not None:  # reaped elsewhere: its rusage is gone
        return Reaped(process.returncode, float("nan"), float("nan"))
    peak_kb = status_kb(process.pid, "VmHWM")
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + term_timeout
    killed = False
    while True:
        peak_kb = max(peak_kb, status_kb(process.pid, "VmHWM"))
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if not killed and time.monotonic() > deadline:
            process.kill()
            killed = True
        time.sleep(0.02)
    # Tell Popen the child is reaped, so it never waits for it again.
    process.returncode = os.waitstatus_to_exitcode(status)
    return Reaped(
        returncode=process.returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak_kb / 1024,
    )


# -- the sandbox -----------------------------------------------------------------------


class Sandbox:
    """``python -m bench.sandbox_server`` and its control endpoints."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sandbox_server"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith(READY_PREFIX):
            self.process.kill()
            raise RuntimeError(f"the bench sandbox did not start (said {line!r})")
        self.url = line[len(READY_PREFIX) :].strip()
        # Generating 400k entries is one long control request.
        self.control = httpx.Client(base_url=self.url, timeout=300)

    def close(self) -> None:
        self.control.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.control.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def clear(self) -> None:
        self._call("DELETE", "/_sandbox/entries")
        self._call(
            "PATCH",
            "/_sandbox/options",
            {"latency": 0.0, "fault_429_every": None, "retry_after": None},
        )
        self.reset_stats()

    def generate(self, count: int, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/_sandbox/entries", {"generate": {"count": count, **spec}}
        )
        return result

    def clusters(self, ages: list[float], entries: int, **spec: Any) -> dict[str, Any]:
        body = {"clusters": {"ages": ages, "entries": entries, **spec}}
        result: dict[str, Any] = self._call("POST", "/_sandbox/entries", body)
        return result

    def append(self, entries: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = self._call("POST", "/_sandbox/entries", {"entries": entries})["ids"]
        return ids

    def patch_options(self, **changes: Any) -> None:
        self._call("PATCH", "/_sandbox/options", changes)

    def reset_stats(self) -> None:
        self._call("POST", "/_sandbox/stats/reset")
        self._call("POST", "/_bench/stats/reset")

    def stats(self) -> dict[str, Any]:
        """The sandbox's own stats merged with the bench wrapper's byte counters."""
        stats: dict[str, Any] = self._call("GET", "/_sandbox/stats")
        stats["bench"] = self._call("GET", "/_bench/stats")
        return stats

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def first_request_seen(self) -> bool:
        return self._call("GET", "/_bench/stats")["first_request_at"] is not None


# -- the daemon ------------------------------------------------------------------------


def toml_lines(**options: Any) -> str:
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in options.items())


def daemon_config(
    sandbox_url: str,
    state_dir: Path,
    *,
    stream: dict[str, Any],
    sink: str,
    max_requests_per_second: float = 1000,
    state: dict[str, Any] | None = None,
) -> str:
    return f"""
[api]
base_url = "{sandbox_url}"
max_requests_per_second = {max_requests_per_second}

[state]
dir = "{state_dir}"
{toml_lines(**(state or {}))}

[log]
format = "json"

[server]
# Any free port: a fixed one could be taken by another daemon on this machine.
listen = "127.0.0.1:0"

[[streams]]
name = "all"
{toml_lines(**stream)}

{sink}
"""


def file_sink(path: Path) -> str:
    # fsync = "never": the bench measures the pipeline, not the disk's flush latency.
    return f'[sinks.out]\ntype = "file"\npath = "{path}"\nfsync = "never"\n'


class Daemon:
    """``runflow-tail run`` as a real subprocess (what users run), stderr to a log file."""

    def __init__(
        self,
        config_text: str,
        work: Path,
        *,
        wrapper: list[str] | None = None,
    ) -> None:
        self.config = work / "runflow-tail.toml"
        self.config.write_text(config_text)
        self.log = work / "daemon.log"
        env = {**os.environ, "RUNFLOW_API_KEY": API_KEY}
        command = [sys.executable, "-m", "runflow_tail", "run", "--config", str(self.config)]
        self.started_at = time.monotonic()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*(wrapper or []), *command],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
            )
        self.reaped: Reaped | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        if self.reaped is not None:
            return False
        # WNOWAIT: look without reaping, so that stop() still gets the child's rusage.
        exited = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return exited is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def hwm_mb(self) -> float:
        return status_kb(self.pid, "VmHWM") / 1024

    def bytes_written(self) -> int:
        return bytes_written(self.pid)

    def rss_mb(self) -> float:
        return status_kb(self.pid, "VmRSS") / 1024

    def stop(self) -> Reaped:
        if self.reaped is None:
            self.reaped = reap(self.process)
        return self.reaped

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_bytes().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def warnings(self) -> dict[str, int]:
        """How often each warning or error event was logged (retries, pauses, ...)."""
        counts: dict[str, int] = {}
        for event in self.events():
            if event.get("level") in ("warning", "error", "critical"):
                name = str(event.get("event"))
                counts[name] = counts.get(name, 0) + 1
        return counts

    def problems(self) -> list[str]:
        """Warning and error events, to show why a run did not finish."""
        return [
            f"{event.get('event')}: {event.get('error') or event.get('problem') or ''}"
            for event in self.events()
            if event.get("level") in ("warning", "error", "critical")
        ]

    def wait_for_event(self, name: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(event.get("event") == name for event in self.events()):
                return
            if not self.alive():
                raise RuntimeError(f"the daemon exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"no {name} event within {timeout}s")


# -- the output file -------------------------------------------------------------------


class LineCounter:
    """Counts the lines of a growing file, reading only what is new each time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._offset = 0
        self.seen: list[tuple[float, int]] = []
        """(monotonic instant, lines) at each look while waiting."""

    def update(self) -> int:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                while chunk := handle.read(1 << 22):
                    self.lines += chunk.count(b"\n")
                    self._offset += len(chunk)
        except FileNotFoundError:
            pass
        return self.lines

    def wait_for(
        self,
        lines: int,
        *,
        timeout: float,
        alive: Callable[[], bool],
        interval: float = 0.02,
    ) -> float | None:
        """Poll until the file holds ``lines`` lines; the monotonic instant seen, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.update()
            self.seen.append((time.monotonic(), self.lines))
            if self.lines >= lines:
                return self.seen[-1][0]
            if not alive():
                return None
            time.sleep(interval)
        return None


class _Id(msgspec.Struct):
    id: str


class IdTail:
    """Follows a JSON Lines file and notes the monotonic instant each entry id appears."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, float] = {}
        self._offset = 0
        self._partial = b""
        self._decode = msgspec.json.Decoder(_Id).decode

    def update(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        now = time.monotonic()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self.seen.setdefault(self._decode(line).id, now)
