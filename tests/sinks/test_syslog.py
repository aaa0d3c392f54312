"""The syslog sink against a real rsyslogd on loopback: TCP with octet counting, TLS, UDP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runflow_tail.errors import SinkPartiallyRejectedError, SinkRetryableError
from runflow_tail.models import Entry
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sinks.syslog import SyslogFormatter, SyslogSinkConfig

from tests.support.destinations import make_entries
from tests.support.harness import run_daemon_until, sandbox_ids, settings_for, wait_for
from tests.support.rsyslog import Rsyslog, running_rsyslog

pytestmark = pytest.mark.anyio

TRACEBACK = 'Traceback (most recent call last):\n  File "flow.py", line 3\nValueError: boom'


@pytest.fixture
def rsyslog(tmp_path: Path) -> Any:
    with running_rsyslog(tmp_path / "rsyslog") as daemon:
        yield daemon


def _config(rsyslog: Rsyslog, transport: str, **options: Any) -> SyslogSinkConfig:
    port = {"tcp": rsyslog.tcp, "tls": rsyslog.tls, "udp": rsyslog.udp}[transport]
    return SyslogSinkConfig(
        host="127.0.0.1" if transport != "tls" else "localhost",
        port=port,
        transport=transport,  # type: ignore[arg-type]
        ca_file=rsyslog.ca_file,
        hostname="tail-host",
        **options,
    )


async def _send_and_wait(rsyslog: Rsyslog, config: SyslogSinkConfig, entries: list[Entry]) -> None:
    sink = config.build("syslog")
    try:
        await sink.send(entries)
    finally:
        await sink.aclose()
    await wait_for(lambda: len(rsyslog.records()) >= len(entries), timeout=20)


@pytest.mark.sandbox_options(timestamp_style="z")
async def test_every_entry_arrives_once_over_tcp_with_its_pri_and_body(
    sandbox: SandboxHandle, tmp_path: Path, rsyslog: Rsyslog
) -> None:
    """Through the daemon, octet-counted over TCP: one message per entry, PRI from the level
    and the facility, the message as the body (multi-line ones whole), id in the SD."""
    sandbox.world.generate(20, step_ms=1, full_run=False)
    sandbox.world.append([{"level_code": "error", "message": TRACEBACK, "run_id": "r-9"}])
    expected = sandbox_ids(sandbox)
    sinks = {"syslog": _config(rsyslog, "tcp", facility="local3")}
    settings = settings_for(sandbox, tmp_path / "state", tmp_path / "x", sinks=sinks)
    await run_daemon_until(settings, lambda: len(rsyslog.records()) >= len(expected))
    records = rsyslog.records()
    ids = [record["sd"].split('id="')[1].split('"')[0] for record in records]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    by_id = {sandbox.world.store.by_id[i].raw: r for i, r in zip(ids, records, strict=True)}
    for raw, record in by_id.items():
        entry = json.loads(raw)
        severity = {"debug": 7, "info": 6, "warning": 4, "error": 3}[entry["level_code"]]
        assert (record["facility"], record["severity"]) == ("19", str(severity))
        assert record["pri"] == str(19 * 8 + severity)
        assert record["msg"] == entry["message"]
        assert (record["app_name"], record["hostname"], record["input"]) == (
            "runflow",
            "tail-host",
            "tcp",
        )
    assert TRACEBACK in [record["msg"] for record in records]


async def test_tls_carries_multi_line_messages_whole(rsyslog: Rsyslog) -> None:
    """Over TLS (RFC 5425) with the server's CA: multi-line messages arrive as one each."""
    entries = make_entries(3, message=TRACEBACK + " {seq}", level="fatal")
    await _send_and_wait(rsyslog, _config(rsyslog, "tls"), entries)
    records = rsyslog.records()
    assert [r["msg"] for r in records] == [f"{TRACEBACK} {n}" for n in (1, 2, 3)]
    assert {(r["severity"], r["input"]) for r in records} == {("2", "tls")}


