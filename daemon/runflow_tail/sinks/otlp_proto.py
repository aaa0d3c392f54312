"""OTLP logs as the official ``opentelemetry-proto`` classes build them (the ``otlp`` extra).

Imported only when an ``otlp`` sink is built (``sinks.otlp``), so a configuration without
one never needs protobuf. The mapping follows the OpenTelemetry logs data model:
``time_unix_nano`` the entry's timestamp, ``observed_time_unix_nano`` when runflow-tail
sent it, ``severity_text`` the ``level_code``, ``body`` the message, ``log.record.uid``
the entry id, ``runflow.run_id`` and every other field flattened under a prefix
(``runflow.meta.node``); nested lists stay arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import empty_pb2, json_format
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from runflow_tail.models import Entry
from runflow_tail.version import __version__

SEVERITY_NUMBERS = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "warning": 13,
    "warn": 13,
    "error": 17,
    "fatal": 21,
    "critical": 21,
}
"""``level_code`` -> SeverityNumber (the base of each range); anything else is 0, unset."""
SCOPE_NAME = "runflow-tail"
OWN_FIELDS = frozenset({"id", "timestamp", "message", "level_code", "run_id"})
"""Entry fields that have a place of their own in the record (not flattened attributes)."""
INT64 = range(-(2**63), 2**63)


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value) if value in INT64 else AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=str(k), value=any_value(v)) for k, v in value.items()]
            )
        )
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    return AnyValue() if value is None else AnyValue(string_value=str(value))


def flatten(prefix: str, value: Any, into: list[KeyValue]) -> None:
    """Nested objects become dotted keys; anything else (lists too) one attribute."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            flatten(f"{prefix}.{key}", item, into)
    elif value is not None:
        into.append(KeyValue(key=prefix, value=any_value(value)))


def log_record(entry: Entry, observed_ns: int, prefix: str) -> LogRecord:
    data = entry.data()
    level = data.get("level_code")
    attributes = [KeyValue(key="log.record.uid", value=AnyValue(string_value=entry.id))]
    if data.get("run_id") is not None:
        attributes.append(KeyValue(key="runflow.run_id", value=any_value(data["run_id"])))
    attributes.append(KeyValue(key=f"{prefix}stream", value=AnyValue(string_value=entry.stream)))
    for key, value in data.items():
        if key not in OWN_FIELDS:
            flatten(f"{prefix}{key}", value, attributes)
    record = LogRecord(
        time_unix_nano=entry.timestamp_ns,
        observed_time_unix_nano=observed_ns,
        severity_number=SEVERITY_NUMBERS.get(str(level).lower(), 0),  # type: ignore[arg-type]
        attributes=attributes,
    )
    if level is not None:
        record.severity_text = str(level)
    message = data.get("message")
    if message is not None:
        record.body.CopyFrom(any_value(message))
    return record


def encode_request(
    batch: Sequence[Entry],
    *,
    resource: Mapping[str, str],
    observed_ns: int,
    prefix: str,
    json: bool,
) -> bytes:
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(
                    attributes=[
                        KeyValue(key=key, value=AnyValue(string_value=value))
                        for key, value in resource.items()
                    ]
                ),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name=SCOPE_NAME, version=__version__),
                        log_records=[log_record(e, observed_ns, prefix) for e in batch],
                    )
                ],
            )
        ]
    )
    if json:
        # OTLP/JSON: lowerCamelCase keys, enums as integers, 64-bit integers as strings
        # (protobuf's JSON mapping, with integers for enums).
        text: str = json_format.MessageToJson(request, use_integers_for_enums=True, indent=None)
        return text.encode()
    wire: bytes = request.SerializeToString()
    return wire


def partial_success(body: bytes, *, json: bool) -> tuple[int, str]:
    """``(rejected_log_records, error_message)`` of a 2xx answer (0 and "" when unset)."""
    if not body.strip():
        return 0, ""
    response = ExportLogsServiceResponse()
    try:
        if json:
            json_format.Parse(body, response, ignore_unknown_fields=True)
        else:
            response.ParseFromString(body)
    except (DecodeError, json_format.ParseError):
        return 0, ""  # a 2xx is success; an unreadable detail cannot change that
    return response.partial_success.rejected_log_records, response.partial_success.error_message


def status_message(body: bytes) -> str:
    """The ``message`` (field 2) of a protobuf ``google.rpc.Status`` error body.

    ``google.rpc`` is not part of protobuf; read as an empty message, its fields are
    all "unknown", which is enough to find the one string we want.
    """
    holder = empty_pb2.Empty()
    try:
        holder.ParseFromString(body)
    except DecodeError:
        return ""
    for field in UnknownFieldSet(holder):
        if field.field_number == 2 and isinstance(field.data, bytes):
            return field.data.decode("utf-8", "replace")
    return ""
