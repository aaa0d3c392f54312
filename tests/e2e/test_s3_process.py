"""The S3 sink with the daemon as a real subprocess: SIGKILL in the middle of an upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runflow_tail.sandbox import SandboxThread

from tests.support.harness import config_toml, daemon_process, sandbox_ids, wait_for_sync
from tests.support.s3 import BUCKET, CREDENTIALS, SlowProxy, running_moto

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sandbox_thread", [{"timestamp_style": "z"}], indirect=True)
def test_a_kill_during_an_upload_leaves_every_entry_in_exactly_one_object(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """SIGKILL while an object is being uploaded, then a restart: the interrupted batch is
    written again under the same key, and every entry is in exactly one object; the
    restarted daemon's SIGTERM exit code is 0 (obstore's threads do not abort the exit)."""
    sandbox_thread.world.generate(3000, step_ms=1, full_run=True)
    expected = sandbox_ids(sandbox_thread)
    with running_moto() as moto:
        port = int(moto.url.rsplit(":", 1)[1])
        # Entries of ~4.7 KB at 4 MB/s: an upload of a page's worth takes over half a second.
        proxy = SlowProxy(port, rate=4_000_000).start()
        sinks = (
            f'[sinks.archive]\ntype = "s3"\nbucket = "{BUCKET}"\nregion = "us-east-1"\n'
            f'endpoint = "http://127.0.0.1:{proxy.port}"\ncompression = "none"\n'
            f'access_key_id = "{CREDENTIALS["access_key_id"]}"\n'
            f'secret_access_key = "{CREDENTIALS["secret_access_key"]}"\n'
            "[sinks.archive.batch]\nmax_events = 1000\nmax_wait = 0\n"
        )
        config = tmp_path / "c.toml"
        config.write_text(
            config_toml(
                sandbox_thread,
                tmp_path / "state",
                tmp_path / "unused",
                sinks=sinks,
                stream={"fields": []},
            )
        )
        env = {"RUNFLOW_API_KEY": sandbox_thread.api_key}
        with daemon_process(config, tmp_path / "first.log", env=env) as first:
            assert proxy.upload_started.wait(timeout=60), first.log.read_text()[-2000:]
            first.kill()
        assert moto.objects() == {}  # the object was cut off: nothing half-written shows
        proxy.rate = None
        with daemon_process(config, tmp_path / "second.log", env=env) as second:

            def all_archived() -> bool:
                return sum(body.count(b"\n") for body in moto.objects().values()) >= 3000

            wait_for_sync(all_archived, timeout=90)
            assert second.terminate(timeout=30) == 0, second.log.read_text()[-2000:]
        objects = moto.objects()
        proxy.close()
    seen = [json.loads(line)["id"] for body in objects.values() for line in body.splitlines()]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))
    log = (tmp_path / "second.log").read_text().splitlines()
    assert "sink.resending_interrupted_batch" in [json.loads(line)["event"] for line in log]
