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
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import anyio
import httpx
from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator

from runflow_tail.errors import SinkRejectedError, SinkRetryableError
from runflow_tail.models import Duration, Entry, PositiveDuration
from runflow_tail.observability import get_logger
from runflow_tail.sinks._http import http_client, post
from runflow_tail.sinks.base import BatchSettings, SinkConfigBase

DEFAULT_WEBHOOK_BATCH = BatchSettings(max_events=100, max_bytes=1024 * 1024, max_wait=1.0)
DEFAULT_WEBHOOK_RETRY = 3600.0
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret

log = get_logger(__name__)


class WebhookSinkConfig(SinkConfigBase):
    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    batch: BatchSettings | bool = DEFAULT_WEBHOOK_BATCH
    """A table of batch limits, or `false` to POST each entry on its own (unwrapped)."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers; values are treated as secrets (masked everywhere)."""
    bearer_token: SecretStr | None = None
    basic_username: str | None = None
    basic_password: SecretStr | None = None
    secret: SecretStr | None = None
    """Standard Webhooks signing secret, `whsec_<base64>` (or bare base64)."""
    timeout: PositiveDuration = 10.0
    verify: bool = True
    """TLS certificate verification; turn off only for testing (a warning is logged)."""
    ca_file: Path | None = None
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

    @model_validator(mode="after")
    def _auth_is_consistent(self) -> WebhookSinkConfig:
        if self.bearer_token is not None and self.basic_username is not None:
            raise ValueError("use either bearer_token or basic_username/basic_password, not both")
        if (self.basic_username is None) != (self.basic_password is None):
            raise ValueError("basic auth needs both basic_username and basic_password")
        return self

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
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        if config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {config.bearer_token.get_secret_value()}"
        auth = None
        if config.basic_username is not None and config.basic_password is not None:
            auth = httpx.BasicAuth(config.basic_username, config.basic_password.get_secret_value())
        verify: ssl.SSLContext | bool = config.verify
        if config.verify and config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_file))
        if not config.verify:
            log.warning(
                "sink.tls_verification_disabled",
                sink=name,
                reason="verify = false: certificates are not checked; use ca_file instead",
            )
        self._http = http_client(timeout=config.timeout, headers=headers, auth=auth, verify=verify)
        # Named without its query or credentials, which may hold tokens.
        self._label = str(httpx.URL(self._url).copy_with(query=None, userinfo=b""))

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
        await post(self._http, self._url, content=body, headers=headers, label=self._label)

    async def aclose(self) -> None:
        await self._http.aclose()


def _split(batch: Sequence[Entry], parts: int) -> list[Sequence[Entry]]:
    if parts <= 1 or len(batch) <= 1:
        return [batch]
    size = -(-len(batch) // parts)
    return [batch[i : i + size] for i in range(0, len(batch), size)]
