"""The syslog sink: RFC 5424 messages over TCP (RFC 6587 octet counting), TLS (RFC 5425) or UDP.

Each entry is one message: PRI from its ``level_code`` and the configured facility, its
own timestamp, APP-NAME and MSGID within their limits (48 and 32 printable ASCII
characters), structured data ``[runflow@32473 id=".." run_id=".." stream=".."]`` with
values escaped, and the message (or the whole entry, ``body = "entry"``) as UTF-8 after
a BOM. Octet counting frames a message by its length, so line breaks inside it survive.

One connection is kept open; a failed write closes it and the delivery loop retries
with its backoff, which reconnects. Before each batch a connection the receiver has
closed is noticed and replaced.

Redelivery: syslog has no acknowledgement and no idempotency. A batch in flight at a
crash may be sent again, and a batch written just before the receiver dies can be lost
in its socket buffers (TCP acknowledges bytes, not messages); UDP may drop any datagram.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream
from pydantic import Field, field_validator

from runflow_tail.errors import SinkPartiallyRejectedError, SinkRetryableError
from runflow_tail.models import Entry, PositiveDuration
from runflow_tail.sinks.base import BatchSettings, SinkConfigBase

FACILITIES = {
    **{"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6},
    **{"news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11},
    **{f"local{n}": 16 + n for n in range(8)},
}
SEVERITIES = {
    **{"emergency": 0, "alert": 1, "critical": 2, "fatal": 2, "error": 3},
    **{"warning": 4, "warn": 4, "notice": 5, "info": 6, "debug": 7, "trace": 7},
}
DEFAULT_SEVERITY = 6  # info, for a level_code we do not know
DEFAULT_PORTS = {"tcp": 514, "udp": 514, "tls": 6514}
BOM = b"\xef\xbb\xbf"
UDP_MAX = 65_507  # the largest IPv4 UDP payload
DEFAULT_SYSLOG_BATCH = BatchSettings(max_events=1000, max_bytes=1024 * 1024, max_wait=0.0)
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")  # PRINTUSASCII, RFC 5424 section 6
_NOT_SD_NAME = re.compile(r'[^\x21-\x7e]|[= \]"]')


class SyslogSinkConfig(SinkConfigBase):
    type: Literal["syslog"] = "syslog"
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    """Default: 514 (tcp, udp), 6514 (tls)."""
    transport: Literal["tcp", "tls", "udp"] = "tcp"
    framing: Literal["octet-counting", "lf"] = "octet-counting"
    """TCP/TLS framing: octet counting (RFC 6587 3.4.1, keeps line breaks) or one message
    per line (line breaks inside a message are sent as the two characters \\n)."""
    facility: str | int = "user"
    """A name (user, daemon, local0..local7, ...) or number 0..23."""
    app_name: str = "runflow"
    msgid: str = "-"
    hostname: str | None = None
    """HOSTNAME of each message (default: this machine's name)."""
    body: Literal["message", "entry"] = "message"
    """MSG: the entry's message, or the whole entry as the API sent it (JSON)."""
    sd_id: str = "runflow@32473"
    """The structured-data element's id (32473 is the RFC 5612 example enterprise number;
    use your own PEN if you have one)."""
    bom: bool = True
    """Start MSG with the UTF-8 BOM, as RFC 5424 section 6.4 asks."""
    max_message_bytes: int = Field(8192, ge=480, le=UDP_MAX)
    """Longer messages are cut (on a character boundary); RFC 5425 receivers accept 8192.
    With body = "entry" an entry that does not fit is a dead letter instead (cut JSON is
    no entry)."""
    ca_file: Path | None = None
    """TLS: trust this CA instead of the system's."""
    verify: bool = True
    """TLS: check the server's certificate and name."""
    timeout: PositiveDuration = 10.0
    batch: BatchSettings | bool = DEFAULT_SYSLOG_BATCH

    @field_validator("facility")
    @classmethod
    def _facility_known(cls, value: str | int) -> str | int:
        facility_code(value)
        return value

    @field_validator("app_name", "msgid", "sd_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value or _NOT_PRINTABLE.search(value):
            raise ValueError("expected printable ASCII without spaces")
        return value

    def build(self, name: str) -> SyslogSink:
        return SyslogSink(self, name=name)


def facility_code(value: str | int) -> int:
    code = FACILITIES.get(value.lower()) if isinstance(value, str) else value
    if code is None or not 0 <= code <= 23:
        raise ValueError(f"expected a facility name ({', '.join(FACILITIES)}) or 0..23")
    return code


def _header_field(value: str, limit: int) -> str:
    return _NOT_PRINTABLE.sub("_", value)[:limit] or "-"


def _sd_value(value: str) -> str:
    # RFC 5424 section 6.3.3: '"', '\' and ']' are escaped with a backslash.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _cut(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, never ending inside a UTF-8 character."""
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()


class SyslogFormatter:
    """Entries as RFC 5424 messages."""

    def __init__(self, config: SyslogSinkConfig) -> None:
        self._config = config
        self._facility = facility_code(config.facility)
        self._host = _header_field(config.hostname or socket.gethostname(), 255)
        self._app = _header_field(config.app_name, 48)
        self._msgid = _header_field(config.msgid, 32)
        self._sd_id = _NOT_SD_NAME.sub("_", config.sd_id)[:32]
        self._limit = config.max_message_bytes
        self._escape_lf = config.framing == "lf" and config.transport != "udp"

    def message(self, entry: Entry) -> bytes:
        data: dict[str, Any] = entry.data()
        level = str(data.get("level_code", "")).lower()
        severity = SEVERITIES.get(level, DEFAULT_SEVERITY)
        seconds, nanos = divmod(entry.timestamp_ns, 1_000_000_000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"
        params = {"id": entry.id, "run_id": data.get("run_id"), "stream": entry.stream}
        sd = "".join(f' {key}="{_sd_value(str(value))}"' for key, value in params.items() if value)
        header = (
            f"<{self._facility * 8 + severity}>1 {stamp} {self._host} {self._app} - "
            f"{self._msgid} [{self._sd_id}{sd}] "
        ).encode()
        if self._config.body == "entry":
            text = entry.raw
        else:
            text = str(data.get("message", "")).encode("utf-8", "replace")
        if self._escape_lf:
            text = text.replace(b"\r\n", b"\\n").replace(b"\n", b"\\n")
        prefix = header + (BOM if self._config.bom else b"")
        return prefix + _cut(text, max(0, self._limit - len(prefix)))

    def was_cut(self, entry: Entry, message: bytes) -> bool:
        """Whether ``message`` had to leave part of ``entry`` out (``body = "entry"``)."""
        return not message.endswith(entry.raw)

    def frame(self, message: bytes) -> bytes:
        if self._config.framing == "lf":
            return message + b"\n"
        return b"%d %s" % (len(message), message)  # MSG-LEN counts octets


class SyslogSink:
    def __init__(self, config: SyslogSinkConfig, *, name: str) -> None:
        self._config = config
        self._name = name
        self._format = SyslogFormatter(config)
        self._port = config.port or DEFAULT_PORTS[config.transport]
        self._where = f"syslog {config.transport}://{config.host}:{self._port}"
        self._stream: anyio.abc.ByteStream | None = None
        self._udp: anyio.abc.ConnectedUDPSocket | None = None
        self._tls: ssl.SSLContext | None = None
        if config.transport == "tls":
            self._tls = ssl.create_default_context(
                cafile=str(config.ca_file) if config.ca_file else None
            )
            if not config.verify:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    def __repr__(self) -> str:
        return f"SyslogSink({self._where!r})"

    async def send(self, batch: Sequence[Entry]) -> None:
        messages: list[bytes] = []
        too_long: list[Entry] = []
        for entry in batch:
            message = self._format.message(entry)
            # A cut message is fine for a human's text, not for an entry's JSON, which
            # must arrive whole or not at all: that one becomes a dead letter.
            if self._config.body == "entry" and self._format.was_cut(entry, message):
                too_long.append(entry)
            else:
                messages.append(message)
        try:
            with anyio.fail_after(self._config.timeout):
                if self._config.transport == "udp":
                    await self._send_udp(messages)
                else:
                    await self._send_stream(messages)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError) as exc:
            await self.aclose()
            raise SinkRetryableError(f"{self._where}: {_describe(exc)}") from exc
        except TimeoutError as exc:
            await self.aclose()
            raise SinkRetryableError(
                f"{self._where}: no progress within {self._config.timeout:g}s"
            ) from exc
        if too_long:
            raise SinkPartiallyRejectedError(
                f"{len(too_long)} entr{'y is' if len(too_long) == 1 else 'ies are'} longer "
                f"than max_message_bytes ({self._config.max_message_bytes}) with "
                'body = "entry"; raise max_message_bytes (and the receiver\'s limit) to '
                "send them",
                rejected=too_long,
                accepted=len(messages),
            )

    async def _send_stream(self, messages: list[bytes]) -> None:
        if self._stream is not None and _peer_closed(self._stream):
            await self.aclose()
        if self._stream is None:
            if self._tls is None:
                self._stream = await anyio.connect_tcp(self._config.host, self._port)
            else:
                self._stream = await anyio.connect_tcp(
                    self._config.host,
                    self._port,
                    ssl_context=self._tls,
                    # rsyslog and others close without answering close_notify.
                    tls_standard_compatible=False,
                )
        await self._stream.send(b"".join(self._format.frame(m) for m in messages))

    async def _send_udp(self, messages: list[bytes]) -> None:
        if self._udp is None:
            self._udp = await anyio.create_connected_udp_socket(self._config.host, self._port)
        for message in messages:
            await self._udp.send(message)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        udp, self._udp = self._udp, None
        for resource in (stream, udp):
            if resource is not None:
                with anyio.move_on_after(1, shield=True):
                    await resource.aclose()


def _peer_closed(stream: anyio.abc.ByteStream) -> bool:
    """Whether the receiver closed the connection (it never sends us anything else)."""
    transport: Any = stream.transport_stream if isinstance(stream, TLSStream) else stream
    raw: Any = transport.extra(anyio.abc.SocketAttribute.raw_socket, None)  # noqa: S610 - anyio
    if raw is None:
        return False
    # A duplicate of the descriptor: asyncio's socket wrapper does not offer recv.
    with socket.socket(fileno=os.dup(raw.fileno())) as probe:
        try:
            return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (anyio reports failed connection attempts as a group)."""
    found = [exc]
    for inner in (exc.__cause__, exc.__context__, *getattr(exc, "exceptions", ())):
        if isinstance(inner, BaseException) and len(found) < 20:
            found += _causes(inner)
    return found


def _describe(exc: BaseException) -> str:
    if any(getattr(cause, "errno", None) == errno.ECONNREFUSED for cause in _causes(exc)):
        return "connection refused (is the receiver listening?); will retry"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); set ca_file"
    if isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError):
        return "the connection broke; reconnecting"
    return f"{type(exc).__name__}: {exc}; will retry"
