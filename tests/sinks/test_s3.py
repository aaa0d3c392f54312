"""The S3 sink against moto's S3 server on loopback (a real S3 protocol endpoint)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runflow_tail.errors import SinkRetryableError
from runflow_tail.models import Entry
from runflow_tail.sinks.s3 import S3SinkConfig

from tests.support.destinations import make_entries
from tests.support.harness import run_cli
from tests.support.s3 import BUCKET, CREDENTIALS, Moto, running_moto

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with running_moto() as server:
        yield server


@pytest.fixture
def bucket(moto: Moto, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test, so that tests sharing one server never see each other."""
    name = "t-" + request.node.name.replace("_", "-")[:50].lower().rstrip("-")
    moto.client().create_bucket(Bucket=name)
    return name


def _config(moto: Moto, bucket: str, **options: Any) -> S3SinkConfig:
    return S3SinkConfig(
        bucket=bucket, endpoint=moto.url, region="us-east-1", **CREDENTIALS, **options
    )


async def _send(config: S3SinkConfig, entries: list[Entry]) -> None:
    sink = config.build("archive")
    try:
        await sink.send(entries)
    finally:
        await sink.aclose()


async def test_a_batch_is_one_gzipped_json_lines_object_keyed_by_its_seqs(
    moto: Moto, bucket: str
) -> None:
    """One object: key from stream, date, hour and first/last seq; gzip; each line the
    entry exactly as received."""
    entries = make_entries(5, first_seq=7)
    await _send(_config(moto, bucket), entries)
    objects = moto.objects(bucket)
    key = "runflow/s/2026-11-18/11/0000000000000007-0000000000000011.jsonl.gz"
    assert list(objects) == [key]
    assert objects[key] == b"".join(entry.raw + b"\n" for entry in entries)
    head = moto.client().head_object(Bucket=bucket, Key=key)
    assert (head["ContentEncoding"], head["ContentType"]) == ("gzip", "application/x-ndjson")


async def test_each_stream_of_a_batch_gets_its_own_object(moto: Moto, bucket: str) -> None:
    """A batch mixing two streams writes two objects, each with its own entries."""
    entries = make_entries(2, stream="a") + make_entries(2, first_seq=3, stream="b")
    await _send(_config(moto, bucket, key="{stream}/{first_seq}", compression="none"), entries)
    assert moto.objects(bucket) == {
        "a/0000000000000001": entries[0].raw + b"\n" + entries[1].raw + b"\n",
        "b/0000000000000003": entries[2].raw + b"\n" + entries[3].raw + b"\n",
    }


async def test_a_resent_batch_overwrites_the_same_object_with_the_same_bytes(
    moto: Moto, bucket: str
) -> None:
    """Sending a batch again (after a crash) rewrites the same key with identical bytes."""
    config = _config(moto, bucket)
    entries = make_entries(3)
    await _send(config, entries)
    client = moto.client()
    (first,) = client.list_objects_v2(Bucket=bucket)["Contents"]
    await _send(config, entries)
    (second,) = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert (first["Key"], first["ETag"]) == (second["Key"], second["ETag"])


async def test_a_large_batch_is_uploaded_in_parts(moto: Moto, bucket: str) -> None:
    """Above multipart_threshold the object is a multipart upload (its ETag counts parts)."""
    entries = make_entries(1200, message="{seq}" + "x" * 5000)
    config = _config(moto, bucket, compression="none", multipart_threshold="5MiB", part_size="5MiB")
    await _send(config, entries)
    (item,) = moto.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert item["ETag"].strip('"').endswith("-2")
    lines = moto.objects(bucket)[item["Key"]].splitlines()
    assert [json.loads(line)["id"] for line in lines] == [entry.id for entry in entries]


async def test_a_missing_bucket_is_a_retry_that_names_it_without_the_secret(moto: Moto) -> None:
    """Writing to a bucket that does not exist asks for a retry and says which bucket."""
    with pytest.raises(SinkRetryableError) as caught:
        await _send(_config(moto, "no-such-bucket"), make_entries(1))
    assert "no-such-bucket" in str(caught.value)
    assert CREDENTIALS["secret_access_key"] not in str(caught.value)


def test_a_key_without_the_first_seq_is_refused() -> None:
    """Without {first_seq} batches would overwrite each other: the config says so."""
    with pytest.raises(ValueError, match=r"must contain \{first_seq\}"):
        S3SinkConfig(bucket=BUCKET, key="{stream}/{date}.jsonl")


@pytest.mark.parametrize(
    ("sink", "module", "extra"),
    [
        ('type = "s3"\nbucket = "logs"', "obstore", "s3"),
        ('type = "otlp"\nendpoint = "http://collector:4318"', "opentelemetry", "otlp"),
    ],
)
def test_check_config_names_the_extra_a_sink_needs(
    tmp_path: Path, sink: str, module: str, extra: str
) -> None:
    """With the sink's library missing, check-config exits 2 naming the pip extra."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    config = tmp_path / "c.toml"
    config.write_text(f"[sinks.out]\n{sink}\n")
    result = run_cli(
        "check-config",
        "--config",
        str(config),
        env={"PYTHONPATH": str(hide), "RUNFLOW_API_KEY": "k", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stdout
    assert f"sinks.out: the {extra} sink needs" in result.stderr
    assert f"pip install 'runflow-tail[{extra}]'" in result.stderr
