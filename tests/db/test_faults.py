"""Faults: the applier killed mid-migration, the server restarted mid-run, interrupted no-transaction files.

The guarantee: a migration is in the database whole with its history row, or not at all; the next run
completes; a no-transaction migration that died half-way is reported, never skipped or blindly re-run.
"""
import json

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from tests.helpers import db as dbs
from tests.helpers import write
from tests.helpers.faults import SLOW, backend_gone, cli, cli_run, kill_group, make_slow, sleeping_backend
from tools.pgserver import Server

FILES = {
    "001_a.sql": "CREATE TABLE a (id int);\n",
    "002_b.sql": "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\n" + SLOW + "CREATE TABLE c (id int);\n",
    "003_d.sql": "CREATE TABLE d (id int);\n",
}
NO_TX = {
    "001_a.sql": "CREATE TABLE a (id int);\n",
    "002_idx.sql": "-- pgdbm:no-transaction\nCREATE TABLE IF NOT EXISTS big (id int);\n" + SLOW
                   + "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_id ON big (id);\n",
    "003_d.sql": "CREATE TABLE d (id int);\n",
}


def recorded(dsn):
    return [row[0] for row in dbs.history(dsn)]


def tables(dsn):
    return dbs.tables(dsn, exclude=("schema_migrations", "schema_migrations_inflight", "slow_control"))


def lock_free(dsn, module="aword_memory"):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT pg_try_advisory_lock(hashtext('pgdbm_migration_' || %s))", (module,)).fetchone()[0]


def test_cli_killed_mid_migration_leaves_all_or_nothing_and_the_next_run_completes(database, tmp_path):
    migrations = write(tmp_path / "m", FILES)
    make_slow(database, 60)
    proc = cli("apply", "--dir", str(migrations), dsn=database)
    pid = sleeping_backend(database, proc=proc)
    kill_group(proc)
    # the server notices the dead client within about a second (client_connection_check_interval) and rolls
    # back, instead of sleeping on for a minute holding the locks
    gone = backend_gone(database, pid)
    print(f"CLI SIGKILLed: the server rolled back after {gone:.1f}s")
    assert gone < 5
    assert recorded(database) == ["001_a.sql"]
    assert tables(database) == ["a"]  # nothing of 002: not b, not its row, not c
    assert lock_free(database)
    make_slow(database, 0)
    result = cli_run("apply", "--dir", str(migrations), dsn=database)
    assert result.returncode == 0, result.stderr
    assert recorded(database) == ["001_a.sql", "002_b.sql", "003_d.sql"]
    assert tables(database) == ["a", "b", "c", "d"]


def test_server_restart_mid_run_same_guarantee_and_a_clear_error(tmp_path):
    server = Server(tmp_path / "pg").start()
    try:
        dsn = server.dsn()
        migrations = write(tmp_path / "m", FILES)
        make_slow(dsn, 60)
        proc = cli("apply", "--dir", str(migrations), dsn=dsn)
        sleeping_backend(dsn, proc=proc)
        server.stop()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (out, err)
        assert "Lost the connection to PostgreSQL while applying 002_b.sql" in err
        assert "committed earlier in this run: 001_a.sql" in err
        assert "Remedy: run again once the server is reachable" in err
        assert server.password not in out + err
        server.start()
        assert recorded(dsn) == ["001_a.sql"] and tables(dsn) == ["a"]
        make_slow(dsn, 0)
        result = cli_run("apply", "--dir", str(migrations), dsn=dsn)
        assert result.returncode == 0, result.stderr
        assert recorded(dsn) == ["001_a.sql", "002_b.sql", "003_d.sql"]
    finally:
        server.stop()


