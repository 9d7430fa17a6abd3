"""The engine against the embedded PostgreSQL 18: apply, idempotence, failures, locks, history compatibility."""
import threading
import time
import uuid

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import (ChecksumMismatchError, ConnectionFailedError, LintError, LockRetryError,
                                LockTimeoutError,
                                MigrationError, StatementError, Settings)
from tests.helpers import db as dbs
from tests.helpers import write

TWO = {
    "001_documents.sql": "CREATE TABLE IF NOT EXISTS {{tables.documents}} (id serial PRIMARY KEY, body text);\n"
                         "CREATE INDEX IF NOT EXISTS idx_documents_body ON {{tables.documents}} (body);\n",
    "002_chunks.sql": "CREATE TABLE {{tables.chunks}} (id serial PRIMARY KEY,\n"
                      "  document_id int REFERENCES {{tables.documents}}(id));\n",
}


def history(conn, table="public.schema_migrations", module="aword_memory"):
    return dbs.history(conn, table, module, columns="filename, checksum, module_name, version")


def test_standalone_apply_then_noop(conn, tmp_path):
    target = Settings(write(tmp_path, TWO))
    result = migrate.apply(conn, target)
    assert result.applied == ["001_documents.sql", "002_chunks.sql"]
    assert {"documents", "chunks", "schema_migrations"} <= set(dbs.tables(conn, "public"))
    rows = history(conn)
    assert [(r[0], r[2], r[3]) for r in rows] == [("001_documents.sql", "aword_memory", "001"),
                                                 ("002_chunks.sql", "aword_memory", "002")]
    assert {r[0]: r[1] for r in rows} == result.checksums
    again = migrate.apply(conn, target)
    assert again.applied == [] and again.skipped == ["001_documents.sql", "002_chunks.sql"]
    assert len(history(conn)) == 2


def test_schema_mode_puts_tables_in_the_schema_and_history_in_public(conn, tmp_path):
    conn.execute("CREATE SCHEMA llmemory")
    migrate.apply(conn, Settings(write(tmp_path, TWO), schema="llmemory"))
    assert dbs.tables(conn, "llmemory") == ["chunks", "documents"]
    assert "documents" not in dbs.tables(conn, "public")
    assert len(history(conn)) == 2


def test_two_schemas_one_database_separate_modules(conn, tmp_path):
    migrations = write(tmp_path, TWO)
    for schema in ("tenant_a", "tenant_b"):
        conn.execute(f"CREATE SCHEMA {schema}")
        migrate.apply(conn, Settings(migrations, schema=schema, module_name=f"mem_{schema}"))
    assert dbs.tables(conn, "tenant_a") == dbs.tables(conn, "tenant_b") == ["chunks", "documents"]
    assert len(history(conn, module="mem_tenant_a")) == len(history(conn, module="mem_tenant_b")) == 2


def test_missing_schema_gets_the_spec_remedy(conn, tmp_path):
    with pytest.raises(MigrationError, match=r'schema "nowhere" does not exist') as info:
        migrate.apply(conn, Settings(write(tmp_path, TWO), schema="nowhere"))
    assert "CREATE SCHEMA IF NOT EXISTS nowhere" in str(info.value)


def test_search_path_is_schema_then_public(conn, tmp_path):
    conn.execute("CREATE SCHEMA app")
    migrate.apply(conn, Settings(write(tmp_path, {
        "001_plain.sql": "CREATE TABLE plain_table (id int);\n"
                         "CREATE TABLE {{tables.probe}} AS SELECT current_setting('search_path') AS sp;"}),
        schema="app"))
    assert "plain_table" in dbs.tables(conn, "app")
    assert conn.execute("SELECT sp FROM app.probe").fetchone()[0] == 'app, public'
    assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'  # not leaked to the session


