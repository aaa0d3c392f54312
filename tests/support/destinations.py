"""Loopback stand-ins for log destinations this machine cannot run: Elasticsearch's ``_bulk``,
Loki's push API and an OTLP/HTTP logs receiver. Each behaviour is the documented one, with
the document cited beside it; a test scripts the answers it needs (overload, refusals).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from runflow_tail.models import Entry
from runflow_tail.times import format_instant
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.receivers import serving

BASE_NS = 1_795_000_000_000_000_000


def make_entries(
    count: int,
    *,
    first_seq: int = 1,
    stream: str = "s",
    level: str = "info",
    message: str = "step {seq} done",
    run_id: str = "0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
    meta: dict[str, Any] | None = None,
) -> list[Entry]:
    """Entries shaped like the API's projected ones, 1 ms apart, ids ``e-<seq>``."""
    entries = []
    for seq in range(first_seq, first_seq + count):
        timestamp_ns = BASE_NS + seq * 1_000_000
        document = {
            "id": f"e-{seq}",
            "run_id": run_id,
            "level_code": level,
            "message": message.format(seq=seq),
            "timestamp": format_instant(timestamp_ns),
            "meta": {"node": "n1", "attempt": 2} if meta is None else meta,
        }
        raw = json.dumps(document).encode()
        entries.append(Entry(seq, stream, document["id"], timestamp_ns, raw))
    return entries


def _body(request_body: bytes, headers: Any) -> bytes:
    if headers.get("content-encoding") == "gzip":
        return gzip.decompress(request_body)
    return request_body


@dataclass
class Script:
    """Answers queued by a test: (status, headers, body) for the next requests."""

    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> tuple[int, dict[str, str], bytes] | None:
        with self.lock:
            return self.answers.pop(0) if self.answers else None


# -- Elasticsearch / OpenSearch _bulk -------------------------------------------------------


@dataclass
class ElasticsearchFake:
    """``POST /_bulk`` as the Bulk API reference describes it
    (https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk).

    - NDJSON, each line ending with a newline including the last, else the request is
      refused with 400 ("The bulk request must be terminated by a newline").
    - ``create`` indexes a document only if its ``_id`` is new in that index; otherwise the
      item fails with 409 ``version_conflict_engine_exception`` ("[id]: version conflict,
      document already exists (current version [1])"); the HTTP status stays 200.
    - The answer is ``{"took", "errors", "items"}``, items in request order, each
      ``{"create": {"_index", "_id", "status", "error"?}}``; ``errors`` is true if any failed.
    - A data stream requires ``@timestamp`` in every document (Elasticsearch reference,
      "Data streams"): a document without it fails with 400 ``document_parsing_exception``.
    - Overload: items fail with 429 ``es_rejected_execution_exception`` (reference,
      "Bulk API" - "retry ... 429"), or the whole request answers 429.
    - Index names must be lowercase and hold none of the characters ``/ * ? " < > | , #``,
      a backslash or a space
      (reference, "Create index API" - "Index names must meet the following criteria"):
      an item for another name fails with 400 ``invalid_index_name_exception``.
    """

    documents: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    item_failures: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    """Per _id, failures for its next attempts: (status, error type, reason)."""
    script: Script = field(default_factory=Script)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _bulk(self, request: Request) -> Response:
        raw = _body(await request.body(), request.headers)
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "body": raw})
        scripted = self.script.next()
        if scripted is not None:
            return Response(scripted[2], status_code=scripted[0], headers=scripted[1])
        if not raw.endswith(b"\n"):
            return _es_error(
                400,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            )
        lines = raw.split(b"\n")[:-1]
        items = []
        with self._lock:
            for action_line, source_line in zip(lines[::2], lines[1::2], strict=True):
                action = json.loads(action_line)["create"]
                items.append({"create": self._create(action, json.loads(source_line))})
        errors = any(item["create"]["status"] >= 300 for item in items)
        return Response(
            json.dumps({"took": 3, "errors": errors, "items": items}),
            media_type="application/json",
        )

    def _create(self, action: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        index, doc_id = action["_index"], action["_id"]
        result: dict[str, Any] = {"_index": index, "_id": doc_id}
        if index != index.lower() or any(c in index for c in '\\/*?"<>|, #'):
            reason = f"Invalid index name [{index}], must be lowercase"
            return {
                **result,
                "status": 400,
                "error": {"type": "invalid_index_name_exception", "reason": reason},
            }
        queued = self.item_failures.get(doc_id)
        if queued:
            status, kind, reason = queued.pop(0)
            return {**result, "status": status, "error": {"type": kind, "reason": reason}}
        if "@timestamp" not in source:
            reason = "data stream timestamp field [@timestamp] is missing"
            return {
                **result,
                "status": 400,
                "error": {"type": "document_parsing_exception", "reason": reason},
            }
        if (index, doc_id) in self.documents:
            reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
            return {
                **result,
                "status": 409,
                "error": {"type": "version_conflict_engine_exception", "reason": reason},
            }
        self.documents[(index, doc_id)] = source
        return {**result, "status": 201, "result": "created", "_version": 1}


def _es_error(status: int, kind: str, reason: str) -> Response:
    body = {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }
    return Response(json.dumps(body), status_code=status, media_type="application/json")


@contextlib.contextmanager
def running_elasticsearch(fake: ElasticsearchFake | None = None) -> Iterator[ElasticsearchFake]:
    fake = fake or ElasticsearchFake()
    app = Starlette(routes=[Route("/_bulk", fake._bulk, methods=["POST"])])
    with serving(app) as base_url:
        fake.url = base_url
        yield fake


# -- Loki push ----------------------------------------------------------------------------


@dataclass
class LokiFake:
    """``POST /loki/api/v1/push`` with a JSON body as Loki's HTTP API reference describes it
    (https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs).

    - ``{"streams": [{"stream": {labels}, "values": [["<ns>", "<line>", {metadata}?]]}]}``;
      ``Content-Encoding: gzip`` accepted. Success is 204 No Content.
    - The timestamp must be a string ("you must send the timestamp as a string and not a
      number, otherwise the endpoint will return a 400 error").
    - Each stream needs at least one label (400 "error at least one label pair is required
      per stream"); structured metadata is a flat object of strings.
    - An entry with the same timestamp and line as one already in the stream is ignored
      (Loki docs, "Duplicate log lines": "ingested ... deduplicated").
    - 400 for lines it refuses stores the request's other lines ("total ignored: N out of
      M"); 429 when over the ingestion rate limit (Loki troubleshooting: "Loki returns HTTP
      status code 429").
    """

    lines: list[tuple[dict[str, str], int, str, dict[str, str] | None]] = field(
        default_factory=list
    )
    requests: list[dict[str, Any]] = field(default_factory=list)
    too_old_before_ns: int | None = None
    """Lines older than this are refused with 400 and Loki's message; the others stored."""
    script: Script = field(default_factory=Script)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _push(self, request: Request) -> Response:
        body = _body(await request.body(), request.headers)
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "body": body})
        scripted = self.script.next()
        if scripted is not None:
            return Response(scripted[2], status_code=scripted[0], headers=scripted[1])
        problems, ignored, total = self._store(json.loads(body))
        if problems:
            text = "\n".join(problems)
            if ignored:
                text += f"\nuser 'fake', total ignored: {ignored} out of {total}"
            return Response(text.encode(), status_code=400, media_type="text/plain")
        return Response(status_code=204)

    def _store(self, document: dict[str, Any]) -> tuple[list[str], int, int]:
        problems: list[str] = []
        ignored = total = 0
        with self._lock:
            for stream in document["streams"]:
                labels = stream.get("stream") or {}
                if not labels:
                    problems.append("error at least one label pair is required per stream")
                    continue
                for value in stream["values"]:
                    total += 1
                    stamp, line = value[0], value[1]
                    metadata = value[2] if len(value) > 2 else None
                    if not isinstance(stamp, str):
                        return ["error parsing timestamp: expected a string"], 0, total
                    if metadata is not None and not all(
                        isinstance(v, str) for v in metadata.values()
                    ):
                        return ["structured metadata values must be strings"], 0, total
                    if self.too_old_before_ns is not None and int(stamp) < self.too_old_before_ns:
                        ignored += 1
                        problems.append(
                            f"entry with timestamp {stamp} ignored, reason: 'entry too far "
                            f"behind, oldest acceptable timestamp is: {self.too_old_before_ns}'"
                        )
                        continue
                    record = (labels, int(stamp), line, metadata)
                    if not any(r[:3] == record[:3] for r in self.lines):
                        self.lines.append(record)
        return problems, ignored, total


