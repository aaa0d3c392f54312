"""Secrets never leave the process: receivers that echo them, httpx's own debug lines,
a cut that falls inside a token, and keys with a trailing line break."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from pydantic import SecretStr
from runflow_tail.alerts.sample import sample_alert
from runflow_tail.cli.check_config import check_online
from runflow_tail.config.load import load_settings
from runflow_tail.config.secrets import secret_values
from runflow_tail.errors import ConfigError, SinkRejectedError
from runflow_tail.journal import JournalStore
from runflow_tail.journal.store import JOURNAL_NAME
from runflow_tail.models import Entry
from runflow_tail.observability import configure_logging, register_secrets
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.slack import SlackSinkConfig
from runflow_tail.sinks.webhook import WebhookSinkConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.harness import settings_for, wait_for
from tests.support.hostile import hostile_api, item
from tests.support.receivers import serving

pytestmark = pytest.mark.anyio

BEARER = "tok_bearer_4f9a8b7c6d5e4f3a2b1c"
HEADER_SECRET = "hdr_secret_1a2b3c4d5e6f7a8b"
QUERY_TOKEN = "qry_token_9z8y7x6w5v4u"
SLACK_TOKEN = "XQ2mT7pL9vK3sR8wZ4nB6yHd"


async def _echo(request: Request) -> Response:
    """A receiver that answers with what it was sent: its URL and headers, the first
    secret-bearing one starting just before character 200 of the answer."""
    if request.url.path != "/hook":
        # A chat webhook: the URL echoed so that its token starts 13 characters before
        # the cut at 200.
        url = str(request.url)
        padding = "x" * (187 - url.index(request.path_params["token"]))
        return Response(padding + url, status_code=400)
    echoed = json.dumps({"url": str(request.url), "headers": dict(request.headers)})
    auth = request.headers.get("authorization", "")
    return Response(f"{'x' * 190}{auth} {echoed}", status_code=500)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging is process-wide: give the next tests structlog's defaults back."""
    hook = sys.excepthook
    yield
    structlog.reset_defaults()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.excepthook = hook


def _captured_logging() -> io.StringIO:
    output = io.StringIO()
    configure_logging("debug", "json", stream=output)
    return output


def _leaks(text: str, *secrets: str, piece: int = 10) -> list[str]:
    """Every piece of ``piece`` characters of a secret that ``text`` holds."""
    return [
        secret[i : i + piece]
        for secret in secrets
        for i in range(len(secret) - piece + 1)
        if secret[i : i + piece] in text
    ]


async def test_a_webhook_receiver_echoing_headers_puts_no_secret_anywhere(
    tmp_path: Path,
) -> None:
    """A receiver that echoes the bearer token, a secret header and the URL's query token:
    none of them in the log, in /readyz's problems, or in the dead letter's reason."""
    logged = _captured_logging()
    app = Starlette(routes=[Route("/hook", _echo, methods=["POST"])])
    with serving(app) as base, hostile_api() as api:
        api.items = [item("a"), item("b")]
        hook = WebhookSinkConfig(
            url=f"{base}/hook?token={QUERY_TOKEN}",
            bearer_token=SecretStr(BEARER),
            headers={"X-Api-Secret": SecretStr(HEADER_SECRET)},
            max_retry_duration=1.0,
            backoff_initial=0.05,
            backoff_max=0.1,
        )
        settings = settings_for(api, tmp_path / "state", tmp_path / "x", strategy="cursor")
        settings = settings.model_copy(
            update={
                "sinks": {"hook": hook},
                "server": settings.server.model_copy(update={"ready_sink_failing_after": 0.1}),
            }
        )
        daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
        problems: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            try:
                await wait_for(lambda: any("hook" in p for p in daemon.readiness_problems()))
                problems = daemon.readiness_problems()
                await wait_for(lambda: bool(daemon.deliveries[0].health.dead_letters))
            finally:
                daemon.request_stop("test done")
    store = JournalStore(tmp_path / "state" / JOURNAL_NAME)
    reasons = [letter.reason for letter in store.dead_letters("hook")]
    store.close()
    assert "HTTP 500" in reasons[0] and "HTTP 500" in " ".join(problems)
    for text in (logged.getvalue(), " ".join(problems), " ".join(reasons)):
        assert _leaks(text, BEARER, HEADER_SECRET, QUERY_TOKEN) == []