def test_failure_in_third_of_five_keeps_first_two_and_reports_them(conn, tmp_path):
    files = {f"00{i}_t{i}.sql": f"CREATE TABLE t{i} (id int);\n" for i in (1, 2, 4, 5)}
    files["003_bad.sql"] = "CREATE TABLE t3 (id int);\nINSERT INTO t3 VALUES (1);\n\nINSERT INTO t3 VALUES (1/0);\n"
    with pytest.raises(StatementError) as info:
        migrate.apply(conn, Settings(write(tmp_path, files)))
    error = info.value
    assert (error.file, error.line, error.sqlstate) == ("003_bad.sql", 4, "22012")
    assert error.committed == ["001_t1.sql", "002_t2.sql"]
    text = str(error)
    assert "003_bad.sql failed at line 4: division by zero (SQLSTATE 22012)" in text
    assert "committed earlier in this run: 001_t1.sql, 002_t2.sql" in text
    assert "nothing of 003_bad.sql was applied" in text
    assert [r[0] for r in history(conn)] == ["001_t1.sql", "002_t2.sql"]
    assert "t3" not in dbs.tables(conn, "public")  # the whole file rolled back


def test_error_line_inside_a_multiline_statement(conn, tmp_path):
    sql = "SELECT 1;\nCREATE TABLE x (\n  id int,\n  bad nosuchtype\n);\n"
    with pytest.raises(StatementError) as info:
        migrate.apply(conn, Settings(write(tmp_path, {"001_x.sql": sql})))
    assert info.value.line == 4 and info.value.sqlstate == "42704"
    assert 'type "nosuchtype" does not exist' in str(info.value)


def test_modified_after_applied_is_refused_with_both_checksums(conn, tmp_path):
    migrations = write(tmp_path, TWO)
    migrate.apply(conn, Settings(migrations))
    before = history(conn)
    (migrations / "001_documents.sql").write_text(TWO["001_documents.sql"] + "-- edited\n")
    write(migrations, {"003_more.sql": "CREATE TABLE more (id int);"})
    with pytest.raises(ChecksumMismatchError) as info:
        migrate.apply(conn, Settings(migrations))
    text = str(info.value)
    assert "Migration 001_documents.sql has been modified after being applied" in text
    assert before[0][1] in text and migrate.checksum((migrations / "001_documents.sql").read_text()) in text
    # a comment is no change to the schema: the proof says so, and the remedy is to accept the verified edit
    assert "proof: no difference in the schema" in text and "accept_edits=['001_documents.sql']" in text
    assert "DELETE FROM" not in text  # never the development reset as the remedy of an edited file
    assert history(conn) == before and "more" not in dbs.tables(conn, "public")


def test_lint_errors_stop_before_anything_runs(conn, tmp_path):
    migrations = write(tmp_path, {"001_ok.sql": "CREATE TABLE ok (id int);", "002_bad.sql": "CREAT TABLE x ();"})
    with pytest.raises(LintError, match="002_bad.sql:1:1"):
        migrate.apply(conn, Settings(migrations))
    assert "ok" not in dbs.tables(conn, "public")
    assert conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone()[0] is None


def test_missing_on_disk_is_reported_not_an_error(conn, tmp_path):
    migrations = write(tmp_path, TWO)
    migrate.apply(conn, Settings(migrations))
    (migrations / "002_chunks.sql").unlink()
    status = migrate.status(conn, Settings(migrations))
    assert status.plan.missing == ["002_chunks.sql"] and status.plan.pending == []
    assert migrate.apply(conn, Settings(migrations)).missing == ["002_chunks.sql"]


def test_pgdbm_created_history_table_is_used_as_it_is(conn, tmp_path):
    conn.execute("""CREATE TABLE schema_migrations (
        id SERIAL PRIMARY KEY, filename VARCHAR(255) NOT NULL, checksum VARCHAR(64) NOT NULL,
        module_name VARCHAR(100), applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        applied_by VARCHAR(100) DEFAULT CURRENT_USER, execution_time_ms INTEGER, UNIQUE(filename, module_name))""")
    migrate.apply(conn, Settings(write(tmp_path, TWO)))
    columns = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'schema_migrations' "
        "ORDER BY ordinal_position").fetchall()]
    assert "version" not in columns
    assert len(conn.execute("SELECT * FROM schema_migrations").fetchall()) == 2


