"""The log entry store: entries kept sorted by (timestamp, id), queried by keyset.

Each entry's JSON is encoded once when it is created and never again: a re-read returns
byte-identical entries, and a full page is assembled by joining cached bytes. The embedded
run snapshot is shared by all entries written at one moment of a run, so it is held once
in memory however many entries carry it.

The default sort (timestamp asc, id asc; or both desc) walks the sorted list from a bisect
point and stops after ``limit + 1`` visible matches, so a page costs O(log n + page) when
the filter matches densely. Other sorts fall back to filter-then-sort over all entries.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from runflow_tail.dotted import lookup

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(dict[str, Any])
_RUN_SEPARATOR = b',"run":'
_KEY = operator.attrgetter("ts_ns", "id")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_KEYSETS: dict[tuple[str, ...], frozenset[str]] = {}


class EntryFilter(Protocol):
    """What the store needs from a parsed ``q`` (runflow_tail.filters.Filter fits)."""

    def matches(self, entry: Mapping[str, Any]) -> bool: ...

    def timestamp_lower_bound(self) -> int | None: ...

    def timestamp_upper_bound(self) -> int | None: ...


class Entry:
    """One log entry; ``head`` is its JSON without ``run``, which follows as shared bytes."""

    __slots__ = ("head", "head_keys", "id", "run_doc", "run_id", "run_raw", "ts_ns", "visible_at")

    def __init__(
        self,
        *,
        id: str,
        ts_ns: int,
        run_id: str,
        visible_at: int,
        head: bytes,
        head_keys: frozenset[str],
        run_doc: Any,
        run_raw: bytes,
    ) -> None:
        self.id = id
        self.ts_ns = ts_ns
        self.run_id = run_id
        self.visible_at = visible_at
        self.head = head
        self.head_keys = head_keys
        self.run_doc = run_doc
        self.run_raw = run_raw

    @property
    def key(self) -> tuple[int, str]:
        return (self.ts_ns, self.id)

    def parts(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The entry's bytes in pieces, to be joined into a page without copying twice."""
        return (self.head[:-1], _RUN_SEPARATOR, self.run_raw, b"}")

    @property
    def raw(self) -> bytes:
        return b"".join(self.parts())

    def mapping(self) -> dict[str, Any]:
        """The entry as the API shows it, for filters and projections (decoded on demand)."""
        decoded = _DECODER.decode(self.head)
        decoded["run"] = self.run_doc
        return decoded

    def projected(self, fields: frozenset[str]) -> bytes | tuple[bytes, ...]:
        if self.head_keys <= fields:
            return self.parts() if "run" in fields else self.head
        mapping = self.mapping()
        return _ENCODER.encode({k: v for k, v in mapping.items() if k in fields})


def make_entry(
    document: dict[str, Any], *, ts_ns: int, visible_at: int, run_doc: Any, run_raw: bytes
) -> Entry:
    """Freeze ``document`` (an entry without ``run``) into an Entry; encodes it once."""
    keys = tuple(document)
    head_keys = _KEYSETS.get(keys)
    if head_keys is None:
        head_keys = _KEYSETS.setdefault(keys, frozenset(keys))
    return Entry(
        id=str(document["id"]),
        ts_ns=ts_ns,
        run_id=str(document.get("run_id", "")),
        visible_at=visible_at,
        head=_ENCODER.encode(document),
        head_keys=head_keys,
        run_doc=run_doc,
        run_raw=run_raw,
    )


# -- sorting -------------------------------------------------------------------------------


class SortError(ValueError):
    """A ``sort_by`` value the API refuses (422)."""


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool = False

    def __str__(self) -> str:
        return f"{self.field}:{'desc' if self.descending else 'asc'}"


DEFAULT_SORT = (SortKey("timestamp"), SortKey("id"))


def parse_sort(text: str | None) -> tuple[SortKey, ...]:
    """Parse ``field:asc,other:desc``; ``id`` is appended as a tiebreak when absent.

    The tiebreak takes the direction of the last key so ``timestamp:desc`` walks the
    store exactly backwards, and keyset cursors always name one position.
    """
    if text is None:
        return DEFAULT_SORT
    if not text.strip():
        raise SortError("sort_by must not be empty (expected e.g. timestamp:asc,id:asc)")
    keys: list[SortKey] = []
    for part in text.split(","):
        name, sep, direction = part.strip().partition(":")
        if not sep or not _FIELD_NAME.fullmatch(name):
            raise SortError(f"sort_by part {part.strip()!r} is not field:asc or field:desc")
        if direction.lower() not in ("asc", "desc"):
            raise SortError(f"sort_by direction {direction!r} must be asc or desc")
        if any(key.field == name for key in keys):
            raise SortError(f"sort_by names {name!r} twice")
        keys.append(SortKey(name, direction.lower() == "desc"))
    if not any(key.field == "id" for key in keys):
        keys.append(SortKey("id", keys[-1].descending))
    return tuple(keys)


def sort_values(
    entry: Entry, mapping: Mapping[str, Any] | None, keys: Iterable[SortKey]
) -> list[Any]:
    """The JSON-able sort-key values of an entry (timestamps as epoch ns)."""
    values: list[Any] = []
    for key in keys:
        if key.field == "timestamp":
            values.append(entry.ts_ns)
        elif key.field == "id":
            values.append(entry.id)
        else:
            if mapping is None:
                mapping = entry.mapping()
            values.append(lookup(mapping, key.field))
    return values


def _rank(value: Any) -> tuple[int, Any]:
    # Values of different JSON types must still sort deterministically.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    return (4, _ENCODER.encode(value).decode())


