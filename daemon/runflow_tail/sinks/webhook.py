"""The webhook sink: POST entries as JSON, signed per Standard Webhooks, idempotent by design.

Body: ``{"entries": [<entry>, ...]}``, or the entry itself with ``batch = false``; each
entry's bytes are exactly what the API sent. Every request carries an id that is the same
for every retry of the same entries, across restarts too (``Idempotency-Key`` and
``webhook-id``): the delivery loop re-sends an interrupted batch with the same boundaries,
and the id is derived from those boundaries and the entries' own ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import ClassVar, Literal

import anyio
from pydantic import Field, HttpUrl, SecretStr, field_validator

from runflow_tail.errors import SinkRejectedError, SinkRetryableError
from runflow_tail.models import Duration, Entry
from runflow_tail.sinks._http import HttpOptions, post, redactor, url_label
from runflow_tail.sinks.base import BatchSettings

DEFAULT_WEBHOOK_BATCH = BatchSettings(max_events=100, max_bytes=1024 * 1024, max_wait=1.0)
DEFAULT_WEBHOOK_RETRY = 3600.0
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret


class WebhookSinkConfig(HttpOptions):
    """Also ``headers``, ``bearer_token``/``basic_*``, ``timeout``, ``verify``, ``ca_file``
    (``sinks._http.HttpOptions``)."""

    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    batch: BatchSettings | bool = DEFAULT_WEBHOOK_BATCH
    """A table of batch limits, or `false` to POST each entry on its own (unwrapped)."""
    secret: SecretStr | None = None
    """Standard Webhooks signing secret, `whsec_<base64>` (or bare base64)."""
    concurrency: int = Field(1, ge=1, le=64)
    """Requests in flight at once; a batch is split into this many parts, in order."""
    max_retry_duration: Duration | None = DEFAULT_WEBHOOK_RETRY

    stable_batches: ClassVar[bool] = True

    @field_validator("secret")
    @classmethod
    def _secret_is_base64(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            signing_key(value)
        return value

    def needs_fields(self) -> bool:
        return False  # the entries' bytes, as received

    def build(self, name: str) -> WebhookSink:
        return WebhookSink(self, name=name)


def signing_key(secret: SecretStr) -> bytes:
    text = secret.get_secret_value().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "expected a Standard Webhooks secret: 'whsec_' followed by base64 "
            '(e.g. generate one with: python3 -c "import os,base64;'
            "print('whsec_'+base64.b64encode(os.urandom(24)).decode())\")"
        ) from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def idempotency_key(sink: str, batch: Sequence[Entry]) -> str:
    """Stable for the same entries at the same journal positions; never shared by others."""
    first, last = batch[0], batch[-1]
    material = f"{sink}\n{first.seq}\n{last.seq}\n{first.id}\n{last.id}\n{len(batch)}"
    return "msg_" + hashlib.sha256(material.encode()).hexdigest()[:32]


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSink:
    def __init__(self, config: WebhookSinkConfig, *, name: str) -> None:
        self._config = config
        self._name = name
        self._url = str(config.url)
        self._key = signing_key(config.secret) if config.secret is not None else None
        self._batched = config.batch is not False
        self._http = config.http_client(name)
        self._label = url_label(self._url)
        secrets = config.secret_values()
        if config.secret is not None:
            secrets.append(config.secret.get_secret_value())
        self._redact = redactor(secrets)

    def __repr__(self) -> str:
        return f"WebhookSink(name={self._name!r})"

    async def send(self, batch: Sequence[Entry]) -> None:
        parts = _split(batch, self._config.concurrency)
        if len(parts) == 1:
            await self._post(parts[0])
            return
        failures: list[Exception] = []

        async def post(part: Sequence[Entry]) -> None:
            try:
                await self._post(part)
            except (SinkRetryableError, SinkRejectedError) as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for part in parts:
                tg.start_soon(post, part)
        if failures:
            # Parts that succeeded are re-sent with their same ids: receivers drop them.
            rejected = [f for f in failures if isinstance(f, SinkRejectedError)]
            raise rejected[0] if rejected else failures[0]

    async def _post(self, batch: Sequence[Entry]) -> None:
        if self._batched:
            body = b'{"entries":[' + b",".join(entry.raw for entry in batch) + b"]}"
        else:
            body = batch[0].raw
        message_id = idempotency_key(self._name, batch)
        headers = {"Idempotency-Key": message_id, "webhook-id": message_id}
        if self._key is not None:
            timestamp = int(time.time())
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(self._key, message_id, timestamp, body)
        await post(
            self._http,
            self._url,
            content=body,
            headers=headers,
            label=self._label,
            redact=self._redact,
        )

    async def aclose(self) -> None:
        await self._http.aclose()


def _split(batch: Sequence[Entry], parts: int) -> list[Sequence[Entry]]:
    if parts <= 1 or len(batch) <= 1:
        return [batch]
    size = -(-len(batch) // parts)
    return [batch[i : i + size] for i in range(0, len(batch), size)]
