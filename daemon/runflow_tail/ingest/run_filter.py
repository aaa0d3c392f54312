"""Server-side filters on ``run.*`` fields: verified at start, never trusted.

The API's ``q`` reaches into each entry's run (``run.status_code:failed``), but only into
fields its runs have. The current version of the run object has no top-level
``status_code``, and a filter on it is accepted and matches nothing: no error, no entry,
no alert, ever. So before its first poll a stream whose ``query`` names ``run.*`` fields
fetches one entry with its run (one request with ``limit=1``, and ``GET /v1/runs/{id}``
only when the entry came without it) and checks that the run has every field the query
names, null or not. ``run.outcome`` and the other derived fields are runflow-tail's own:
the API never has them.

When a field is missing (or no run can be seen yet to check against), the stream says so
loudly and falls back: it polls without its query and applies the query itself to each
entry. A condition it cannot evaluate here (a run field the API's runs lack, or any run
field of an entry fetched without its run) lets the entry through rather than drop it,
so nothing is lost silently; alert rules and sinks' ``match`` downstream see every entry
that could match. Derived fields are evaluated when the entry carries its run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from runflow_tail.api.client import RunflowClient
from runflow_tail.api.settings import ApiSettings
from runflow_tail.config.model import StreamSettings
from runflow_tail.errors import ApiConfigurationError, RetryableApiError
from runflow_tail.filters import Filter, parse_filter
from runflow_tail.models import FetchedEntry
from runflow_tail.observability import get_logger
from runflow_tail.pacing import Backoff
from runflow_tail.run_object import (
    DERIVED_FIELDS,
    checked_path,
    has_path,
    run_paths,
    with_derived,
)

SAMPLE_FIELDS = ("id", "run_id", "timestamp", "run")

log = get_logger(__name__)


@dataclass(frozen=True)
class LocalFilter:
    """A stream's query applied to entries here, for an API that cannot apply it."""

    with_run: Filter
    """For entries that carry their run: only fields the API's runs lack are relaxed."""
    without_run: Filter
    """For entries fetched without their run: every run field is relaxed."""

    @classmethod
    def of(cls, query: str, missing: Sequence[str]) -> LocalFilter:
        compiled = parse_filter(query)
        gone = tuple(f"run.{path}" for path in missing if path.split(".")[0] not in DERIVED_FIELDS)

        def lacking(field: str) -> bool:
            return any(field == path or field.startswith(f"{path}.") for path in gone)

        return cls(
            compiled.relaxed(lacking),
            compiled.relaxed(lambda field: field == "run" or field.startswith("run.")),
        )

    def keep(self, entries: list[FetchedEntry]) -> list[FetchedEntry]:
        kept = []
        for entry in entries:
            try:
                data = msgspec.json.decode(entry.raw)
            except (msgspec.DecodeError, RecursionError):
                kept.append(entry)  # the journal keeps what it cannot judge
                continue
            run = data.get("run") if isinstance(data, dict) else None
            if isinstance(run, Mapping):
                matched = self.with_run.matches({**data, "run": with_derived(run)})
            else:
                matched = not isinstance(data, dict) or self.without_run.matches(data)
            if matched:
                kept.append(entry)
        return kept


async def verified(
    stream: StreamSettings, client: RunflowClient, api: ApiSettings
) -> tuple[StreamSettings, LocalFilter | None]:
    """The stream as it may be polled, and the filter to apply here when its query names
    run fields the API's runs do not have (then the stream polls without its query)."""
    paths = sorted({checked_path(path) for path in run_paths(parse_filter(stream.query).fields())})
    if not paths:
        return stream, None
    try:
        run = await sample_run(client, stream.run_id, api)
    except ApiConfigurationError as exc:
        # The poller's own first request meets the same refusal and reports it.
        log.info("stream.run_filter_unchecked", stream=stream.name, reason=str(exc))
        return stream, None
    missing = paths if run is None else [path for path in paths if not has_path(run, path)]
    if not missing:
        log.info("stream.run_filter_verified", stream=stream.name, fields=paths)
        return stream, None
    fields = ", ".join(f"run.{path}" for path in missing)
    if run is None:
        why = f"no run could be seen yet to check that the API evaluates {fields}"
    else:
        why = (
            f"the API's runs have no {fields}, so the API would match nothing (or everything) "
            "silently" + (": use run.outcome in alert rules" if "status_code" in missing else "")
        )
    (log.warning if run is None else log.error)(
        "stream.run_filter_not_trusted",
        stream=stream.name,
        query=stream.query,
        reason=why,
        action="polling without the query and filtering here; entries a condition on "
        "these fields cannot rule out are kept",
    )
    return stream.model_copy(update={"query": ""}), LocalFilter.of(stream.query, missing)


async def sample_run(
    client: RunflowClient, run_id: str, api: ApiSettings
) -> Mapping[str, Any] | None:
    """One run as the API renders it: the run of the first entry of ``run_id`` (or of
    the organization for ``any``); None when there is no entry yet. Transient failures
    are retried like the pollers retry them."""
    backoff = Backoff(api.backoff_initial, api.backoff_max)
    while True:
        try:
            page = await client.fetch_logs(run_id, fields=SAMPLE_FIELDS, limit=1)
            if not page.entries:
                return None
            try:
                data = msgspec.json.decode(page.entries[0].raw)
            except (msgspec.DecodeError, RecursionError):
                return None  # a broken entry tells nothing about the API's runs
            run = data.get("run") if isinstance(data, dict) else None
            if isinstance(run, Mapping) or not isinstance(data, dict):
                return run if isinstance(run, Mapping) else None
            found = data.get("run_id")
            if not isinstance(found, str):
                return None
            document = await client.get_json(f"/v1/runs/{found}", what=f"fetching run {found}")
            return document if isinstance(document, Mapping) else None
        except RetryableApiError as exc:
            delay = backoff.next_delay(exc.retry_after)
            log.warning("stream.run_sample_failed", error=str(exc), retry_in=round(delay, 2))
            await anyio.sleep(delay)
