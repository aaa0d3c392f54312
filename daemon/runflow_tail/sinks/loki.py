"""The Loki sink: the push API (``POST /loki/api/v1/push``), JSON, gzip.

Labels stay few and low-cardinality (Loki indexes them; a label per run would make a
stream per run): fixed ones (``job = "runflow"`` by default) plus values from a short
allow-list (``level``, ``stream``, ``flow``). The line is the entry exactly as the API
sent it (``line = "entry"``, query it with ``| json``), or its message with the other
fields as structured metadata (``line = "message"``, Loki 3 or
``allow_structured_metadata``). Values are sorted by time within each stream.

Redelivery: Loki drops an entry whose timestamp and line equal one already in the same
stream (while its chunk is open), so a batch re-sent after a crash or a timeout adds
nothing (entry lines hold the unique id; ``line = "message"`` lines do not, and lose
distinct entries that say the same thing at the same instant: documented, not hidden).
A 400 means Loki stored the rest of the request and refused some lines for good (too old,
too long, bad labels): never retried, dead-lettered with Loki's message.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from pydantic import Field, HttpUrl, SecretStr, field_validator

from runflow_tail.dotted import lookup
from runflow_tail.models import Entry
from runflow_tail.sinks._http import HttpOptions, post, redactor, url_label
from runflow_tail.sinks.base import BatchSettings

PUSH_PATH = "/loki/api/v1/push"
LABEL_FIELDS = {"level": "level_code", "stream": None, "flow": "run.flow_id"}
"""Entry fields a label may come from: each has few values (``stream`` is ours)."""
MISSING_LABEL = "unknown"
DEFAULT_LOKI_BATCH = BatchSettings(max_events=1000, max_bytes=1024 * 1024, max_wait=1.0)
# Loki's own default for one push is 4 MB/s per tenant, bursts of 6 MB: 1 MiB a request
# stays well inside it.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ENCODE = msgspec.json.Encoder()


class LokiSinkConfig(HttpOptions):
    """Also ``headers``, ``bearer_token``/``basic_*``, ``timeout``, ``verify``, ``ca_file``."""

    type: Literal["loki"] = "loki"
    url: HttpUrl
    """Loki's base URL, e.g. http://loki:3100 (the push path is added)."""
    tenant_id: SecretStr | None = None
    """Sent as X-Scope-OrgID (multi-tenant Loki; Grafana Cloud uses basic auth instead)."""
    labels: dict[str, str] = Field(default_factory=lambda: {"job": "runflow"})
    """Fixed labels of every stream."""
    label_fields: tuple[Literal["level", "stream", "flow"], ...] = ()
    """Labels taken from each entry: level (level_code), stream (ours), flow (run.flow_id)."""
    line: Literal["entry", "message"] = "entry"
    """The log line: the entry as the API sent it, or its message (the rest then goes into
    structured metadata). Loki drops a line whose timestamp and text it already holds in
    the stream, so with "message" two entries saying the same thing at the same instant
    keep only one."""
    structured_metadata: bool = False
    """With line = "entry": also attach id and run_id as structured metadata."""
    compression: Literal["gzip", "none"] = "gzip"
    batch: BatchSettings | bool = DEFAULT_LOKI_BATCH

    @field_validator("labels")
    @classmethod
    def _labels_are_valid(cls, value: dict[str, str]) -> dict[str, str]:
        for name, label_value in value.items():
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(
                    f"label name {name!r}: expected letters, digits and '_', not starting "
                    "with a digit or '__'"
                )
            if not label_value:
                raise ValueError(f"label {name!r} needs a value (Loki drops empty labels)")
        return value

    def needs_fields(self) -> bool:
        return bool(self.label_fields) or self.line == "message" or self.structured_metadata

    def build(self, name: str) -> LokiSink:
        return LokiSink(self, name=name)


class LokiSink:
    def __init__(self, config: LokiSinkConfig, *, name: str) -> None:
        self._config = config
        self._url = str(config.url).rstrip("/") + PUSH_PATH
        self._label = url_label(self._url)
        headers = {}
        if config.tenant_id is not None:
            headers["X-Scope-OrgID"] = config.tenant_id.get_secret_value()
        if config.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        self._http = config.http_client(name, **headers)
        secrets = config.secret_values()
        if config.tenant_id is not None:
            secrets.append(config.tenant_id.get_secret_value())
        self._redact = redactor(secrets)

    def __repr__(self) -> str:
        return f"LokiSink(url={self._label!r})"

    async def send(self, batch: Sequence[Entry]) -> None:
        body = push_body(batch, self._config)
        if self._config.compression == "gzip":
            body = gzip.compress(body, compresslevel=6, mtime=0)
        await post(self._http, self._url, content=body, label=self._label, redact=self._redact)

    async def aclose(self) -> None:
        await self._http.aclose()


def push_body(batch: Sequence[Entry], config: LokiSinkConfig) -> bytes:
    """The push request: one stream per label set, its values in timestamp order."""
    streams: dict[tuple[tuple[str, str], ...], list[tuple[int, list[Any]]]] = {}
    needs_data = bool(config.label_fields) or config.line == "message"
    for entry in batch:
        data = entry.data() if needs_data or config.structured_metadata else {}
        labels = dict(config.labels)
        for label in config.label_fields:
            source = LABEL_FIELDS[label]
            value = entry.stream if source is None else lookup(data, source)
            labels[label] = str(value) if value not in (None, "") else MISSING_LABEL
        value = _value(entry, data, config)
        streams.setdefault(tuple(sorted(labels.items())), []).append((entry.timestamp_ns, value))
    document = {
        "streams": [
            {"stream": dict(key), "values": [v for _, v in sorted(values, key=_by_time)]}
            for key, values in streams.items()
        ]
    }
    return _ENCODE.encode(document)


def _by_time(item: tuple[int, list[Any]]) -> int:
    return item[0]


def _value(entry: Entry, data: dict[str, Any], config: LokiSinkConfig) -> list[Any]:
    # Loki wants the timestamp as a string of nanoseconds (a number is a 400).
    stamp = str(entry.timestamp_ns)
    if config.line == "message":
        metadata = {
            key: _metadata_text(value)
            for key, value in data.items()
            if key not in ("message", "timestamp") and value is not None
        }
        return [stamp, str(data.get("message", "")), metadata]
    line = entry.raw.decode("utf-8", "replace")
    if config.structured_metadata:
        run_id = data.get("run_id")
        metadata = {"id": entry.id, **({"run_id": str(run_id)} if run_id else {})}
        return [stamp, line, metadata]
    return [stamp, line]


def _metadata_text(value: Any) -> str:
    """Structured metadata is flat text: nested values travel as their JSON."""
    if isinstance(value, str):
        return value
    return _ENCODE.encode(value).decode()