async def test_udp_sends_one_datagram_per_entry(rsyslog: Rsyslog) -> None:
    """transport = "udp": each entry is its own datagram, same message format."""
    await _send_and_wait(rsyslog, _config(rsyslog, "udp", msgid="log"), make_entries(3))
    assert [(r["msg"], r["msgid"], r["input"]) for r in rsyslog.records()] == [
        (f"step {n} done", "log", "udp") for n in (1, 2, 3)
    ]


async def test_structured_data_is_escaped_and_the_whole_entry_can_be_the_body(
    rsyslog: Rsyslog,
) -> None:
    """Quotes, backslashes and ] in SD values are escaped (RFC 5424 6.3.3) and rsyslog
    parses them back; body = "entry" sends the entry's JSON as received."""
    entries = make_entries(1, run_id='r"1\\]x')
    await _send_and_wait(rsyslog, _config(rsyslog, "tcp", body="entry"), entries)
    record = rsyslog.records()[0]
    assert 'run_id="r\\"1\\\\\\]x"' in record["sd"]
    assert record["msg"] == entries[0].raw.decode()


async def test_an_entry_too_long_for_a_whole_entry_body_is_refused_not_cut(
    rsyslog: Rsyslog,
) -> None:
    """body = "entry": an entry longer than max_message_bytes is refused alone (cut JSON is
    no entry), the others of its batch arrive whole."""
    small, big = make_entries(1), make_entries(1, first_seq=2, message="x" * 1000)
    sink = _config(rsyslog, "tcp", body="entry", max_message_bytes=600).build("syslog")
    try:
        with pytest.raises(SinkPartiallyRejectedError) as refused:
            await sink.send([*small, *big])
    finally:
        await sink.aclose()
    assert [entry.id for entry in refused.value.rejected] == ["e-2"]
    assert refused.value.accepted == 1
    await wait_for(lambda: len(rsyslog.records()) >= 1, timeout=20)
    assert [record["msg"] for record in rsyslog.records()] == [small[0].raw.decode()]


async def test_a_restarted_receiver_is_reconnected_to(rsyslog: Rsyslog) -> None:
    """After the receiver restarts, the next batches reconnect: nothing is lost and the
    failed attempt (if the closed connection was not noticed first) asks for a retry."""
    sink = _config(rsyslog, "tcp").build("syslog")
    await sink.send(make_entries(2))
    await wait_for(lambda: len(rsyslog.records()) >= 2, timeout=20)
    rsyslog.stop()
    rsyslog.start()
    second = make_entries(2, first_seq=3)
    try:
        await sink.send(second)
    except SinkRetryableError:
        await sink.send(second)
    await sink.aclose()
    await wait_for(lambda: len(rsyslog.records()) >= 4, timeout=20)
    assert [r["msg"] for r in rsyslog.records()] == [f"step {n} done" for n in (1, 2, 3, 4)]


async def test_a_refused_connection_is_a_retry_with_a_clear_reason() -> None:
    """Nothing listening: the send asks for a retry and says the connection was refused."""
    from tests.support.rsyslog import free_port

    sink = SyslogSinkConfig(host="127.0.0.1", port=free_port()).build("syslog")
    with pytest.raises(SinkRetryableError, match="connection refused"):
        await sink.send(make_entries(1))
    await sink.aclose()


def test_header_fields_keep_their_limits_and_long_messages_are_cut_whole() -> None:
    """APP-NAME 48 and MSGID 32 characters; MSG cut to max_message_bytes on a character
    boundary; lf framing sends line breaks as \\n."""
    config = SyslogSinkConfig(
        host="h", app_name="a" * 60, msgid="m" * 40, max_message_bytes=480, framing="lf"
    )
    formatter = SyslogFormatter(config)
    entry = make_entries(1, message="é" * 400 + "\nend")[0]
    message = formatter.message(entry)
    fields = message.split(b" ")
    assert (fields[3], fields[5]) == (b"a" * 48, b"m" * 32)
    assert len(message) <= 480
    message.decode("utf-8")  # no broken character at the cut
    short = formatter.message(make_entries(1, message="x\ny")[0])
    assert short.endswith(b"x\\ny") and formatter.frame(short).count(b"\n") == 1
