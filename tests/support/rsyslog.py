"""A real rsyslogd (Debian's rsyslog and rsyslog-gnutls) in the foreground, in a temp dir, on
free loopback ports: plain TCP, TLS (a throw-away CA from trustme) and UDP; every message
it receives is written as one JSON object per line (line breaks in a message kept)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

CONFIG = """
global(
  workDirectory="{work}"
  maxMessageSize="64k"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp")
module(load="imudp")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="facility" name="syslogfacility" format="jsonf")
  property(outname="severity" name="syslogseverity" format="jsonf")
  property(outname="timestamp" name="timereported" format="jsonf" dateFormat="rfc3339")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="input" name="inputname" format="jsonf")
}}
ruleset(name="capture") {{ action(type="omfile" file="{out}" template="fields") }}
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="capture" name="tcp")
input(type="imtcp" port="{tls}" address="127.0.0.1" ruleset="capture" name="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="capture" name="udp")
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Rsyslog:
    work: Path
    ca_file: Path
    tcp: int
    tls: int
    udp: int
    binary: str = "rsyslogd"
    process: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> Path:
        return self.work / "received.jsonl"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "-n",
                "-f",
                str(self.work / "rsyslog.conf"),
                "-i",
                str(self.work / "pid"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.work / "rsyslogd.log").open("ab"),
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        self._wait_listening(self.tcp, None)
        self._wait_listening(self.tls, context)

    def _wait_listening(self, port: int, context: ssl.SSLContext | None) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                    if context is not None:
                        # A full handshake: a bare connect makes gtls log an error.
                        with contextlib.suppress(ssl.SSLError, OSError):
                            context.wrap_socket(connection, server_hostname="localhost").unwrap()
                return
            except OSError:
                assert self.process is not None and self.process.poll() is None, self.log()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.work / "rsyslogd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        found = []
        for line in self.output.read_text().splitlines():
            record = json.loads(line)
            record["msg"] = record["msg"].removeprefix("\ufeff")
            found.append(record)
        return found


@contextlib.contextmanager
def running_rsyslog(work: Path) -> Iterator[Rsyslog]:
    # /usr/sbin may be missing from a non-root PATH.
    binary = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if binary is None:
        message = "rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    work.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    server = authority.issue_cert("localhost", "127.0.0.1")
    ca_file, cert, key = work / "ca.pem", work / "cert.pem", work / "key.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    daemon = Rsyslog(
        work, ca_file, free_port(), free_port(), free_port(socket.SOCK_DGRAM), binary=binary
    )
    (work / "rsyslog.conf").write_text(
        CONFIG.format(
            work=work,
            ca=ca_file,
            cert=cert,
            key=key,
            out=daemon.output,
            tcp=daemon.tcp,
            tls=daemon.tls,
            udp=daemon.udp,
        )
    )
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
