"""The OTLP sink: OTLP/HTTP logs (``POST {endpoint}/v1/logs``) to an OpenTelemetry Collector,
Loki 3 (``/otlp``), Elastic, Grafana Cloud, Datadog, ...

Protobuf by default (``encoding = "json"`` for OTLP/JSON), gzip by default, encoded with
the official ``opentelemetry-proto`` classes (``pip install 'runflow-tail[otlp]'``); the
mapping is in ``sinks.otlp_proto``. Answers as the OTLP specification says: 2xx delivers
(a ``partial_success`` that rejected records dead-letters the batch for them), 429, 502,
503 and 504 retry (``Retry-After`` honoured), every other status is final.

Redelivery: OTLP has no idempotency, so a batch in flight at a crash may reach the
backend twice; each record carries ``log.record.uid`` (the entry id) to find doubles.
"""

from __future__ import annotations

import gzip
import importlib.util
import time
from collections.abc import Sequence
from typing import Literal

import httpx
from pydantic import Field, HttpUrl, model_validator

from runflow_tail.errors import SinkPartiallyRejectedError, SinkRejectedError
from runflow_tail.models import Entry
from runflow_tail.sinks._http import HttpOptions, body_text, post, redactor, url_label
from runflow_tail.sinks.base import BatchSettings

OTLP_RETRYABLE = frozenset({429, 502, 503, 504})
LOGS_PATH = "/v1/logs"
DEFAULT_SERVICE_NAME = "runflow"
DEFAULT_OTLP_BATCH = BatchSettings(max_events=1000, max_bytes=4 * 1024 * 1024, max_wait=1.0)
EXTRA_HINT = "pip install 'runflow-tail[otlp]'"


def _otlp_retryable(status: int) -> bool:
    return status in OTLP_RETRYABLE


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


class OtlpSinkConfig(HttpOptions):
    """Also ``headers`` (e.g. an API key header), ``bearer_token``/``basic_*``, ``timeout``,
    ``verify``, ``ca_file``."""

    type: Literal["otlp"] = "otlp"
    endpoint: HttpUrl
    """The OTLP/HTTP base URL, e.g. http://otel-collector:4318 (``/v1/logs`` is added)."""
    encoding: Literal["protobuf", "json"] = "protobuf"
    compression: Literal["gzip", "none"] = "gzip"
    service_name: str = Field(DEFAULT_SERVICE_NAME, min_length=1)
    """The resource's ``service.name``."""
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    """More resource attributes, e.g. { "deployment.environment" = "prod" }."""
    attribute_prefix: str = "runflow."
    """Prefix of the attributes made from the entry's other fields (runflow.meta.node)."""
    batch: BatchSettings | bool = DEFAULT_OTLP_BATCH

    @model_validator(mode="after")
    def _extra_installed(self) -> OtlpSinkConfig:
        if not _installed("opentelemetry.proto"):
            raise ValueError(f"the otlp sink needs the opentelemetry-proto package: {EXTRA_HINT}")
        return self

    def logs_url(self) -> str:
        base = str(self.endpoint).rstrip("/")
        return base if base.endswith(LOGS_PATH) else base + LOGS_PATH

    def build(self, name: str) -> OtlpSink:
        return OtlpSink(self, name=name)


class OtlpSink:
    def __init__(self, config: OtlpSinkConfig, *, name: str) -> None:
        # The one lazy import: protobuf is an optional extra (see tests/base/test_layers.py).
        import runflow_tail.sinks.otlp_proto as otlp_proto

        self._proto = otlp_proto
        self._config = config
        self._json = config.encoding == "json"
        self._url = config.logs_url()
        self._label = url_label(self._url)
        self._resource = {"service.name": config.service_name, **config.resource_attributes}
        content_type = "application/json" if self._json else "application/x-protobuf"
        headers = {"Content-Encoding": "gzip"} if config.compression == "gzip" else {}
        self._http = config.http_client(name, content_type=content_type, **headers)
        self._redact = redactor(config.secret_values())

    def __repr__(self) -> str:
        return f"OtlpSink(url={self._label!r})"

    async def send(self, batch: Sequence[Entry]) -> None:
        body = self._proto.encode_request(
            batch,
            resource=self._resource,
            observed_ns=time.time_ns(),
            prefix=self._config.attribute_prefix,
            json=self._json,
        )
        if self._config.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        try:
            response = await post(
                self._http,
                self._url,
                content=body,
                label=self._label,
                redact=self._redact,
                retryable=_otlp_retryable,
                said=self._said,
            )
        except SinkRejectedError as exc:
            if exc.status == 413:
                raise SinkRejectedError(
                    f"{exc} (the request is too large: lower [sinks.NAME.batch] max_events "
                    "or max_bytes, then replay the dead letter)",
                    status=exc.status,
                ) from exc
            raise
        rejected, message = self._proto.partial_success(response.content, json=self._json)
        if rejected > 0:
            reason = self._redact(
                f"{self._label} rejected {rejected} of {len(batch)} log records"
                + (f": {message}" if message else "")
                + " (OTLP does not say which; the dead letter keeps the whole batch)"
            )
            raise SinkPartiallyRejectedError(
                reason, rejected=batch, accepted=max(0, len(batch) - rejected)
            )

    def _said(self, response: httpx.Response) -> str:
        if "protobuf" in response.headers.get("content-type", ""):
            return self._proto.status_message(response.content)
        return body_text(response)

    async def aclose(self) -> None:
        await self._http.aclose()
