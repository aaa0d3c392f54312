"""Operator commands on a PostgreSQL state, beside its daemons: ``status``, ``cluster``,
``checkpoint``, ``check-config``; and what a person sees when the database is not there."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr
from runflow_tail.cli import main
from runflow_tail.config.load import load_settings
from runflow_tail.errors import EXIT_CONFIG, EXIT_OK, EXIT_STATE, ConfigError
from runflow_tail.journal import CursorState
from runflow_tail.models import FetchedEntry
from runflow_tail.observability import MASK, redact
from runflow_tail.postgres import Database, Fences, PostgresStore

from tests.support.harness import daemon_process, run_cli, wait_for_sync
from tests.support.postgres import claim, postgres_server

T0 = 1_700_000_000 * 1_000_000_000


def config(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f"""
[state]
dir = "{tmp_path / "state"}"
backend = "postgres"
dsn = "{dsn}"

[[streams]]
name = "s"

[sinks.k]
type = "stdout"
"""
    )
    return path


@pytest.fixture
def state(postgres_dsn: str) -> Database:
    """A state where member m1 polled stream s (two entries) and still holds its lease."""
    database = Database(SecretStr(postgres_dsn), "runflow_tail", "m1", 60.0)
    fences = Fences("m1/1")
    store = PostgresStore(database, fences)
    claim(database, fences, "stream:s")
    rows = [FetchedEntry(f"id{i}", T0 + i, b"{}") for i in range(2)]
    store.append("s", rows, CursorState("fp", watermark=T0 + 1, strategy="range"))
    store.ensure_offsets(["k"])
    store.close()
    return database


def run(*args: str) -> int:
    return main([*args])


def test_status_names_the_member_polling_each_stream(
    state: Database, postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("status", "--json", "--config", str(config(tmp_path, postgres_dsn))) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["daemon_running"] is True
    assert [(s["stream"], s["member"]) for s in shown["streams"]] == [("s", "m1")]
    assert shown["journal_entries"] == 2
    assert shown["sinks"][0]["member"] is None


def test_cluster_lists_members_leases_and_lag(
    state: Database, postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("cluster", "--config", str(config(tmp_path, postgres_dsn))) == EXIT_OK
    out = capsys.readouterr().out
    assert "1 live member(s)" in out
    assert "stream:s" in out and "m1" in out and "epoch=1" in out and "lag=" in out


def test_a_schema_no_daemon_made_is_refused_not_created(
    state: Database, postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in pg_schema: cluster says there is no state there (exit 3, one line) and
    creates nothing, rather than show an empty state as if it were the real one."""
    path = config(tmp_path, postgres_dsn)
    path.write_text(
        path.read_text().replace(
            'backend = "postgres"', 'backend = "postgres"\npg_schema = "runflow_tial"'
        )
    )
    assert run("cluster", "--config", str(path)) == EXIT_STATE
    err = capsys.readouterr().err
    assert "no runflow-tail state there; check state.pg_schema" in err
    assert len(err.strip().splitlines()) == 1
    with psycopg.connect(postgres_dsn) as connection:
        made = connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'runflow_tial'")
        assert made.fetchone() is None