@contextlib.contextmanager
def running_loki(fake: LokiFake | None = None) -> Iterator[LokiFake]:
    fake = fake or LokiFake()
    app = Starlette(routes=[Route("/loki/api/v1/push", fake._push, methods=["POST"])])
    with serving(app) as base_url:
        fake.url = base_url
        yield fake


# -- OTLP/HTTP ----------------------------------------------------------------------------


def rpc_status(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` (code = field 1, message = field 2) on the wire."""
    text = message.encode()
    return bytes([0x08, code, 0x12, len(text)]) + text


@dataclass
class OtlpReceiver:
    """``POST /v1/logs`` decoded with the official opentelemetry-proto classes (OTLP
    specification, "OTLP/HTTP": protobuf or JSON, optional gzip, the answer in the
    request's content type; an error body is a ``google.rpc.Status``)."""

    received: list[ExportLogsServiceRequest] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: Script = field(default_factory=Script)
    partial: list[tuple[int, str]] = field(default_factory=list)
    """``partial_success`` (rejected, message) for the next successful answers."""
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _logs(self, request: Request) -> Response:
        body = _body(await request.body(), request.headers)
        content_type = request.headers.get("content-type", "")
        with self._lock:
            self.requests.append({"headers": dict(request.headers)})
        scripted = self.script.next()
        if scripted is not None:
            return Response(scripted[2], status_code=scripted[0], headers=scripted[1])
        message = ExportLogsServiceRequest()
        is_json = content_type == "application/json"
        if is_json:
            json_format.Parse(body, message)
        elif content_type == "application/x-protobuf":
            message.ParseFromString(body)
        else:
            return Response(
                rpc_status(3, f"unsupported content type {content_type}"), status_code=415
            )
        answer = ExportLogsServiceResponse()
        with self._lock:
            self.received.append(message)
            if self.partial:
                rejected, text = self.partial.pop(0)
                answer.partial_success.rejected_log_records = rejected
                answer.partial_success.error_message = text
        if is_json:
            return Response(json_format.MessageToJson(answer), media_type="application/json")
        return Response(answer.SerializeToString(), media_type="application/x-protobuf")

    def records(self) -> list[Any]:
        with self._lock:
            return [
                record
                for message in self.received
                for resource_logs in message.resource_logs
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records
            ]


@contextlib.contextmanager
def running_otlp(receiver: OtlpReceiver | None = None) -> Iterator[OtlpReceiver]:
    receiver = receiver or OtlpReceiver()
    app = Starlette(routes=[Route("/v1/logs", receiver._logs, methods=["POST"])])
    with serving(app) as base_url:
        receiver.url = base_url
        yield receiver
