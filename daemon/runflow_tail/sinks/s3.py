"""The S3 sink: an archive in S3-compatible object storage (AWS, MinIO, R2, GCS interop).

One object per batch and stream: JSON Lines, each entry exactly as the API sent it,
gzip by default. Batches are large by default (64 MiB or 100,000 entries, or 5 minutes):
object stores charge per request and list slowly. The key is a template of the stream,
the UTC date and hour of the object's first entry and its first and last journal seq.

Redelivery: the delivery loop re-sends an interrupted batch with the same boundaries
(``stable_batches``), so it gets the same key and the same bytes (gzip without a time
stamp) and simply overwrites the object: after a crash every entry is in exactly one
object. A multipart upload cut off by a crash never becomes an object (S3 makes it visible
only when completed); a bucket lifecycle rule (AbortIncompleteMultipartUpload) cleans the
parts.

The library is obstore (``pip install 'runflow-tail[s3]'``; measured against aiobotocore:
a third of the client CPU per MiB, a quarter of the install, 20x faster import). Its
synchronous calls run in a worker thread: its asyncio calls can abort the interpreter at
exit (tokio threads racing finalisation; a daemon must exit 0). Credentials: the
config, else the standard AWS environment (``AWS_ACCESS_KEY_ID``..., web identity /
IRSA, ECS, EC2 instance metadata). Every error is retried (a missing bucket or denied
access stalls only this sink, with a clear error, like a full disk for the file sink).
"""

from __future__ import annotations

import gzip
import importlib.util
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import anyio
from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator

from runflow_tail.errors import SinkRetryableError
from runflow_tail.models import ByteSize, Entry, PositiveDuration
from runflow_tail.sinks._http import redactor
from runflow_tail.sinks.base import BatchSettings, SinkConfigBase

DEFAULT_KEY = "runflow/{stream}/{date}/{hour}/{first_seq}-{last_seq}.jsonl"
DEFAULT_S3_BATCH = BatchSettings(max_events=100_000, max_bytes=64 * 1024 * 1024, max_wait=300.0)
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
SEQ_DIGITS = 16  # zero-padded, so keys sort in journal order
EXTRA_HINT = "pip install 'runflow-tail[s3]'"
KEY_FIELDS = ("stream", "date", "hour", "first_seq", "last_seq")


