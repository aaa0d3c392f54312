"""(i) The PostgreSQL state: the same drain as (a) into a file, with the journal in
PostgreSQL (a local server with production settings: fsync and synchronous commits on)
beside the embedded SQLite journal; and the failover time measured by the SIGKILL test
(``tests/e2e/test_cluster_process.py``), run as it is in the suite.

Needs a PostgreSQL server installed (Debian: ``apt-get install postgresql``); the section
starts its own in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench.procs import DEFAULT_FIELDS, ROOT, Sandbox
from bench.sections import Log, Plan, _generate, product_drain, workdir
from tests.support.postgres import make_server

SIGKILL_TEST = (
    "tests/e2e/test_cluster_process.py"
    "::test_sigkill_of_every_lease_owner_moves_its_leases_within_the_lease_time"
)


def postgres(sandbox: Sandbox, plan: Plan, log: Log, *, failover: bool = True) -> dict[str, Any]:
    log(f"postgres: generating {plan.entries:,} entries")
    _generate(sandbox, plan.entries)
    with workdir("sqlite") as work:
        log("  drain with the SQLite journal")
        sqlite = product_drain(sandbox, plan.entries, DEFAULT_FIELDS, work)
    server = make_server(durable=True)
    try:
        with workdir("postgres") as work:
            log("  drain with the PostgreSQL journal")
            state = {"backend": "postgres", "dsn": server.dsn(server.create_database())}
            pg = product_drain(sandbox, plan.entries, DEFAULT_FIELDS, work, state=state)
    finally:
        server.destroy()
    result: dict[str, Any] = {
        "entries": plan.entries,
        "sqlite": _summary(sqlite),
        "postgres": _summary(pg),
        "postgres_vs_sqlite": round(pg["entries_per_s"] / sqlite["entries_per_s"], 3),
    }
    if failover:
        log("  failover: the SIGKILL test")
        result["failover"] = sigkill_failover()
    return result


def _summary(drain: dict[str, Any]) -> dict[str, Any]:
    keys = ("entries_per_s", "seconds", "cpu_seconds", "peak_rss_mb")
    return {key: drain[key] for key in keys}


def sigkill_failover() -> dict[str, Any]:
    """Run the SIGKILL test; what it measured: seconds from each SIGKILL until every lease
    of the killed member was held by another."""
    with workdir("failover") as work:
        record = work / "failover.json"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SIGKILL_TEST],
            cwd=ROOT,
            env={**os.environ, "FAILOVER_RECORD": str(record)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not record.exists():
            raise RuntimeError(f"the SIGKILL test failed: {done.stdout[-2000:]}")
        measured: dict[str, Any] = json.loads(record.read_text())
    failovers = measured["failovers"]
    return {
        "lease_ttl": measured["ttl"],
        "poll_interval": measured["poll_interval"],
        "kills": len(failovers),
        "max_seconds": round(max(failovers), 3),
        "mean_seconds": round(sum(failovers) / len(failovers), 3),
    }
