"""Where the daemon spends its time during a projected drain, sampled with py-spy.

py-spy is a dev tool, not a dependency: install it into .venv by hand
(``.venv/bin/pip install py-spy``). It attaches to the running daemon (``--nonblocking``,
so the daemon is never paused) and writes collapsed stacks, one ``frame;frame;... count``
line per distinct stack, which flamegraph.pl or speedscope read as they are. The summary
here gives the share of samples per function: *self* (the function was on top of the
stack) and *total* (it was anywhere in the stack).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import DEFAULT_FIELDS, Sandbox, status_kb
from bench.sections import Log, Plan, _generate, product_drain, workdir

SAMPLES_PER_SECOND = 200
_ENTRY_FILES = ("runflow_tail/cli.py)", "runflow_tail/__main__.py)")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _short_file(path: str) -> str:
    """``.../site-packages/httpx/_client.py`` -> ``httpx/_client.py``."""
    for marker in ("site-packages/", "daemon/", "lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3" and "/" in tail else tail
    return path


def _frame(text: str) -> str:
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip()
    return f"{match['function']} ({_short_file(match['file'])})"


def summarise(collapsed: Path, *, top: int = 25) -> dict[str, Any]:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(part) for part in stack.split(";") if part.strip()]
        # py-spy may put the process or thread first: keep only real code frames.
        frames = [frame for frame in frames if "(" in frame] or frames
        if not frames:
            continue
        samples += count
        leaf = frames[-1]
        self_counts[leaf] += count
        by_file[leaf[leaf.rfind("(") + 1 : -1]] += count
        for frame in set(frames):
            # Inclusive time is only telling for our own functions below the entry points
            # (every sample is inside main() or a worker thread's run()).
            if "runflow_tail/" in frame and not frame.endswith(_ENTRY_FILES):
                total_counts[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": name, "samples": count, "percent": round(100 * count / samples, 1)}
            for name, count in counter.most_common(top)
        ]

    return {
        "samples": samples,
        "self": share(self_counts),
        "total": share(total_counts),
        "self_by_file": share(by_file),
    }


VARIANTS = {"projected": DEFAULT_FIELDS, "full": ()}


def profile_drain(
    sandbox: Sandbox, plan: Plan, out_dir: Path, log: Log, variant: str = "projected"
) -> dict[str, Any]:
    py_spy = find_py_spy()
    if py_spy is None:
        return {"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    log(f"profile: {variant} drain of {plan.entries:,} entries under py-spy")
    _generate(sandbox, plan.entries)
    out_dir.mkdir(parents=True, exist_ok=True)
    collapsed = out_dir / f"profile-drain-{variant}.collapsed.txt"
    collapsed.unlink(missing_ok=True)

    def attach(pid: int) -> Any:
        # Attaching before the interpreter is up fails: wait until it has loaded something
        # (the daemon's imports take ~0.5 s, its first request comes after them).
        deadline = time.monotonic() + 10
        while status_kb(pid, "VmRSS") < 20_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        recorder = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--function",
                "--nonblocking",
                "--rate",
                str(SAMPLES_PER_SECOND),
                "--output",
                str(collapsed),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def finish() -> None:
            # py-spy stops and writes its output when the process it watches exits.
            _, stderr = recorder.communicate(timeout=60)
            if recorder.returncode:
                log(f"  py-spy: {stderr.decode(errors='replace').strip()[-500:]}")

        return finish

    with workdir("profile") as work:
        product = product_drain(sandbox, plan.entries, VARIANTS[variant], work, wrapper=attach)
    product.pop("params", None)
    if not collapsed.exists():
        return {"skipped": "py-spy wrote no profile", "product": product}
    summary = summarise(collapsed)
    summary["product_under_profiler"] = product
    summary["collapsed_stacks"] = str(collapsed)
    return summary


def render(variant: str, summary: dict[str, Any], *, top: int = 15) -> str:
    if "skipped" in summary:
        return f"profile ({variant}): skipped ({summary['skipped']})"
    product = summary["product_under_profiler"]
    lines = [
        f"profile of the {variant} drain: {summary['samples']:,} samples (all threads; "
        f"{product['entries_per_s']:,.0f} entries/s under the profiler); "
        f"stacks in {summary['collapsed_stacks']}"
    ]
    for key, title in (
        ("self", "self time"),
        ("total", "total (inclusive) time, runflow_tail functions"),
        ("self_by_file", "self time by file"),
    ):
        lines.append(f"  top {title}:")
        for item in summary[key][:top]:
            lines.append(f"    {item['percent']:5.1f}%  {item['frame']}")
    return "\n".join(lines)