class S3SinkConfig(SinkConfigBase):
    type: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3, max_length=63)
    key: str = DEFAULT_KEY
    """Object key template: {stream}, {date} (YYYY-MM-DD), {hour} (HH), {first_seq},
    {last_seq}; {first_seq} is required (it makes each batch's key unique). ".gz" is
    added when compressed."""
    region: str | None = None
    """Default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    endpoint: HttpUrl | None = None
    """For S3-compatible stores: MinIO, R2 (https://<account>.r2.cloudflarestorage.com), GCS."""
    virtual_hosted_style: bool = False
    """bucket.host/key instead of host/bucket/key."""
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    compression: Literal["gzip", "none"] = "gzip"
    multipart_threshold: ByteSize = 16 * 1024 * 1024
    """Objects larger than this are uploaded in parts."""
    part_size: ByteSize = Field(8 * 1024 * 1024, ge=MIN_PART_SIZE)
    upload_concurrency: int = Field(8, ge=1, le=64)
    timeout: PositiveDuration = 120.0
    batch: BatchSettings | bool = DEFAULT_S3_BATCH

    stable_batches: ClassVar[bool] = True

    @field_validator("key")
    @classmethod
    def _key_is_unique_per_batch(cls, value: str) -> str:
        try:
            value.format(**dict.fromkeys(KEY_FIELDS, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{{'}, {'.join(KEY_FIELDS)}}} may be used ({exc})") from None
        if "{first_seq}" not in value:
            raise ValueError("must contain {first_seq}, or batches would overwrite each other")
        if value.startswith("/"):
            raise ValueError("a key does not start with '/'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> S3SinkConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        if importlib.util.find_spec("obstore") is None:
            raise ValueError(f"the s3 sink needs the obstore package: {EXTRA_HINT}")
        return self

    def needs_fields(self) -> bool:
        return False  # JSON Lines of the entries' bytes

    def build(self, name: str) -> S3Sink:
        return S3Sink(self, name=name)


class S3Sink:
    def __init__(self, config: S3SinkConfig, *, name: str) -> None:
        # The one lazy import: obstore is an optional extra (see tests/base/test_layers.py).
        import obstore
        from obstore.store import S3Store

        self._obstore = obstore
        self._config = config
        self._name = name
        options: dict[str, Any] = {"virtual_hosted_style_request": config.virtual_hosted_style}
        if config.region is not None:
            options["region"] = config.region
        if config.endpoint is not None:
            options["endpoint"] = str(config.endpoint).rstrip("/")
        if config.access_key_id is not None and config.secret_access_key is not None:
            options["access_key_id"] = config.access_key_id
            options["secret_access_key"] = config.secret_access_key.get_secret_value()
        if config.session_token is not None:
            options["session_token"] = config.session_token.get_secret_value()
        self._store = S3Store(
            config.bucket,
            client_options={
                "timeout": f"{config.timeout:g}s",
                "allow_http": config.endpoint is not None and config.endpoint.scheme == "http",
            },
            # The delivery loop owns retries and backoff (and says what failed).
            retry_config={"max_retries": 0},
            **options,
        )
        self._gzip = config.compression == "gzip"
        self._attributes = {"Content-Type": "application/x-ndjson"}
        if self._gzip:
            self._attributes["Content-Encoding"] = "gzip"
        secrets = (config.secret_access_key, config.session_token)
        self._redact = redactor(s.get_secret_value() for s in secrets if s is not None)

    def __repr__(self) -> str:
        return f"S3Sink(bucket={self._config.bucket!r})"

    def object_key(self, batch: Sequence[Entry]) -> str:
        first, last = batch[0], batch[-1]
        stamp = time.gmtime(first.timestamp_ns // 1_000_000_000)
        key = self._config.key.format(
            stream=first.stream,
            date=time.strftime("%Y-%m-%d", stamp),
            hour=time.strftime("%H", stamp),
            first_seq=f"{first.seq:0{SEQ_DIGITS}d}",
            last_seq=f"{last.seq:0{SEQ_DIGITS}d}",
        )
        return key + ".gz" if self._gzip and not key.endswith(".gz") else key

    def object_body(self, batch: Sequence[Entry]) -> bytes:
        lines = [entry.raw for entry in batch]
        lines.append(b"")
        body = b"\n".join(lines)
        # mtime=0: the same batch gives the same bytes, so a re-send is an exact overwrite.
        return gzip.compress(body, compresslevel=6, mtime=0) if self._gzip else body

    async def send(self, batch: Sequence[Entry]) -> None:
        by_stream: dict[str, list[Entry]] = {}
        for entry in batch:
            by_stream.setdefault(entry.stream, []).append(entry)
        for entries in by_stream.values():
            await anyio.to_thread.run_sync(self._put, entries)

    def _put(self, entries: Sequence[Entry]) -> None:
        key = self.object_key(entries)
        body = self.object_body(entries)
        config = self._config
        try:
            self._obstore.put(
                self._store,
                key,
                body,
                attributes=self._attributes,
                use_multipart=len(body) > config.multipart_threshold,
                chunk_size=config.part_size,
                max_concurrency=config.upload_concurrency,
            )
        except Exception as exc:  # obstore's errors carry no status to sort them by
            raise SinkRetryableError(self._describe(exc, key)) from exc

    def _describe(self, exc: Exception, key: str) -> str:
        errors = self._obstore.exceptions
        where = f"s3://{self._config.bucket}/{key}"
        if isinstance(exc, errors.PermissionDeniedError | errors.UnauthenticatedError):
            hint = "access denied: check the credentials and the bucket policy (s3:PutObject)"
        elif isinstance(exc, errors.NotFoundError) or "NoSuchBucket" in str(exc):
            hint = f"bucket {self._config.bucket!r} not found: create it or fix `bucket`"
        else:
            hint = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return self._redact(f"cannot write {where}: {hint}; will retry")

    async def aclose(self) -> None:
        return None
