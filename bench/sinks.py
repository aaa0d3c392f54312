"""(f) Each sink's throughput beside the file sink's, on the same journal.

The daemon first drains a backlog into its journal (with a file sink); then, for each sink
type, ``runflow-tail replay --sink NAME --from <start>`` (a real subprocess) reads the same
entries back from the journal and sends them to a loopback destination in the sink's own
batch size. Wall time and the replay process's CPU (user + system, from ``wait4``) give
entries/s and CPU per entry; the ratio is against the file sink in the same run.

Destinations: a threaded HTTP server that accepts and discards (it answers what each
protocol expects: OTLP an empty 200, Elasticsearch ``{"errors": false}``, Loki 204), a TCP
server that discards (syslog), and moto's S3 server (which costs far more CPU than the
client, so the S3 number is a floor).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.procs import API_KEY, DEFAULT_FIELDS, ROOT, Sandbox, daemon_config
from bench.sections import Plan, _generate, _stream, product_drain, workdir
from tests.support.s3 import BUCKET, running_moto

Log = Callable[[str], None]
ANSWERS = {
    "/v1/logs": (200, "application/x-protobuf", b""),
    "/_bulk": (200, "application/json", b'{"errors":false}'),
    "/loki/api/v1/push": (204, "text/plain", b""),
    "/hook": (200, "application/json", b"{}"),
}


@contextmanager
def http_destination() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: with Nagle on, each answer waits for a delayed
        # ACK (40 ms), which would measure the kernel, not the sink.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, kind, body = ANSWERS[self.path.split("?", 1)[0]]
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def tcp_destination() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def drain(connection: socket.socket) -> None:
        with connection:
            while connection.recv(1 << 20):
                pass

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=drain, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def sink_tables(http: str, tcp: int, s3: str, work: Path) -> dict[str, str]:
    return {
        "file": f'type = "file"\npath = "{work / "replayed.jsonl"}"\nfsync = "never"',
        "webhook": f'type = "webhook"\nurl = "{http}/hook"',
        "otlp": f'type = "otlp"\nendpoint = "{http}"',
        "elasticsearch": f'type = "elasticsearch"\nurl = "{http}"',
        "loki": f'type = "loki"\nurl = "{http}"',
        "syslog": f'type = "syslog"\nhost = "127.0.0.1"\nport = {tcp}',
        "s3": (
            f'type = "s3"\nbucket = "{BUCKET}"\nendpoint = "{s3}"\nregion = "us-east-1"\n'
            'access_key_id = "bench"\nsecret_access_key = "bench-secret"'
        ),
    }


def replay(config: Path, sink: str, start: str = "2000-01-01T00:00:00Z") -> dict[str, Any]:
    env = {**os.environ, "RUNFLOW_API_KEY": API_KEY}
    command = [sys.executable, "-m", "runflow_tail", "replay", "--config", str(config)]
    started = time.monotonic()
    process = subprocess.Popen(
        [*command, "--sink", sink, "--from", start],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    assert process.stdout is not None and process.stderr is not None
    said = process.stdout.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"replay to {sink} failed: {process.stderr.read().decode()[-800:]}")
    return {
        "entries": int(said.split()[1]),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
    }


def sinks(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    log(f"sinks: journaling {plan.sink_entries:,} entries, then replaying them to each sink")
    _generate(sandbox, plan.sink_entries)
    results: dict[str, Any] = {}
    with workdir("sinks") as work:
        product_drain(sandbox, plan.sink_entries, DEFAULT_FIELDS, work)
        with http_destination() as http, tcp_destination() as tcp, running_moto() as moto:
            tables = sink_tables(http, tcp, moto.url, work)
            sinks_toml = "\n".join(f"[sinks.{name}]\n{table}\n" for name, table in tables.items())
            config = work / "replay.toml"
            config.write_text(
                daemon_config(
                    sandbox.url,
                    work / "state",
                    stream=_stream(DEFAULT_FIELDS),
                    sink=sinks_toml,
                )
            )
            # The fixed cost of a replay process (interpreter, config, journal), measured
            # with a range that holds nothing, is taken off every sink's time and CPU.
            fixed = replay(config, "file", start="2100-01-01T00:00:00Z")
            for name in tables:
                log(f"  {name}")
                results[name] = replay(config, name)
    for result in results.values():
        seconds = max(result["seconds"] - fixed["seconds"], 1e-3)
        cpu = max(result["cpu_seconds"] - fixed["cpu_seconds"], 0.0)
        result["entries_per_s"] = round(result["entries"] / seconds, 1)
        result["cpu_us_per_entry"] = round(cpu / result["entries"] * 1e6, 1)
    for result in results.values():
        result["vs_file"] = round(result["entries_per_s"] / results["file"]["entries_per_s"], 3)
    return {"entries": plan.sink_entries, "fixed_cost": fixed, "sinks": results}
