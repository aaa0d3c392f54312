"""The Elasticsearch / OpenSearch sink: the ``_bulk`` API, ``create`` actions, ``_id`` = entry id.

Each entry is one ``create`` of the entry as the API sent it, with ``@timestamp`` added
(data streams require it); the index (or data stream) name is a template of the entry's
stream and UTC date, so an entry always goes to the same index.

Redelivery: ``create`` refuses an ``_id`` the index already holds (per item 409,
``version_conflict_engine_exception``), and that counts as delivered: a batch re-sent
after a crash or a retry adds no duplicates. (Caveat: ``_id`` is unique per backing
index, so a data stream rolled over between the two sends can hold one twice.)

The answer is 200 even when items fail, so each item is read: a 429 or 5xx item makes
the whole batch retry (the items already stored answer 409 next time); any other failed
item (a mapping error, say) is dead-lettered with its reason while the rest count as
delivered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import msgspec
from pydantic import HttpUrl, SecretStr, field_validator, model_validator

from runflow_tail.errors import SinkPartiallyRejectedError, SinkRetryableError
from runflow_tail.models import Entry
from runflow_tail.sinks._http import HttpOptions, post, redactor, url_label
from runflow_tail.sinks.base import BatchSettings

DEFAULT_INDEX = "runflow-logs-{date}"
DEFAULT_ES_BATCH = BatchSettings(max_events=1000, max_bytes=5 * 1024 * 1024, max_wait=1.0)
# Elastic's tuning advice: bulk requests of a few MB; the server's limit is 100 MB.
RESPONSE_FILTER = "errors,items.*.status,items.*.error.type,items.*.error.reason"
REASONS_SHOWN = 3


class _Error(msgspec.Struct):
    type: str = ""
    reason: str = ""


class _Result(msgspec.Struct):
    status: int = 0
    error: _Error | None = None


class _BulkAnswer(msgspec.Struct):
    errors: bool = False
    items: list[dict[str, _Result]] = []


_DECODE_ANSWER = msgspec.json.Decoder(_BulkAnswer).decode
_ENCODE = msgspec.json.Encoder()


class ElasticsearchSinkConfig(HttpOptions):
    """Also ``headers``, ``bearer_token``/``basic_*``, ``timeout``, ``verify``, ``ca_file``."""

    type: Literal["elasticsearch"] = "elasticsearch"
    url: HttpUrl
    """The cluster's base URL, e.g. https://es.example.com:9200 (``/_bulk`` is added)."""
    index: str = DEFAULT_INDEX
    """Index or data stream name; may use {stream} (lowercased, as index names must be)
    and {date} (the entry's UTC YYYY.MM.DD)."""
    api_key: SecretStr | None = None
    """Sent as ``Authorization: ApiKey <api_key>``: Elasticsearch's base64 ``encoded`` key
    (id:key), or an OpenSearch 3.7+ API key."""
    batch: BatchSettings | bool = DEFAULT_ES_BATCH

    @field_validator("index")
    @classmethod
    def _index_is_valid(cls, value: str) -> str:
        try:
            sample = value.format(stream="s", date="2026.01.01")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{stream}} and {{date}} may be used ({exc})") from None
        if not sample or sample != sample.lower() or any(c in sample for c in ' "*\\<|,>/?#:'):
            raise ValueError(
                'expected a lowercase index name without spaces or any of " * \\ < | , > / ? # :'
            )
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> ElasticsearchSinkConfig:
        if self.api_key is not None and (self.bearer_token or self.basic_username):
            raise ValueError("use one of api_key, bearer_token or basic_username/basic_password")
        return self

    def secret_values(self) -> list[str]:
        values = super().secret_values()
        if self.api_key is not None:
            values.append(self.api_key.get_secret_value())
        return values

    def needs_fields(self) -> bool:
        return False  # each document is the entry's bytes plus @timestamp

    def build(self, name: str) -> ElasticsearchSink:
        return ElasticsearchSink(self, name=name)


