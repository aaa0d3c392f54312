"""``python -m bench [--quick] [--only drain,live,...] [--entries N] [--json PATH] [--profile]``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench import ceiling, cluster, profile, real_world, report, sections, sinks
from bench.procs import ROOT, Sandbox

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
ALIASES = {
    "slow": "slow_sink",
    "slow-sink": "slow_sink",
    "latency": "latency_bound",
    "latency-bound": "latency_bound",
    "rate-limited": "rate_limited",
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_sections(text: str) -> list[str]:
    chosen = []
    for part in text.split(","):
        name = ALIASES.get(part.strip(), part.strip().replace("-", "_"))
        if name not in SECTIONS:
            raise argparse.ArgumentTypeError(
                f"unknown section {part!r}; expected some of: {', '.join(SECTIONS)}"
            )
        chosen.append(name)
    return chosen


def parse_variants(text: str) -> list[str]:
    variants = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [variant for variant in variants if variant not in profile.VARIANTS]
    if unknown or not variants:
        raise argparse.ArgumentTypeError(
            f"expected some of: {', '.join(profile.VARIANTS)} (got {text!r})"
        )
    return variants


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a CI variant taking seconds")
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=list(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument("--entries", type=int, help="backlog size of the drain (default 200000)")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "latest.json",
        help="where to write the results (default: bench/results/latest.json)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="projected",
        type=parse_variants,
        help="also profile the drain with py-spy: projected (default), full, or both "
        "comma-separated (install py-spy into .venv first; never a project dependency)",
    )
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _git(*command: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *command], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def _revision() -> str | None:
    """The commit measured; "+dirty" when the package has uncommitted changes (others edit
    it concurrently, so a number may belong to a tree that was never committed)."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:
        return None
    return commit + ("+dirty" if _git("status", "--porcelain", "daemon") else "")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    plan = sections.Plan.quick() if args.quick else sections.Plan()
    if args.entries:
        plan = replace(plan, entries=args.entries)
    wanted = set(args.only)
    results: dict[str, Any] = {}
    errors: list[str] = []

    def attempt(
        name: str, measure: Callable[[], dict[str, Any]], into: dict[str, Any] = results
    ) -> None:
        try:
            into.update(measure())
        except Exception as exc:  # one broken section must not hide the others' numbers
            log(f"{name} failed: {exc}")
            traceback.print_exc()
            errors.append(f"{name}: {exc}")

    with Sandbox() as sandbox:
        if "drain" in wanted:
            attempt("drain", lambda: {"drain": sections.drain(sandbox, plan, log)})
        if "ceiling" in wanted:
            attempt("ceiling", lambda: {"ceiling": ceiling.ceiling(sandbox, plan, log)})
        if wanted & {"live", "idle"}:
            attempt(
                "live/idle",
                lambda: sections.live_and_idle(
                    sandbox, plan, log, want_live="live" in wanted, want_idle="idle" in wanted
                ),
            )
        if "slow_sink" in wanted:
            attempt("slow_sink", lambda: {"slow_sink": sections.slow_sink(sandbox, plan, log)})
        if "latency_bound" in wanted:
            attempt(
                "latency_bound",
                lambda: {"latency_bound": sections.latency_bound(sandbox, plan, log)},
            )
        if "sparse" in wanted:
            attempt("sparse", lambda: {"sparse": real_world.sparse(sandbox, plan, log)})
        if "rate_limited" in wanted:
            attempt(
                "rate_limited",
                lambda: {"rate_limited": real_world.rate_limited(sandbox, plan, log)},
            )
        if "sinks" in wanted:
            attempt("sinks", lambda: {"sinks": sinks.sinks(sandbox, plan, log)})
        if "postgres" in wanted:
            # --quick leaves the failover out: the test suite runs the SIGKILL test anyway.
            attempt(
                "postgres",
                lambda: {"postgres": cluster.postgres(sandbox, plan, log, failover=not args.quick)},
            )
        profiles: dict[str, Any] = {}
        for variant in args.profile or ():
            attempt(
                f"profile {variant}",
                lambda variant=variant: {
                    variant: profile.profile_drain(sandbox, plan, RESULTS, log, variant)
                },
                into=profiles,
            )
        if profiles:
            results["profile"] = profiles
    return {"plan": asdict(plan), **results}, errors


def main(argv: list[str] | None = None) -> int:
    args = arguments(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    meta = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _revision(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "sections": args.only,
    }
    results, errors = run(args)
    meta["seconds"] = round(time.monotonic() - started, 1)
    checks = report.targets(results)
    document = {"meta": meta, "results": results, "targets": checks, "errors": errors}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(report.render(report.rows(results, checks)))
    for variant, summary in results.get("profile", {}).items():
        print()
        print(profile.render(variant, summary))
    print(f"\n{meta['seconds']:.0f}s at {meta['commit']}; results in {args.json}")
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
