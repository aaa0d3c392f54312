"""moto's S3 server (``moto[server]``) on a free loopback port, and a throttling TCP proxy in
front of it, so a test can catch an upload in the middle."""

from __future__ import annotations

import contextlib
import gzip
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx

from tests.support.rsyslog import free_port

BUCKET = "runflow-archive"
CREDENTIALS = {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3-SECRET-wJalrXUtnFEMI"}


@dataclass
class Moto:
    url: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["access_key_id"],
            aws_secret_access_key=CREDENTIALS["secret_access_key"],
        )

    def objects(self, bucket: str = BUCKET) -> dict[str, bytes]:
        """Every object's key and content (gunzipped when stored gzipped)."""
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                answer = client.get_object(Bucket=bucket, Key=item["Key"])
                body = answer["Body"].read()
                if answer.get("ContentEncoding") == "gzip":
                    body = gzip.decompress(body)
                found[item["Key"]] = body
        return found


@contextlib.contextmanager
def running_moto() -> Iterator[Moto]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.put(f"{url}/{BUCKET}", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                assert process.poll() is None, "moto_server exited"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield Moto(url, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class SlowProxy:
    """Forwards loopback TCP to ``target``, client-to-server at ``rate`` bytes/s while set;
    ``upload_started`` is set once a PUT (or multipart POST) request begins."""

    target: int
    rate: float | None = None
    port: int = 0
    upload_started: threading.Event = field(default_factory=threading.Event)
    _server: socket.socket | None = None

    def start(self) -> SlowProxy:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upload: bool) -> None:
        try:
            while chunk := source.recv(16384):
                if upload and chunk[:4] in (b"PUT ", b"POST"):
                    self.upload_started.set()
                if upload and self.rate:
                    time.sleep(len(chunk) / self.rate)  # a slow link, not a synchronisation
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