class ElasticsearchSink:
    def __init__(self, config: ElasticsearchSinkConfig, *, name: str) -> None:
        self._config = config
        self._url = str(config.url).rstrip("/") + "/_bulk"
        self._label = url_label(self._url)
        headers = {}
        if config.api_key is not None:
            headers["Authorization"] = f"ApiKey {config.api_key.get_secret_value()}"
        self._http = config.http_client(name, content_type="application/x-ndjson", **headers)
        self._redact = redactor(config.secret_values())
        self._templated = "{" in config.index

    def __repr__(self) -> str:
        return f"ElasticsearchSink(url={self._label!r})"

    async def send(self, batch: Sequence[Entry]) -> None:
        response = await post(
            self._http,
            self._url,
            content=self.bulk_body(batch),
            label=self._label,
            params={"filter_path": RESPONSE_FILTER},
            redact=self._redact,
        )
        try:
            answer = _DECODE_ANSWER(response.content)
        except msgspec.DecodeError as exc:
            raise SinkRetryableError(f"{self._label} answered 2xx without a bulk result") from exc
        if not answer.errors:
            return
        if len(answer.items) != len(batch):
            raise SinkRetryableError(
                f"{self._label} answered {len(answer.items)} items for {len(batch)} documents"
            )
        self._judge(batch, answer)

    def _judge(self, batch: Sequence[Entry], answer: _BulkAnswer) -> None:
        retry: list[str] = []
        refused: list[Entry] = []
        reasons: dict[str, int] = {}
        for entry, item in zip(batch, answer.items, strict=True):
            result = next(iter(item.values()), _Result())
            error = result.error or _Error()
            if 200 <= result.status < 300:
                continue
            if result.status == 409 and error.type == "version_conflict_engine_exception":
                continue  # this _id is stored already: an earlier send got through
            text = f"{result.status} {error.type}: {error.reason}".strip()
            if result.status == 429 or result.status >= 500:
                retry.append(text)
            else:
                refused.append(entry)
                reasons[text] = reasons.get(text, 0) + 1
        if retry:
            text = f"{self._label}: {len(retry)} of {len(batch)} items to retry: {retry[0]}"
            raise SinkRetryableError(self._redact(text))
        if refused:
            shown = "; ".join(
                f"{count} x {text}" for text, count in list(reasons.items())[:REASONS_SHOWN]
            )
            raise SinkPartiallyRejectedError(
                self._redact(f"{self._label} refused {len(refused)} of {len(batch)}: {shown}"),
                rejected=refused,
                accepted=len(batch) - len(refused),
            )

    def bulk_body(self, batch: Sequence[Entry]) -> bytes:
        """NDJSON: a ``create`` line and the document line per entry, ending in a newline."""
        parts: list[bytes] = []
        fixed_index = None if self._templated else self._config.index
        for entry in batch:
            seconds, fraction = divmod(entry.timestamp_ns, 1_000_000_000)
            date = time.gmtime(seconds)
            # Index names are lowercase only; stream names may have capitals.
            index = fixed_index or self._config.index.format(
                stream=entry.stream.lower(), date=time.strftime("%Y.%m.%d", date)
            )
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", date) + f".{fraction:09d}Z"
            parts.append(_ENCODE.encode({"create": {"_index": index, "_id": entry.id}}))
            parts.append(_document(entry.raw, stamp))
        parts.append(b"")
        return b"\n".join(parts)

    async def aclose(self) -> None:
        await self._http.aclose()


def _document(raw: bytes, stamp: str) -> bytes:
    """The entry's bytes with ``@timestamp`` first, on one line.

    A line break in valid JSON can only be whitespace between tokens (inside a string it
    is escaped), so turning it into a space changes no value.
    """
    body = raw.strip()
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\r", b" ").replace(b"\n", b" ")
    rest = body[1:].lstrip()
    separator = b"" if rest.startswith(b"}") else b","
    return b'{"@timestamp":"' + stamp.encode() + b'"' + separator + rest
