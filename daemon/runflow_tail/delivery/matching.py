"""Which entries of a batch a sink gets: its ``match``, and what it cannot handle.

The same for live delivery and for replay, so a replay sends exactly what the live sink
would have been sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runflow_tail.filters import Filter, parse_filter
from runflow_tail.models import Entry, EntryUndecodable
from runflow_tail.observability import get_logger
from runflow_tail.run_object import with_derived
from runflow_tail.sinks.base import SinkConfigBase

log = get_logger(__name__)


class SinkSelection:
    """A sink's ``match`` compiled once, and what it needs of an entry."""

    def __init__(self, name: str, config: SinkConfigBase) -> None:
        self.name = name
        self.config = config
        self.match: Filter | None = parse_filter(config.match) if config.match.strip() else None
        fields = self.match.fields() if self.match else ()
        self._run_match = any(field[:4] == "run." for field in fields)
        self._needs_fields = config.needs_fields()
        self._without_run_noted = False

    def select(self, batch: Sequence[Entry]) -> tuple[list[Entry], list[tuple[Entry, str]]]:
        """The entries to send, and those this sink cannot handle with the reason: an entry
        that cannot be decoded, when the sink's ``match`` or the sink itself needs its
        fields. Sinks that ship bytes (file, webhook, ...) decode nothing here."""
        if self.match is None and not self._needs_fields:
            return list(batch), []
        matching: list[Entry] = []
        undecodable: list[tuple[Entry, str]] = []
        for entry in batch:
            try:
                if self.match is None:
                    entry.data()
                    matching.append(entry)
                elif self.matches(entry):
                    matching.append(entry)
            except EntryUndecodable as exc:
                need = "its match" if self.match is not None else "the sink"
                undecodable.append((entry, f"{need} needs the entry's fields: {exc}"))
        return matching, undecodable

    def matches(self, entry: Entry) -> bool:
        """The sink's ``match`` on the entry as received; when it names run fields and the
        entry carries its run, the derived ``run.outcome`` and ``run.duration_seconds``
        are there too (sinks never fetch runs: alert rules do)."""
        assert self.match is not None
        data = entry.data()
        if self._run_match:
            run = data.get("run")
            if isinstance(run, Mapping):
                data = {**data, "run": with_derived(run)}
            elif not self._without_run_noted:
                self._without_run_noted = True
                log.warning(
                    "sink.match_without_run",
                    sink=self.name,
                    match=self.config.match,
                    reason="entries arrive without their run, so conditions on run fields "
                    "cannot hold; add 'run' to the stream's fields, or use an [[alerts]] "
                    "rule (rules fetch runs)",
                )
        return self.match.matches(data)