def test_no_transaction_migration_runs_in_autocommit(conn, tmp_path):
    migrations = write(tmp_path, {
        "001_t.sql": "CREATE TABLE t (id int);",
        "002_idx.sql": "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS idx_t ON t (id);\n"})
    assert migrate.apply(conn, Settings(migrations)).applied == ["001_t.sql", "002_idx.sql"]
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_t'").fetchone()[0] == 1


def test_lock_timeout_names_the_holder(conn, database, tmp_path):
    holder = psycopg.connect(database, autocommit=True, application_name="someone-else")
    holder.execute("SELECT pg_advisory_lock(hashtext('pgdbm_migration_aword_memory'))")
    try:
        with pytest.raises(LockTimeoutError) as info:
            migrate.apply(conn, Settings(write(tmp_path, TWO), lock_wait_timeout=0.3))
        text = str(info.value)
        assert "Timed out after 0.3s waiting for the migration lock of module 'aword_memory'" in text
        assert f"pid {holder.info.backend_pid}" in text and "someone-else" in text
    finally:
        holder.close()


def test_waits_for_the_lock_then_applies(conn, database, tmp_path):
    holder = psycopg.connect(database, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext('pgdbm_migration_aword_memory'))")
    threading.Timer(0.5, holder.close).start()
    started = time.monotonic()
    assert len(migrate.apply(conn, Settings(write(tmp_path, TWO), lock_wait_timeout=10)).applied) == 2
    assert time.monotonic() - started >= 0.4


def test_concurrent_appliers_record_each_migration_once(pg_server, database, tmp_path):
    files = {f"{i:03d}_t.sql": f"CREATE TABLE t{i} (id int); SELECT pg_sleep(0.01);" for i in range(1, 21)}
    migrations = write(tmp_path, files)
    errors, results = [], []

    def run():
        try:
            with migrate.connect(database) as c:
                results.append(migrate.apply(c, Settings(migrations)).applied)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert sorted(sum(results, [])) == sorted(files)  # every file applied by exactly one applier
    with psycopg.connect(database) as c:
        assert c.execute("SELECT count(*), count(DISTINCT filename) FROM schema_migrations").fetchone() == (20, 20)


def test_permission_denied_for_extension_gets_the_spec_remedy(conn, database, tmp_path):
    role = f"migrator_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide
    conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'migrator-secret-pw'")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    conn.execute("DROP EXTENSION IF EXISTS vector")
    dsn = dbs.with_params(database, user=role, password="migrator-secret-pw")
    with migrate.connect(dsn) as other:
        with pytest.raises(StatementError) as info:
            migrate.apply(other, Settings(write(tmp_path, {"001_ext.sql": "CREATE EXTENSION IF NOT EXISTS vector;"})))
    text = str(info.value)
    assert 'permission denied to create extension "vector"' in text
    assert "SUPERUSER" in text and "CREATE EXTENSION IF NOT EXISTS vector" in text
    assert "migrator-secret-pw" not in text
    conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_wrong_password_is_one_clear_error_without_the_password(database):
    bad = dbs.with_params(database, password="not-the-right-one-123")
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError) as info:
        migrate.connect(bad)
    assert "password authentication failed" in str(info.value)
    assert "not-the-right-one-123" not in str(info.value)
    assert time.monotonic() - started < 5  # not retried: it cannot succeed


def test_unreachable_server_retries_with_backoff_then_fails(pg_server):
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match="Cannot connect to PostgreSQL") as info:
        migrate.connect("host=127.0.0.1 port=1 user=x password=hunter2-secret dbname=x", retries=2, backoff=0.1)
    assert time.monotonic() - started >= 0.3  # 0.1 + 0.2 of backoff
    assert "hunter2-secret" not in str(info.value)
    assert "Remedy:" in str(info.value)


