"""The benchmark runs end to end (``python -m bench --quick``) and reports every section.

No timing assertions: the bench measures, it does not judge a CI machine's speed. This
only proves the instrument works: every section ran and produced numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "drain",
    "ceiling",
    "live",
    "idle",
    "slow_sink",
    "latency_bound",
    "sparse",
    "rate_limited",
    "sinks",
    "postgres",
)


def numbers(document: Any) -> list[float]:
    """Every number anywhere in a JSON document."""
    if isinstance(document, bool):
        return []
    if isinstance(document, int | float):
        return [float(document)]
    if isinstance(document, dict):
        return [n for value in document.values() for n in numbers(value)]
    if isinstance(document, list):
        return [n for value in document for n in numbers(value)]
    return []


@pytest.mark.slow
def test_quick_bench_reports_every_section(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text())
    assert document["errors"] == []
    results = document["results"]
    for section in SECTIONS:
        assert section in results, f"no {section} section"
        values = numbers(results[section])
        assert values, f"{section} has no numbers"
        assert all(math.isfinite(value) for value in values), f"{section}: {results[section]}"
    for variant in ("projected", "full"):
        part = results["drain"][variant]
        for measured in ("product", "fetch_limit", "naive"):
            assert part[measured]["entries_per_s"] > 0
        assert part["product"]["bytes_read"] > 0
        assert part["product"]["peak_rss_mb"] > 0
    assert results["live"]["delivered"] > 0
    assert results["slow_sink"]["large"]["peak_rss_mb"] > 0
    measured = results["sinks"]["sinks"]
    assert set(measured) == {"file", "webhook", "otlp", "elasticsearch", "loki", "s3", "syslog"}
    assert all(run["entries"] == results["sinks"]["entries"] for run in measured.values())
    assert results["postgres"]["postgres"]["entries_per_s"] > 0
    assert "failover" not in results["postgres"]  # the suite runs the SIGKILL test itself
    # Every target has a verdict, and the table names each one.
    assert {check["result"] for check in document["targets"]} <= {"PASS", "FAIL", "n/a"}
    assert len(document["targets"]) == 16
    for check in document["targets"]:
        assert check["goal"] in done.stdout
