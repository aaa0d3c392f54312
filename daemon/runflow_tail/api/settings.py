"""How to reach the Runflow API: where, with which key, how fast and how patiently."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from runflow_tail.models import ByteSize, FrozenModel, PositiveDuration

DEFAULT_BASE_URL = "https://api.runflow.io"
DEFAULT_REQUEST_DEADLINE = 120.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class ApiSettings(FrozenModel):
    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    organization_id: str | None = None
    timeout: PositiveDuration = 30.0
    """Longest wait for any one step of a request (connecting, each read)."""
    request_deadline: PositiveDuration = DEFAULT_REQUEST_DEADLINE
    """Longest a whole request may take, answer included (a trickling API is cut off)."""
    max_response_bytes: ByteSize = DEFAULT_MAX_RESPONSE_BYTES
    """Largest answer read (a page of 500 entries with their runs is a few MB)."""
    max_requests_per_second: float = Field(5.0, gt=0, le=1000)
    backoff_initial: PositiveDuration = 1.0
    backoff_max: PositiveDuration = 32.0
    config_error_retry_interval: PositiveDuration = 300.0
    """How often to retry after the API said the config is wrong (401/403/404/400)."""

    @property
    def shown_url(self) -> str:
        """The base URL for messages: where requests go, without any user:password@."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("expected an http(s) URL such as https://api.runflow.io")
        return value.rstrip("/")

    @field_validator("backoff_max")
    @classmethod
    def _backoff_order(cls, value: float, info: ValidationInfo) -> float:
        # A field validator (not a model one) so the error points at api.backoff_max.
        initial = info.data.get("backoff_initial")
        if isinstance(initial, float) and value < initial:
            raise ValueError(f"expected at least backoff_initial ({initial:g}s)")
        return value
