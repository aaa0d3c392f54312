"""Prometheus metrics, one registry per daemon (so tests and `tail` never share state).

Counters are incremented where things happen (client, poller, delivery); gauges that
describe state (lag, backlog, journal size) are refreshed just before each scrape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.entries_fetched = Counter(
            "runflow_tail_entries_fetched_total",
            "New entries written to the journal.",
            ["stream"],
            registry=r,
        )
        self.entries_delivered = Counter(
            "runflow_tail_entries_delivered_total",
            "Entries a sink accepted.",
            ["sink"],
            registry=r,
        )
        self.entries_filtered = Counter(
            "runflow_tail_entries_filtered_total",
            "Entries skipped by a sink's match filter.",
            ["sink"],
            registry=r,
        )
        self.dead_letters = Counter(
            "runflow_tail_dead_letters_total",
            "Batches a sink rejected or gave up on.",
            ["sink"],
            registry=r,
        )
        self.sink_errors = Counter(
            "runflow_tail_sink_errors_total",
            "Failed send attempts (each is retried).",
            ["sink"],
            registry=r,
        )
        self.api_requests = Counter(
            "runflow_tail_api_requests_total",
            "Requests to the Runflow API, by HTTP status ('error' when there was no answer).",
            ["status"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "runflow_tail_poll_duration_seconds",
            "Time of one poll cycle, from the first request to the last commit.",
            ["stream"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "runflow_tail_lag_seconds",
            "Now minus the timestamp of the newest journaled entry.",
            ["stream"],
            registry=r,
        )
        self.last_success = Gauge(
            "runflow_tail_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll cycle.",
            ["stream"],
            registry=r,
        )
        self.stream_up = Gauge(
            "runflow_tail_stream_healthy",
            "1 while the stream polls without problems, else 0.",
            ["stream"],
            registry=r,
        )
        self.backlog = Gauge(
            "runflow_tail_sink_backlog_entries",
            "Journaled entries a sink has not processed yet.",
            ["sink"],
            registry=r,
        )
        self.journal_bytes = Gauge(
            "runflow_tail_journal_bytes",
            "Space used by the journal's live pages.",
            registry=r,
        )
        self.entries_rejected = Counter(
            "runflow_tail_entries_rejected_total",
            "Fetched items no sink can take (no usable timestamp), kept as dead letters",
            ["stream"],
            registry=r,
        )
        self.cursor_stalls = Counter(
            "runflow_tail_cursor_stalls_total",
            "Times the API answered a page cursor with the same cursor or entries again.",
            ["stream"],
            registry=r,
        )
        self.gaps = Counter(
            "runflow_tail_gaps_suspected_total",
            "Times a cursor re-seek could not confirm that nothing was skipped.",
            ["stream"],
            registry=r,
        )

        # With state.backend = "postgres": what this member owns, and how sharing goes.
        self.lease_held = Gauge(
            "runflow_tail_lease_held",
            "1 for each lease (stream:NAME, sink:NAME, alerts) this member holds.",
            ["lease", "member"],
            registry=r,
        )
        self.lease_changes = Counter(
            "runflow_tail_lease_changes_total",
            "Leases claimed, handed over, stepped down from (renewal failed) or lost.",
            ["lease", "change"],
            registry=r,
        )
        self.writes_refused = Counter(
            "runflow_tail_lease_writes_refused_total",
            "Writes refused because the lease was gone: by the database's epoch check, or "
            "locally (known before sending).",
            ["lease", "by"],
            registry=r,
        )
        self.cluster_members = Gauge(
            "runflow_tail_cluster_members",
            "Live members (daemons) sharing this PostgreSQL state.",
            registry=r,
        )
        self.state_up = Gauge(
            "runflow_tail_state_up",
            "1 while the state database answers (PostgreSQL backend), else 0.",
            registry=r,
        )

    def forget(self, *, sinks: Iterable[str] = (), streams: Iterable[str] = ()) -> None:
        """Drop the series of sinks and streams that a reload removed: a scrape shows what
        runs now, and a removed sink's last backlog never fires an alert again."""
        by_label = {"sink": list(sinks), "stream": list(streams)}
        for metric in vars(self).values():
            names: tuple[str, ...] = getattr(metric, "_labelnames", ())
            if len(names) != 1 or names[0] not in by_label:
                continue
            for value in by_label[names[0]]:
                with contextlib.suppress(KeyError):  # never touched: no series to drop
                    metric.remove(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
