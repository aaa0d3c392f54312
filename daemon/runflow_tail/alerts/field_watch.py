"""Silent mismatches between a rule and the API: run fields a rule names that no run has.

A rule on ``run.status_code:failed`` against an API whose runs have no top-level
``status_code`` (the current version of the reference) never matches, and nothing says
so. The engine shows each rule every run it gets for the rule's entries (embedded in an
entry or fetched); a field the rule names (in ``match``, ``resolve_match``, ``group_by``,
``title``, ``text`` or ``link``) whose key has been absent from ``ABSENT_RUNS`` distinct
runs in a row is a problem: logged once as a warning, listed by ``/readyz`` and
``runflow-tail status``, until a run carrying the field shows up. Derived fields
(``run.outcome``, ``run.duration_seconds``) are always there.

``ABSENT_RUNS`` is a trade-off: the mismatch is systematic (a schema version), so a few
runs prove it, while a field the API leaves out of some runs only (if it drops nulls)
must not warn after one quiet run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from runflow_tail.observability import get_logger
from runflow_tail.run_object import DERIVED_FIELDS, checked_path, has_path

ABSENT_RUNS = 10
"""Distinct runs in a row without a field before the rule's problem is raised."""
REMEMBERED_RUNS = 1024
_ADVICE = {
    "status_code": "the API's current version has no top-level status_code: match on "
    "run.outcome (derived from status_code or from the failure fields)",
    "failure_code": "older API versions have no failure details: use run.outcome, and "
    "{detail} in templates (the failure message, else the failure line)",
    "failure_message": "older API versions have no failure details: use {detail} (the "
    "failure message, else the failure line)",
    "model": "older API versions embed no model: use run.model_id",
}

log = get_logger(__name__)


class FieldWatch:
    """Counts, per field a rule names, the distinct runs in a row that lacked it."""

    def __init__(self, rule: str, paths: Iterable[str]) -> None:
        self.rule = rule
        checked = {checked_path(p) for p in paths if p.split(".")[0] not in DERIVED_FIELDS}
        self._absent = dict.fromkeys(sorted(checked), 0)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.problem: str | None = None

    def observe(self, run_id: Any, run: Mapping[str, Any]) -> bool:
        """Count ``run`` (once per run id); True when the rule's problem appeared, changed
        or cleared."""
        if not self._absent or not isinstance(run_id, str) or run_id in self._seen:
            return False
        self._seen[run_id] = None
        if len(self._seen) > REMEMBERED_RUNS:
            self._seen.popitem(last=False)
        for path in self._absent:
            self._absent[path] = 0 if has_path(run, path) else self._absent[path] + 1
        missing = [path for path, runs in self._absent.items() if runs >= ABSENT_RUNS]
        problem = describe_missing(missing) if missing else None
        if problem == self.problem:
            return False
        if problem is not None:
            log.warning("alerts.rule_fields_missing", rule=self.rule, problem=problem)
        else:
            log.info("alerts.rule_fields_present", rule=self.rule, fields=list(self._absent))
        self.problem = problem
        return True


def describe_missing(paths: list[str], runs: int = ABSENT_RUNS) -> str:
    """Which run fields a rule names that the API's last ``runs`` runs lacked, and what to
    use instead."""
    names = ", ".join(f"run.{path}" for path in paths)
    one = len(paths) == 1
    where = (
        "the run the API returned" if runs == 1 else f"any of the last {runs} runs the API returned"
    )
    advice = [
        _ADVICE[key] for key in dict.fromkeys(p.split(".")[0] for p in paths) if key in _ADVICE
    ]
    text = (
        f"{names} {'is' if one else 'are'} not in {where}, so the rule can never match on "
        f"or show {'it' if one else 'them'}"
    )
    return text + (f" ({'; '.join(advice)})" if advice else "")
