"""The alert engine: one more consumer of the journal, turning matching entries into alerts.

It reads the entries of the streams its rules watch after its own offset (kept in
``sink_offsets`` as ``alerts:engine``), evaluates every rule, and commits in ONE
transaction the alert documents it produced (as journal entries of the internal streams
``alerts.<destination>``, one per destination), its new offset and the changed rule
state. Destination sinks are ordinary sinks delivered from those streams, so retries,
Retry-After, dead letters and independence between destinations come from the delivery
loop. Because output, offset and state commit together, a restart (even after SIGKILL)
neither re-alerts nor forgets a cooldown, an open incident or a pending digest.

Time: windows and cooldowns are measured by the entries' own timestamps, so evaluating
the same entries gives the same alerts whenever it happens (after a restart, with a
backlog, in a replay of history). Digests are about when people get messages, so they
flush by the wall clock: a digest opened at T goes out at T + ``digest`` of processing
time, also when no further entry arrives, and a restart after that instant flushes at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from runflow_tail.alerts.context import RunContext, as_of
from runflow_tail.alerts.messages import (
    MAX_DIGEST_ITEMS,
    alert_id,
    build_alert,
    build_digest,
    dedup_key,
    digest_item,
    for_destination,
    group_key_of,
    line_of,
)
from runflow_tail.alerts.rules import CompiledRule
from runflow_tail.alerts.state import (
    DIGEST_KEY,
    FIELDS_KEY,
    Digests,
    GroupState,
    Incident,
    decode_digest,
    decode_group,
    encode_state,
)
from runflow_tail.api.client import RunflowClient
from runflow_tail.config.alerts import ALERT_ENGINE_CONSUMER, AlertRule, alert_stream
from runflow_tail.config.model import Settings
from runflow_tail.dotted import lookup
from runflow_tail.journal import Journal
from runflow_tail.models import Entry, EntryUndecodable
from runflow_tail.observability import get_logger
from runflow_tail.run_object import with_derived
from runflow_tail.times import NS_PER_SECOND

BATCH_EVENTS = 500
BATCH_BYTES = 4 * 1024 * 1024
SWEEP_INTERVAL = 60.0

log = get_logger(__name__)


@dataclass
class _Output:
    """What one step produced, committed together."""

    rows: list[tuple[str, str, int, bytes]]
    touched: set[tuple[str, str]]

    @classmethod
    def empty(cls) -> _Output:
        return cls([], set())


class AlertEngine:
    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        client: RunflowClient | None,
        *,
        context: RunContext | None = None,
    ) -> None:
        self._journal = journal
        self._rules = [
            CompiledRule.of(rule, settings.streams_for_rule(rule)) for rule in settings.alerts
        ]
        self._by_name = {rule.config.name: rule for rule in self._rules}
        self._stale: set[tuple[str, str]] = set()
        self._streams = tuple(sorted({s for rule in self._rules for s in rule.streams}))
        self._destinations = settings.alert_destinations()
        self._retention_ns = int(settings.state.dedup_window * NS_PER_SECOND)
        self.context = context or RunContext(
            client,
            backoff_initial=settings.api.backoff_initial,
            backoff_max=settings.api.backoff_max,
        )
        self.offset = 0
        self._groups: dict[tuple[str, str], GroupState] = {}
        self._digests = Digests({rule.config.name: rule.config.digest for rule in self._rules})
        self._high_water_ns = 0
        self._last_sweep = time.monotonic()

    @property
    def streams(self) -> tuple[str, ...]:
        return self._streams

    @property
    def problems(self) -> list[str]:
        """Rules that can never work against this API, as far as its runs show."""
        return [
            f"alert rule {r.config.name}: {r.watch.problem}" for r in self._rules if r.watch.problem
        ]

    async def run(self) -> None:
        await self._load()
        while True:
            seen = self._journal.last_seq
            # Like the deliveries: from memory when caught up, else the reader connection,
            # never blocked by a poller's commit.
            batch = await self._journal.read_after(
                self.offset,
                self._streams,
                max_events=BATCH_EVENTS,
                max_bytes=BATCH_BYTES,
            )
            if batch:
                await self._process(batch)
            await self._flush_due_digests()
            if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL:
                await self._sweep()
            if not batch:
                with anyio.move_on_after(self._digests.next_delay(time.time_ns())):
                    await self._journal.wait_for_entries_after(seen)

    # -- state -------------------------------------------------------------------------

    async def _load(self) -> None:
        offsets = await self._journal.ensure_offsets([ALERT_ENGINE_CONSUMER])
        self.offset = offsets[ALERT_ENGINE_CONSUMER]
        names = [rule.config.name for rule in self._rules]
        forgotten = await self._journal.forget_alert_rules(names)
        if forgotten:
            log.info("alerts.state_forgotten", groups=forgotten, reason="rule no longer configured")
        rows = await self._journal.load_alert_state()
        for (rule, group_key), raw in rows.items():
            if group_key == FIELDS_KEY:
                # Counted again from this start: the rule or the API may have changed.
                self._stale.add((rule, group_key))
                continue
            try:
                if group_key == DIGEST_KEY:
                    self._digests.pending[rule] = decode_digest(raw)
                else:
                    self._groups[(rule, group_key)] = decode_group(raw)
            except msgspec.DecodeError as exc:
                log.warning("alerts.state_unreadable", rule=rule, error=str(exc))
        log.info(
            "alerts.started",
            rules=names,
            streams=list(self._streams),
            offset=self.offset,
            groups=len(self._groups),
            open_incidents=sum(1 for g in self._groups.values() if g.incident is not None),
            pending_digests=len(self._digests.pending),
        )

    async def _commit(self, output: _Output, offset: int | None) -> None:
        upserts: list[tuple[str, str, bytes]] = []
        deletes: list[tuple[str, str]] = []
        touched, self._stale = output.touched | self._stale, set()
        for key in sorted(touched):
            rule, group_key = key
            value: Any
            if group_key == FIELDS_KEY:
                compiled = self._rule(rule)
                problem = compiled.watch.problem if compiled is not None else None
                value = None if problem is None else {"problem": problem}
            elif group_key == DIGEST_KEY:
                value = self._digests.pending.get(rule)
            else:
                value = self._groups.get(key)
                if value is not None and self._idle(self._rule(rule), value):
                    del self._groups[key]
                    value = None
            if value is None:
                deletes.append(key)
            else:
                upserts.append((rule, group_key, encode_state(value)))
        await self._journal.commit_alerts(
            ALERT_ENGINE_CONSUMER, offset, output.rows, upserts, deletes
        )
        if offset is not None:
            self.offset = offset

    def _rule(self, name: str) -> CompiledRule | None:
        return self._by_name.get(name)

    def _idle(self, rule: CompiledRule | None, state: GroupState) -> bool:
        return rule is None or state.idle(rule.config.window, self._high_water_ns)

    async def _sweep(self) -> None:
        """Drop idle groups and the alert entries every destination has delivered."""
        self._last_sweep = time.monotonic()
        idle = {key for key, state in self._groups.items() if self._idle(self._rule(key[0]), state)}
        if idle:
            await self._commit(_Output([], idle), None)
        readers = [(alert_stream(d), d) for d in self._destinations]
        older_than = time.time_ns() - self._retention_ns
        await self._journal.prune_alert_entries(readers, older_than)

    # -- evaluation --------------------------------------------------------------------

    async def _process(self, batch: Sequence[Entry]) -> None:
        self.context.new_batch()
        output = _Output.empty()
        for entry in batch:
            self._high_water_ns = max(self._high_water_ns, entry.timestamp_ns)
            try:
                entry.data()
            except EntryUndecodable as exc:
                # No rule can judge it; it stays in the journal for the sinks that ship
                # bytes, and the next entries are judged as usual.
                log.warning(
                    "alerts.entry_undecodable",
                    id=entry.id,
                    seq=entry.seq,
                    stream=entry.stream,
                    reason=exc.reason,
                    action="no rule evaluates it; evaluation goes on",
                )
                continue
            for rule in self._rules:
                if entry.stream in rule.streams and rule.first_sight(entry.id):
                    await self._evaluate(rule, entry, output)
        await self._commit(output, batch[-1].seq)

    async def _evaluate(self, rule: CompiledRule, entry: Entry, output: _Output) -> None:
        data = entry.data()
        view: Mapping[str, Any] = data
        # The run for matching and the alert's context: the entry's own, or fetched now.
        embedded = data.get("run")
        run = embedded if isinstance(embedded, Mapping) else None
        if run is None and rule.needs_run:
            run = await self.context.get(data.get("run_id"), required=True)
        if run is not None:
            self._observe(rule, data.get("run_id"), run, output)
            seen = as_of(run, data.get("timestamp"), entry.timestamp_ns)
            view = {**data, "run": with_derived(seen)}
        matched = rule.match.matches(view)
        if not matched and (rule.resolve is None or not rule.resolve.matches(view)):
            return
        values = [lookup(view, path) for path in rule.config.group_by]
        group_key = group_key_of(values)
        key = (rule.config.name, group_key)
        state = self._groups.get(key)
        if not matched:
            if state is not None and state.incident is not None:
                await self._resolve(rule, entry, run, state, group_key, output)
                output.touched.add(key)
            return
        if state is None:
            state = self._groups[key] = GroupState(
                group=dict(zip(rule.config.group_by, values, strict=True)), stream=entry.stream
            )
        output.touched.add(key)
        await self._on_match(rule, entry, run, state, group_key, output)

    async def _on_match(
        self,
        rule: CompiledRule,
        entry: Entry,
        run: Mapping[str, Any] | None,
        state: GroupState,
        group_key: str,
        output: _Output,
    ) -> None:
        config = rule.config
        ts = entry.timestamp_ns
        state.total += 1
        if state.cooldown_until is not None and ts < state.cooldown_until:
            state.suppressed += 1
            return
        state.count(ts, line_of(entry), keep_lines=config.lines)
        state.slide(config.window, config.threshold)
        if len(state.matches) < config.threshold:
            return
        context, run_id = await self._run_of(rule, run, entry, output)
        counts = {
            "matches": len(state.matches),
            "suppressed": state.suppressed,
            "total": state.total,
        }
        doc = build_alert(
            kind="alert",
            rule=config.name,
            severity=config.severity,
            group=state.group,
            group_key=group_key,
            stream=entry.stream,
            run=context,
            run_id=run_id,
            lines=[line for _t, line in state.lines],
            counts=counts,
            first_match_ns=min(state.matches),
            last_match_ns=ts,
            fired_ns=time.time_ns(),
            title=config.title,
            text=config.text,
            link=config.link,
        )
        base_id = alert_id(config.name, "alert", group_key, entry.id)
        state.matches, state.lines, state.suppressed = [], [], 0
        state.cooldown_until = (
            ts + int(config.cooldown * NS_PER_SECOND) if config.cooldown else None
        )
        if rule.resolve is not None:
            state.incident = Incident(dedup_key(config.name, group_key), ts, base_id)
        if config.digest is not None:
            now = time.time_ns()
            self._digests.add(config.name, digest_item(doc), now_ns=now, keep=MAX_DIGEST_ITEMS)
            output.touched.add((config.name, DIGEST_KEY))
        else:
            self._emit(config, doc, base_id, output)

    async def _resolve(
        self,
        rule: CompiledRule,
        entry: Entry,
        run: Mapping[str, Any] | None,
        state: GroupState,
        group_key: str,
        output: _Output,
    ) -> None:
        config = rule.config
        incident = state.incident
        assert incident is not None
        context, run_id = await self._run_of(rule, run, entry, output)
        doc = build_alert(
            kind="resolve",
            rule=config.name,
            severity=config.severity,
            group=state.group,
            group_key=group_key,
            stream=entry.stream,
            run=context,
            run_id=run_id,
            lines=[line_of(entry)][: max(1, config.lines)],
            counts={"matches": 0, "suppressed": state.suppressed, "total": state.total},
            first_match_ns=incident.opened_ns,
            last_match_ns=entry.timestamp_ns,
            fired_ns=time.time_ns(),
            title=config.title,
            text=config.text,
            link=config.link,
        )
        state.incident = None
        # A group that broke again right after recovering deserves a new alert at once.
        state.cooldown_until = None
        self._emit(
            config, doc, alert_id(config.name, "resolve", incident.alert_id, entry.id), output
        )

    async def _run_of(
        self, rule: CompiledRule, run: Mapping[str, Any] | None, entry: Entry, output: _Output
    ) -> tuple[Mapping[str, Any] | None, str | None]:
        """An alert's run and run id: the run at hand, else fetched now (tried a few times)."""
        run_id = entry.data().get("run_id")
        if run is None:
            run = await self.context.get(run_id, required=False)
            if run is not None:
                self._observe(rule, run_id, run, output)
        return run, run_id if isinstance(run_id, str) else None

    def _observe(
        self, rule: CompiledRule, run_id: Any, run: Mapping[str, Any], output: _Output
    ) -> None:
        if rule.watch.observe(run_id, run):
            output.touched.add((rule.config.name, FIELDS_KEY))

    def _emit(self, config: AlertRule, doc: dict[str, Any], base_id: str, output: _Output) -> None:
        for destination in config.destinations:
            identity, raw, _final = for_destination(doc, destination, base_id)
            output.rows.append((alert_stream(destination), identity, time.time_ns(), raw))
        log.info(
            "alerts.fired",
            rule=config.name,
            kind=doc["kind"],
            group=doc["group"],
            run_id=doc["run"].get("id"),
            destinations=list(config.destinations),
        )

    # -- digests -----------------------------------------------------------------------

    async def _flush_due_digests(self) -> None:
        now = time.time_ns()
        output = _Output.empty()
        for rule_name, digest in self._digests.take_due(now):
            output.touched.add((rule_name, DIGEST_KEY))
            rule = self._rule(rule_name)
            if rule is None:
                continue
            doc = build_digest(
                rule=rule_name,
                severity=rule.config.severity,
                items=digest.items,
                total=digest.total,
                since_ns=digest.since_ns,
                now_ns=now,
            )
            digest_id = alert_id(rule_name, "digest", str(digest.since_ns))
            self._emit(rule.config, doc, digest_id, output)
        if output.touched:
            await self._commit(output, None)