def test_interrupted_no_transaction_migration_is_reported_then_retried(database, tmp_path):
    migrations = write(tmp_path / "m", NO_TX)
    make_slow(database, 60)
    proc = cli("apply", "--dir", str(migrations), dsn=database)
    pid = sleeping_backend(database, proc=proc)
    # while it runs, it is running, not interrupted
    running = cli_run("status", "--dir", str(migrations), "--json", dsn=database)
    assert running.returncode == 0, running.stderr
    assert json.loads(running.stdout)["running"] == ["002_idx.sql"]
    assert json.loads(running.stdout)["interrupted"] == []
    kill_group(proc)
    backend_gone(database, pid)
    make_slow(database, 0)

    result = cli_run("apply", "--dir", str(migrations), dsn=database)
    assert result.returncode == 2
    assert "Interrupted migration(s) of module 'aword_memory'; nothing more was applied" in result.stderr
    assert "002_idx.sql (no-transaction) started at" in result.stderr
    assert f"was interrupted (backend pid {pid} is gone)" in result.stderr
    assert "1 of 3 statement(s) completed; the statement at line 3 did not complete" in result.stderr
    assert "python -m llmemory_db.migrate resolve 002_idx.sql --retry" in result.stderr
    assert recorded(database) == ["001_a.sql"]
    assert tables(database) == ["a", "big"]  # what ran stays: the report says so
    status = cli_run("status", "--dir", str(migrations), dsn=database)
    assert status.returncode == 1 and "002_idx.sql (no-transaction)" in status.stderr

    resolved = cli_run("resolve", "002_idx.sql", "--retry", "--dir", str(migrations), dsn=database)
    assert resolved.returncode == 0, resolved.stderr
    result = cli_run("apply", "--dir", str(migrations), dsn=database)
    assert result.returncode == 0, result.stderr
    assert recorded(database) == ["001_a.sql", "002_idx.sql", "003_d.sql"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_id'::regclass").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM public.schema_migrations_inflight").fetchone()[0] == 0


HALF_FAILING = {"001_x.sql": "-- pgdbm:no-transaction\nCREATE TABLE x (id int);\nCREATE INDEX CONCURRENTLY x_id ON nosuch (id);\n"}


def _failed_half_way(conn, tmp_path, extra=None):
    """A no-transaction file whose second statement fails: its first statement stays, it is recorded as such."""
    target = Settings(write(tmp_path, {**HALF_FAILING, **(extra or {})}))
    with pytest.raises(migrate.StatementError, match=r"001_x.sql failed at line 3"):
        migrate.apply(conn, target)
    return target


def test_failed_no_transaction_migration_half_way_is_refused_until_resolved(conn, tmp_path):
    target = _failed_half_way(conn, tmp_path, {"002_y.sql": "CREATE TABLE y (id int);\n"})
    status = migrate.status(conn, target)
    assert [i.filename for i in status.interrupted] == ["001_x.sql"]
    assert "failed: line 3: relation \"nosuch\" does not exist" in status.interrupted[0].describe()
    # the next run does not blindly re-run CREATE TABLE x (it would fail with "already exists"), nor skip the file
    with pytest.raises(migrate.InterruptedMigrationError, match="1 of 2 statement"):
        migrate.apply(conn, target)
    assert migrate.read_history(conn, target) == {}
    # someone finishes it by hand, then records it
    conn.execute("CREATE INDEX x_id ON x (id)")
    assert "recorded as applied" in migrate.resolve(conn, target, "001_x.sql", "mark-applied")
    assert migrate.apply(conn, target).applied == ["002_y.sql"]
    assert set(migrate.read_history(conn, target)) == {"001_x.sql", "002_y.sql"}
    with pytest.raises(migrate.MigrationError, match="not recorded as interrupted"):
        migrate.resolve(conn, target, "001_x.sql", "retry")


def test_forget_also_forgets_an_interrupted_migration(conn, tmp_path):
    target = _failed_half_way(conn, tmp_path)
    migrate.forget(conn, target, drop_tables=["x"])
    assert migrate.status(conn, target).inflight == []


def test_no_transaction_failure_in_its_first_statement_leaves_no_trace(conn, tmp_path):
    migrations = write(tmp_path, {"001_x.sql": "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY i ON nosuch (id);\n"})
    target = Settings(migrations)
    with pytest.raises(migrate.StatementError):
        migrate.apply(conn, target)
    assert migrate.status(conn, target).inflight == []
    write(migrations, {"000_nosuch.sql": "CREATE TABLE nosuch (id int);\n"})
    assert migrate.apply(conn, target).applied == ["000_nosuch.sql", "001_x.sql"]


def test_mark_applied_refuses_a_file_that_changed_since(conn, tmp_path):
    target = _failed_half_way(conn, tmp_path)
    write(tmp_path, {"001_x.sql": "-- pgdbm:no-transaction\nCREATE TABLE x (id int);\n"})
    with pytest.raises(migrate.MigrationError, match="changed since it was interrupted"):
        migrate.resolve(conn, target, "001_x.sql", "mark-applied")
    assert [i.filename for i in migrate.status(conn, target).interrupted] == ["001_x.sql"]  # rolled back
