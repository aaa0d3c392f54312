"""Bounded resources: a whole request has a deadline (a trickling API or receiver is cut
off) and an API answer has a maximum size (read no further than the limit)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest
from pydantic import SecretStr
from runflow_tail.api.client import RunflowClient
from runflow_tail.api.settings import ApiSettings
from runflow_tail.errors import ApiMalformedResponse, ApiTransportError, SinkRetryableError
from runflow_tail.models import Entry
from runflow_tail.sinks.webhook import WebhookSinkConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.support.hostile import HostileApi, hostile_api, item
from tests.support.receivers import serving

pytestmark = pytest.mark.anyio


def client_for(api: HostileApi, **settings: object) -> RunflowClient:
    return RunflowClient(
        ApiSettings(base_url=api.url, api_key=SecretStr(api.api_key), **settings)  # type: ignore[arg-type]
    )


async def test_an_api_that_trickles_its_answer_is_cut_off_at_the_request_deadline() -> None:
    """One byte every 50 ms never trips the 5 s read timeout; the 1 s request deadline
    ends the request with an error that names it."""
    with hostile_api(HostileApi(items=[item(f"e{i}") for i in range(5)], trickle=0.05)) as api:
        client = client_for(api, timeout=5, request_deadline=1)
        started = time.monotonic()
        with pytest.raises(ApiTransportError, match=r"within 1s.*api.request_deadline"):
            await client.fetch_logs("any")
        await client.aclose()
    assert time.monotonic() - started < 3


async def test_an_answer_past_max_response_bytes_is_refused_naming_the_limit() -> None:
    """A 20 MiB page against a 1 MiB limit: a retryable error naming the limit and the
    setting, raised without reading the rest."""
    with hostile_api(HostileApi(items=[item("a")], extra_bytes=20 * 1024 * 1024)) as api:
        client = client_for(api, max_response_bytes="1MiB")
        with pytest.raises(ApiMalformedResponse, match=r"api.max_response_bytes \(1,048,576"):
            await client.fetch_logs("any")
        await client.aclose()


async def _trickle(request: Request) -> StreamingResponse:
    async def slowly() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield b" "
            await anyio.sleep(0.05)

    await request.body()
    return StreamingResponse(slowly(), status_code=200)


async def test_a_webhook_receiver_that_trickles_is_cut_off_at_the_request_deadline() -> None:
    """A receiver answering one byte every 50 ms: the webhook's 1 s request deadline makes
    it a retryable error, long before the answer would end."""
    app = Starlette(routes=[Route("/hook", _trickle, methods=["POST"])])
    with serving(app) as base:
        sink = WebhookSinkConfig(url=f"{base}/hook", timeout=5, request_deadline=1).build("h")
        started = time.monotonic()
        with pytest.raises(SinkRetryableError, match="no complete answer within 1s"):
            await sink.send([Entry(1, "s", "a", 0, item("a"))])
        await sink.aclose()
    assert time.monotonic() - started < 3