def test_error_without_a_server_position_is_located_by_replay(conn, tmp_path):
    sql = "CREATE TABLE dup (id int);\n-- again:\n\nCREATE TABLE dup (id int);\n"
    with pytest.raises(StatementError) as info:
        migrate.apply(conn, Settings(write(tmp_path, {"001_dup.sql": sql})))
    assert (info.value.line, info.value.sqlstate) == (4, "42P07")
    assert 'relation "dup" already exists' in str(info.value)
    assert "dup" not in dbs.tables(conn, "public")


@pytest.mark.parametrize("text", [
    "CREATE TABLE t (id int)",                                  # no final semicolon
    "CREATE TABLE t (id int);\n-- a trailing comment, no newline",
    "CREATE TABLE t (id int, pct text DEFAULT '100%', doc jsonb DEFAULT '{\"a\": {\"b\": 1}}');",
    "CREATE TABLE t (id int);\nCOMMENT ON TABLE t IS 'it''s $1 and %s and {0}';",
])
def test_awkward_but_valid_files_apply_and_commit(conn, tmp_path, text):
    result = migrate.apply(conn, Settings(write(tmp_path, {"001_t.sql": text})))
    assert result.applied == ["001_t.sql"]
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert "t" in dbs.tables(conn, "public") and len(history(conn)) == 1


def test_lock_timeout_of_a_migration_statement_is_not_the_migration_lock(conn, database, tmp_path):
    conn.execute("CREATE TABLE busy (id int)")
    other = psycopg.connect(database)
    other.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")  # held in an open transaction
    try:
        with pytest.raises(LockRetryError) as info:
            migrate.apply(conn, Settings(write(tmp_path, {"001_alter.sql": "ALTER TABLE busy ADD COLUMN x int;"}),
                                       lock_timeout=0.2, lock_retry_timeout=0))
        assert info.value.sqlstate == "55P03" and info.value.attempts == 1 and "lock_timeout" in str(info.value)
        assert f"pid {other.info.backend_pid}" in info.value.blocker
    finally:
        other.close()
    assert history(conn) == []


def test_statement_timeout(conn, tmp_path):
    with pytest.raises(StatementError) as info:
        migrate.apply(conn, Settings(write(tmp_path, {"001_slow.sql": "SELECT 1;\nSELECT pg_sleep(5);"}),
                                   statement_timeout=0.2))
    assert (info.value.sqlstate, info.value.line) == ("57014", 2)
    assert "statement_timeout" in str(info.value)


def test_execution_time_and_applied_by_are_recorded(conn, tmp_path):
    migrate.apply(conn, Settings(write(tmp_path, {"001_sleep.sql": "SELECT pg_sleep(0.05);"})))
    elapsed, applied_by = conn.execute("SELECT execution_time_ms, applied_by FROM schema_migrations").fetchone()
    assert 40 <= elapsed < 2000 and applied_by == "postgres"


def test_zero_timeouts_from_pulumi_props_mean_zero(db, tmp_path):
    """Regression: under Pulumi, statement_timeout=0 was dropped (the database's 300 ms default then killed the
    migration) and lock_wait_timeout=0 became 60 s. 0 means no timeout, as for PostgreSQL's own settings; the
    wait for the migration lock is not cut short by a statement_timeout either."""
    from llmemory_db.provider import settings_of
    db.sql(f'ALTER DATABASE "{db.name}" SET statement_timeout = 300')
    props = {"migrations_dir": str(write(tmp_path / "m", {"001_slow.sql": "SELECT pg_sleep(0.6);"})),
             "statement_timeout": 0, "lock_wait_timeout": 0}
    holder = psycopg.connect(db.dsn, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext('pgdbm_migration_aword_memory'))")
    threading.Timer(1.0, holder.close).start()
    started = time.monotonic()
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        assert migrate.apply(conn, settings_of(props)).applied == ["001_slow.sql"]
    assert time.monotonic() - started >= 1.5  # waited for the lock, then slept 0.6 s