def compare_values(a: list[Any], b: list[Any], keys: tuple[SortKey, ...]) -> int:
    """-1, 0 or 1: the order of two sort-key value lists under ``keys``."""
    for left, right, key in zip(a, b, keys, strict=True):
        ranked_left, ranked_right = _rank(left), _rank(right)
        if ranked_left != ranked_right:
            result = -1 if ranked_left < ranked_right else 1
            return -result if key.descending else result
    return 0


# -- the store -----------------------------------------------------------------------------


@dataclass(slots=True)
class Page:
    items: list[Entry]
    has_more: bool  # more matches lie beyond the page in the walking direction


class EntryStore:
    """Entries sorted by (timestamp_ns, id), with an id index and a per-run index."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.by_id: dict[str, Entry] = {}
        self.by_run: dict[str, list[Entry]] = {}

    def clear(self) -> None:
        self.entries.clear()
        self.by_id.clear()
        self.by_run.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry) -> None:
        if entry.id in self.by_id:
            raise KeyError(entry.id)
        self.by_id[entry.id] = entry
        self.by_run.setdefault(entry.run_id, []).append(entry)
        if not self.entries or _KEY(self.entries[-1]) <= entry.key:
            self.entries.append(entry)
        else:
            bisect.insort_right(self.entries, entry, key=_KEY)

    def add_many(self, batch: list[Entry]) -> None:
        """Add a batch with one sort (Timsort merges the two sorted runs in linear time)."""
        seen: set[str] = set()
        for entry in batch:
            if entry.id in self.by_id or entry.id in seen:
                raise KeyError(entry.id)
            seen.add(entry.id)
        if len(batch) < 8:
            for entry in batch:
                self.add(entry)
            return
        batch = sorted(batch, key=_KEY)
        for entry in batch:
            self.by_id[entry.id] = entry
            self.by_run.setdefault(entry.run_id, []).append(entry)
        appendable = not self.entries or _KEY(self.entries[-1]) <= batch[0].key
        self.entries.extend(batch)
        if not appendable:
            self.entries.sort(key=_KEY)

    def visible_count(self, now: int) -> int:
        return sum(1 for entry in self.entries if entry.visible_at <= now)

    def query(
        self,
        *,
        run_id: str | None,
        entry_filter: EntryFilter | None,
        sort: tuple[SortKey, ...],
        after: list[Any] | None,
        backwards: bool,
        limit: int,
        now: int,
    ) -> Page:
        """One page of visible matches strictly beyond ``after`` (in sort order, or before
        it when ``backwards``), presented in sort order."""
        lower = entry_filter.timestamp_lower_bound() if entry_filter else None
        upper = entry_filter.timestamp_upper_bound() if entry_filter else None

        def accept(entry: Entry) -> bool:
            if entry.visible_at > now or (run_id is not None and entry.run_id != run_id):
                return False
            return entry_filter is None or entry_filter.matches(entry.mapping())

        if sort == DEFAULT_SORT or sort == tuple(SortKey(k.field, True) for k in DEFAULT_SORT):
            walk_list_forward = sort[0].descending == backwards
            page = self._scan(accept, after, walk_list_forward, lower, upper, limit)
        else:
            page = self._sorted(accept, sort, after, backwards, lower, limit)
        if backwards:
            page.items.reverse()
        return page

    def _scan(
        self,
        accept: Callable[[Entry], bool],
        after: list[Any] | None,
        forward: bool,
        lower: int | None,
        upper: int | None,
        limit: int,
    ) -> Page:
        # Like an index would: a bound on timestamp limits the scan, not just the matches.
        entries = self.entries
        found: list[Entry] = []
        if forward:
            start = 0
            if after is not None:
                start = bisect.bisect_right(entries, tuple(after), key=_KEY)
            if lower is not None:
                start = max(start, bisect.bisect_left(entries, (lower, ""), key=_KEY))
            for index in range(start, len(entries)):
                if upper is not None and entries[index].ts_ns > upper:
                    break
                if accept(entries[index]):
                    found.append(entries[index])
                    if len(found) > limit:
                        break
        else:
            start = len(entries)
            if after is not None:
                start = bisect.bisect_left(entries, tuple(after), key=_KEY)
            for index in range(start - 1, -1, -1):
                entry = entries[index]
                if lower is not None and entry.ts_ns < lower:
                    break
                if upper is not None and entry.ts_ns > upper:
                    continue
                if accept(entry):
                    found.append(entry)
                    if len(found) > limit:
                        break
        return Page(found[:limit], len(found) > limit)

    def _sorted(
        self,
        accept: Callable[[Entry], bool],
        sort: tuple[SortKey, ...],
        after: list[Any] | None,
        backwards: bool,
        lower: int | None,
        limit: int,
    ) -> Page:
        start = 0 if lower is None else bisect.bisect_left(self.entries, (lower, ""), key=_KEY)
        keyed: list[tuple[list[Any], Entry]] = []
        for index in range(start, len(self.entries)):
            entry = self.entries[index]
            if not accept(entry):
                continue
            values = sort_values(entry, None, sort)
            if after is not None:
                relation = compare_values(values, after, sort)
                if (relation <= 0) if not backwards else (relation >= 0):
                    continue
            keyed.append((values, entry))
        sign = -1 if backwards else 1

        def order(a: tuple[list[Any], Entry], b: tuple[list[Any], Entry]) -> int:
            return sign * compare_values(a[0], b[0], sort)

        comparator = functools.cmp_to_key(order)
        chosen = heapq.nsmallest(limit + 1, keyed, key=comparator)
        return Page([entry for _, entry in chosen[:limit]], len(chosen) > limit)
