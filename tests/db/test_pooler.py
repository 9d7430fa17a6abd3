"""Through PgBouncer (Debian's package) in transaction-pooling mode: migrations apply correctly, concurrent
appliers still record each file once, and a no-transaction migration is refused before anything runs."""
import threading
from pathlib import Path

import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from tests.helpers import write  # noqa
from tests.helpers import ROOT
from tools.pgbouncer import Bouncer

TEMPLATED = {
    "002_notes.sql": "CREATE TABLE {{tables.notes}} (id serial PRIMARY KEY, document_id uuid "
                     "REFERENCES {{tables.documents}}(document_id), body text);\n",
    "003_fn.sql": "CREATE FUNCTION {{schema}}.note_count() RETURNS bigint LANGUAGE sql AS "
                  "$$ SELECT count(*) FROM {{tables.notes}} $$;\n",
}


def through(bouncer, database_dsn):
    return bouncer.dsn(database=database_dsn.split("dbname=")[1].split()[0])


def recorded(conn):
    return [r[0] for r in conn.execute("SELECT filename FROM public.schema_migrations ORDER BY 1").fetchall()]


@pytest.fixture
def llmemory_files(tmp_path):
    files = {"001_complete_schema.sql": (ROOT / "migrations" / "001_complete_schema.sql").read_text()}
    return write(tmp_path / "m", {**files, **TEMPLATED})


def test_llmemory_schema_applies_through_transaction_pooling(bouncer, database, conn, llmemory_files):
    conn.execute("CREATE SCHEMA llmemory")
    target = Settings(llmemory_files, schema="llmemory")
    with migrate.connect(through(bouncer, database)) as pooled:
        assert "pooler or proxy" in migrate.pooler(pooled, target)  # it is detected ...
        result = migrate.apply(pooled, target)  # ... and harmless for transactional files
        assert result.applied == ["001_complete_schema.sql", "002_notes.sql", "003_fn.sql"]
        assert migrate.apply(pooled, target).applied == []
    assert recorded(conn) == result.applied
    assert conn.execute("SELECT llmemory.note_count()").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'llmemory'").fetchone()[0] >= 10


def test_concurrent_appliers_through_the_pooler_record_each_file_once(bouncer, database, conn, tmp_path):
    files = {f"{i:03d}_t{i}.sql": f"CREATE TABLE t{i} (id int);\nSELECT pg_sleep(0.02);\n" for i in range(1, 16)}
    migrations = write(tmp_path / "m", files)
    errors, applied = [], []

    def run():
        try:
            with migrate.connect(through(bouncer, database)) as pooled:
                applied.extend(migrate.apply(pooled, Settings(migrations)).applied)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied) == sorted(files)  # each applied by exactly one applier
    assert conn.execute("SELECT count(*), count(DISTINCT filename) FROM public.schema_migrations").fetchone() == (15, 15)


def test_no_transaction_migration_through_transaction_pooling_is_refused(bouncer, database, conn, tmp_path):
    migrations = write(tmp_path / "m", {
        "001_a.sql": "CREATE TABLE a (id int);\n",
        "002_idx.sql": "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_id ON a (id);\n"})
    with migrate.connect(through(bouncer, database)) as pooled:
        with pytest.raises(migrate.PoolerError) as info:
            migrate.apply(pooled, Settings(migrations))
    message = str(info.value)
    assert "002_idx.sql is a no-transaction migration" in message
    assert "transaction-pooling endpoint" in message and "nothing was applied" in message
    assert "Remedy: apply it over a direct PostgreSQL connection or a session-pooled endpoint" in message
    assert info.value.file == "002_idx.sql"
    assert conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone() == (None,)
    assert conn.execute("SELECT to_regclass('public.a')").fetchone() == (None,)  # not even 001
    # the command line says the same
    from tests.helpers.faults import cli_run
    result = cli_run("apply", "--dir", str(migrations), dsn=through(bouncer, database))
    assert result.returncode == 2 and "002_idx.sql is a no-transaction migration" in result.stderr
    # declared as transaction pooling, even a direct connection refuses
    with pytest.raises(migrate.PoolerError, match="pool mode 'transaction' was declared"):
        migrate.apply(conn, Settings(migrations, pool_mode="transaction"))


def test_session_pooling_runs_no_transaction_migrations_when_declared(pg_server, database, conn, tmp_path):
    session_pool = Bouncer(Path(pg_server.root).parent / "pgbouncer-session", pg_server, mode="session").start()
    try:
        migrations = write(tmp_path / "m", {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "002_idx.sql": "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_id ON a (id);\n"})
        with migrate.connect(through(session_pool, database)) as pooled:
            with pytest.raises(migrate.PoolerError, match="pool_mode='session'"):  # auto: refused, remedy says how
                migrate.apply(pooled, Settings(migrations))
            assert migrate.apply(pooled, Settings(migrations, pool_mode="session")).applied == ["001_a.sql",
                                                                                                "002_idx.sql"]
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'a_id'::regclass").fetchone() == (True,)
    finally:
        session_pool.stop()
