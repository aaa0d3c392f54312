"""Alert rules compiled for the engine: expressions parsed once, watched streams known."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from runflow_tail.alerts.field_watch import FieldWatch
from runflow_tail.config.alerts import AlertRule
from runflow_tail.filters import Filter

RECENT_IDS = 10_000


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: its expressions compiled, the streams it watches known."""

    config: AlertRule
    match: Filter
    resolve: Filter | None
    streams: frozenset[str]
    needs_run: bool
    watch: FieldWatch
    """The run fields the rule names, watched for an API whose runs lack them."""
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    @classmethod
    def of(cls, rule: AlertRule, streams: Sequence[str]) -> CompiledRule:
        return cls(
            rule,
            rule.compiled_match(),
            rule.compiled_resolve(),
            frozenset(streams),
            rule.needs_run(),
            FieldWatch(rule.name, rule.run_fields()),
        )

    def first_sight(self, entry_id: str) -> bool:
        """An entry that two watched streams both hold (overlapping filters) counts once."""
        if len(self.streams) < 2:
            return True
        if entry_id in self.seen:
            return False
        self.seen[entry_id] = None
        if len(self.seen) > RECENT_IDS:
            self.seen.popitem(last=False)
        return True