async def test_httpx_debug_lines_and_a_cut_echo_show_no_part_of_a_chat_webhook_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """log.level = debug: httpx's request line names the Slack URL without its token, and
    an answer echoing the URL across the point where errors are cut shows none of it."""
    logged = _captured_logging()
    app = Starlette(routes=[Route("/services/T0/B0/{token}", _echo, methods=["POST"])])
    with serving(app) as base:
        url = f"{base}/services/T0/B0/{SLACK_TOKEN}"
        config = SlackSinkConfig(webhook_url=SecretStr(url))
        register_secrets(secret_values(settings_for_slack(config)))
        sink = config.build("slack")
        entry_id, raw, _ = sample_alert("slack", time.time_ns())
        entry = Entry(1, "alerts.slack", entry_id, 0, raw)
        with pytest.raises(SinkRejectedError) as raised:
            await sink.send([entry])
        await sink.aclose()
    # pytest's handler took the root logger first; configure_logging filters every handler.
    shown = logged.getvalue() + caplog.text
    assert "HTTP Request: POST" in shown
    assert _leaks(shown + str(raised.value), SLACK_TOKEN, piece=6) == []


def settings_for_slack(config: SlackSinkConfig) -> Any:
    return load_settings(
        config_file=None,
        environ={"RUNFLOW_API_KEY": "rf_0123456789abcdef"},
        overrides={
            "sinks": {
                "slack": config.model_dump(mode="json")
                | {"webhook_url": config.webhook_url.get_secret_value()}
            }
        },
    )


async def test_a_key_with_a_trailing_line_break_works_and_never_shows(tmp_path: Path) -> None:
    """RUNFLOW_API_KEY and a bearer token ending in \\r\\n are used without it: the
    online check passes (no 'Illegal header value' quoting the key)."""
    with hostile_api() as api:
        api.items = [item("a")]
        settings = load_settings(
            config_file=None,
            environ={
                "RUNFLOW_API_KEY": api.api_key + "\r\n",
                "RUNFLOW_TAIL_API__BASE_URL": api.url,
                "RUNFLOW_TAIL_SINKS__HOOK__TYPE": "webhook",
                "RUNFLOW_TAIL_SINKS__HOOK__URL": "http://127.0.0.1:9/hook",
                "RUNFLOW_TAIL_SINKS__HOOK__BEARER_TOKEN": BEARER + "\n",
            },
        )
        problems, _ = await check_online(settings)
    assert problems == []
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == api.api_key
    assert settings.sinks["hook"].bearer_token.get_secret_value() == BEARER  # type: ignore[union-attr]


def test_a_line_break_inside_a_secret_is_refused_without_showing_it() -> None:
    """A bearer token with a line break inside: check-config names the key and the
    problem, and shows no part of the token."""
    with pytest.raises(ConfigError) as raised:
        load_settings(
            config_file=None,
            environ={
                "RUNFLOW_API_KEY": "rf_0123456789abcdef",
                "RUNFLOW_TAIL_SINKS__HOOK__TYPE": "webhook",
                "RUNFLOW_TAIL_SINKS__HOOK__URL": "http://127.0.0.1:9/hook",
                "RUNFLOW_TAIL_SINKS__HOOK__BEARER_TOKEN": "tok_first\r\nX-Evil: 1",
            },
        )
    text = str(raised.value)
    assert "sinks.hook.bearer_token" in text and "line break" in text
    assert "tok_first" not in text and "X-Evil" not in text