def test_a_checkpoint_change_is_refused_while_a_member_polls_the_stream(
    state: Database, postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("checkpoint", "set", "--stream", "s", "--to", "2024-01-01T00:00:00Z")
    assert run(*args, "--config", str(config(tmp_path, postgres_dsn))) == EXIT_STATE
    assert "stream:s is held by member m1" in capsys.readouterr().err


def test_a_checkpoint_moves_once_no_member_polls_the_stream(
    state: Database, postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lease expired (its member stopped): the operator's command holds it for the
    change, and gives it back."""
    from tests.support.postgres import expire

    expire(postgres_dsn, "stream:s")
    path = str(config(tmp_path, postgres_dsn))
    args = ("checkpoint", "set", "--stream", "s", "--to", "2024-01-01T00:00:00Z")
    assert run(*args, "--config", path) == EXIT_OK
    assert run("checkpoint", "show", "--json", "--config", path) == EXIT_OK
    out = capsys.readouterr().out
    shown = json.loads(out.splitlines()[-1])
    assert shown["streams"][0]["watermark"].startswith("2024-01-01T00:00:00")
    assert run("cluster", "--json", "--config", path) == EXIT_OK
    (lease,) = json.loads(capsys.readouterr().out)["leases"]
    assert (lease["owner"], lease["epoch"]) == (None, 2)


def test_reset_all_on_a_shared_state_says_how_to_start_over(
    state: Database, postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(config(tmp_path, postgres_dsn))
    assert run("checkpoint", "reset", "--all", "--config", path) == EXIT_STATE
    assert "DROP SCHEMA" in capsys.readouterr().err


def test_check_config_never_shows_the_dsn_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNFLOW_API_KEY", "rf_test_key_0123456789")
    dsn = "postgresql://tail:s3cret-pass@db.internal:5432/runflow"
    assert run("check-config", "--config", str(config(tmp_path, dsn))) == EXIT_OK
    captured = capsys.readouterr()
    assert "s3cret-pass" not in captured.out + captured.err
    assert json.loads(captured.out)["state"]["dsn"] == "**********"


def test_a_database_that_is_not_there_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with postgres_server() as server:
        dsn = server.dsn().replace("postgres@", "postgres:pw-not-shown@")
    assert run("status", "--config", str(config(tmp_path, dsn))) == EXIT_STATE
    err = capsys.readouterr().err
    assert err.startswith("runflow-tail: cannot reach PostgreSQL at postgres@127.0.0.1")
    assert "Traceback" not in err and "pw-not-shown" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_bad_state_setting_is_a_configuration_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[state]\nbackend = "postgres"\npg_schema = "Bad-Name"\nlease_ttl = "0.1s"\n')
    assert run("check-config", "--config", str(path)) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "state.pg_schema" in err and "state.lease_ttl" in err


def test_check_config_warns_that_an_unpinned_stdout_sink_follows_its_lease(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNFLOW_API_KEY", "rf_test_key_0123456789")
    path = config(tmp_path, "postgresql://tail@db.internal/runflow")
    assert run("check-config", "--config", str(path)) == EXIT_OK
    assert "sinks.k: a stdout sink writes on whichever daemon holds its lease" in (
        capsys.readouterr().err
    )
    path.write_text(path.read_text() + 'pin = "node-a"\n')
    assert run("check-config", "--config", str(path)) == EXIT_OK
    assert "warning" not in capsys.readouterr().err


def test_the_daemon_with_a_malformed_dsn_exits_with_one_line(tmp_path: Path) -> None:
    path = config(tmp_path, "host=db passwrd=hunter2-not-shown")
    done = run_cli("run", "--config", str(path), env={"RUNFLOW_API_KEY": "rf_test_key_01234"})
    assert done.returncode == EXIT_STATE
    assert done.stderr.startswith("runflow-tail: state.dsn is not a valid PostgreSQL")
    assert "Traceback" not in done.stderr and "hunter2-not-shown" not in done.stderr


def test_the_daemon_waits_for_a_database_that_is_down_and_says_so(tmp_path: Path) -> None:
    """At start, a database that cannot be reached (yet) is waited for, with a line a
    person can act on each time; the password is never in it."""
    with postgres_server() as server:
        dsn = server.dsn().replace("postgres@", "postgres:pw-not-shown@")
    log = tmp_path / "daemon.log"
    with daemon_process(config(tmp_path, dsn), log, env={"RUNFLOW_API_KEY": "rf_test_01234"}):
        wait_for_sync(lambda: "state.unavailable" in log.read_text(), timeout=30)
    (event,) = [json.loads(line) for line in log.read_text().splitlines()][:1]
    assert event["event"] == "state.unavailable"
    assert "cannot reach PostgreSQL at postgres@127.0.0.1" in event["error"]
    assert "pw-not-shown" not in log.read_text() and "Traceback" not in log.read_text()


def test_replay_sends_dead_letters_kept_in_postgresql(
    state: Database, postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fences = Fences("m1/1")
    store = PostgresStore(state, fences)
    claim(state, fences, "sink:k")
    store.dead_letter("k", store.read_after(0, ["s"], max_events=10, max_bytes=1 << 20), "x", 2)
    path = str(config(tmp_path, postgres_dsn))
    assert run("replay", "--sink", "k", "--dead-letters", "--config", path) == EXIT_OK
    assert "replayed 1 dead letter(s), 2 entries, to k" in capsys.readouterr().out
    assert store.dead_letters("k") == []
    store.close()


def test_without_psycopg_the_configuration_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(
            config_file=config(tmp_path, "postgresql://db/x"), environ={}, require_api_key=False
        )
    assert "pip install 'runflow-tail[postgres]'" in str(raised.value)


def test_no_repr_shows_the_dsn_password(tmp_path: Path) -> None:
    dsn = "postgresql://tail:s3cret-pass@db.internal:5432/runflow"
    settings = load_settings(config_file=config(tmp_path, dsn), environ={}, require_api_key=False)
    database = Database.from_settings(settings.state, "m1")
    shown = [repr(settings), repr(settings.state), repr(database), database.describe()]
    assert not any("s3cret-pass" in text for text in shown)
    assert database.describe() == "tail@db.internal:5432/runflow, schema runflow_tail"


def test_the_dsn_password_is_masked_wherever_text_leaves_the_process(tmp_path: Path) -> None:
    """Once the state's database is known, its password (alone, as libpq or a server may
    quote it back) is redacted as every configured secret is: logs, tracebacks, /readyz."""
    dsn = "postgresql://tail:pw-quoted-back@db.internal:5432/runflow"
    settings = load_settings(config_file=config(tmp_path, dsn), environ={}, require_api_key=False)
    Database.from_settings(settings.state, "m1")
    assert redact("FATAL: password pw-quoted-back is wrong") == f"FATAL: password {MASK} is wrong"
    Database(SecretStr("host=db user=tail password=kv-form-pw"), "s", "m1", 15.0)
    assert "kv-form-pw" not in redact("connection to host=db password=kv-form-pw failed")
