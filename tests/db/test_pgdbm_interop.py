"""Interoperability with the real pgdbm 0.5: same history, same checksum, same lock; nobody re-applies."""
import asyncio
import threading

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from tests.helpers import write
from tests.helpers.pgdbm import pgdbm_apply

FILES = {
    "001_documents.sql": "CREATE TABLE IF NOT EXISTS {{tables.documents}} (id serial PRIMARY KEY, body text);\r\n"
                         "CREATE INDEX IF NOT EXISTS idx_documents_body ON {{tables.documents}} (body);\r\n",
    # (no BOM here: pgdbm sends a BOM to the server, which fails with a syntax error; the engine drops it)
    "002_chunks.sql": "CREATE TABLE {{tables.chunks}} (id serial PRIMARY KEY,\n"
                      "  document_id int REFERENCES {{tables.documents}}(id));\n",
    "003_fn.sql": "CREATE OR REPLACE FUNCTION {{schema}}.touch() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n",
}


def url(pg_server, database_dsn):
    name = database_dsn.split("dbname=")[1].split()[0]
    return f"postgresql://postgres:{pg_server.password}@127.0.0.1:{pg_server.port}/{name}"


def rows(conn, table):
    return conn.execute(f"SELECT filename, checksum, module_name FROM {table} ORDER BY filename").fetchall()


@pytest.mark.parametrize("schema", [None, "llmemory"])
def test_pgdbm_first_then_engine_sees_nothing_pending(pg_server, database, conn, tmp_path, schema):
    migrations = write(tmp_path, FILES)
    if schema:
        conn.execute(f"CREATE SCHEMA {schema}")
    result = asyncio.run(pgdbm_apply(url(pg_server, database), migrations, schema))
    assert len(result["applied"]) == 3
    # pgdbm 0.5 keeps the history in <schema>.schema_migrations: point the engine at it
    history = f"{schema}.schema_migrations" if schema else "public.schema_migrations"
    before = rows(conn, history)
    target = Settings(migrations, schema=schema, history_table=history)
    status = migrate.status(conn, target)
    assert status.plan.pending == [] and status.plan.mismatched == []
    assert migrate.apply(conn, target).applied == []
    assert rows(conn, history) == before


@pytest.mark.parametrize("schema", [None, "llmemory"])
def test_engine_first_then_pgdbm_applies_nothing(pg_server, database, conn, tmp_path, schema):
    migrations = write(tmp_path, FILES)
    if schema:
        conn.execute(f"CREATE SCHEMA {schema}")
    history = f"{schema}.schema_migrations" if schema else "public.schema_migrations"
    applied = migrate.apply(conn, Settings(migrations, schema=schema, history_table=history)).applied
    assert len(applied) == 3
    result = asyncio.run(pgdbm_apply(url(pg_server, database), migrations, schema))
    assert result["status"] == "up_to_date" and result["applied"] == []
    assert len(rows(conn, history)) == 3


def test_pgdbm_sees_an_edit_of_a_file_the_engine_applied(pg_server, database, conn, tmp_path):
    migrations = write(tmp_path, FILES)
    migrate.apply(conn, Settings(migrations))
    (migrations / "003_fn.sql").write_text(FILES["003_fn.sql"] + "-- changed\n")
    with pytest.raises(Exception, match="modified after being applied"):
        asyncio.run(pgdbm_apply(url(pg_server, database), migrations))


def test_started_together_each_migration_recorded_once(pg_server, database, tmp_path):
    files = {f"{i:03d}_t{i}.sql": f"CREATE TABLE t{i} (id int);\nSELECT pg_sleep(0.02);\n" for i in range(1, 16)}
    migrations = write(tmp_path, files)
    # pgdbm creates its history table before taking the lock, so pgdbm instances racing on an empty database
    # can fail on CREATE TABLE (pg_type unique violation) among themselves; start from an existing table
    with migrate.connect(database) as c:
        migrate.apply(c, Settings(write(tmp_path / "empty", {"000_init.sql": "SELECT 1;"})))
    errors = []
    barrier = threading.Barrier(6)

    def engine_run():
        try:
            with migrate.connect(database) as c:
                barrier.wait()
                migrate.apply(c, Settings(migrations))
        except Exception as exc:
            errors.append(exc)

    def pgdbm_run():
        try:
            barrier.wait()
            asyncio.run(pgdbm_apply(url(pg_server, database), migrations))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=engine_run) for _ in range(3)] + \
              [threading.Thread(target=pgdbm_run) for _ in range(3)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert errors == []
    with psycopg.connect(database) as c:
        assert c.execute("SELECT count(*), count(DISTINCT filename) FROM schema_migrations").fetchone() == (16, 16)
        assert c.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 't%%' AND schemaname='public'"
                         ).fetchone()[0] == 15
