"""Adopting a database that exists already (llmemory's schema made by `psql -f`, no history): refused until a
baseline proves the live schema is what the files produce; the proof leaves nothing behind and locks nothing
live; a pgdbm history under another module name is copied once."""
import asyncio
import threading
import time

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import BaselineMismatchError, MigrationError, Settings, UnknownSchemaError, load
from llmemory_db.migrate.events import Collected
from tests.helpers import db as dbs
from tests.helpers import write
from tests.helpers.pgdbm import pgdbm_apply

LLMEMORY = Settings(migrations_package="llmemory", schema="llmemory", extensions=("vector",))


@pytest.fixture
def adopted(pg_server, db):
    """A database whose llmemory schema was made by hand: the objects are there, no history."""
    db.sql("CREATE SCHEMA llmemory")
    dbs.psql_f(pg_server, db, LLMEMORY)
    return db


def test_an_unknown_schema_is_refused_and_named(adopted):
    with psycopg.connect(adopted.dsn, autocommit=True) as conn, pytest.raises(UnknownSchemaError) as info:
        migrate.apply(conn, LLMEMORY)
    text = str(info.value)
    assert "Schema llmemory already holds" in text and "table llmemory.documents" in text
    assert "has no history of that module" in text and "baseline='VERSION'" in text and "different schema" in text
    assert adopted.sql("SELECT to_regclass('llmemory.schema_migrations')") == [(None,)]  # nothing ran


def test_baseline_proves_then_records_and_pgdbm_reports_up_to_date(adopted, tmp_path):
    with psycopg.connect(adopted.dsn, autocommit=True) as conn:
        result = migrate.baseline(conn, LLMEMORY, "002")
        assert result.message == "baselined 001…002 (schema matches)" and result.proven
        assert migrate.baseline(conn, LLMEMORY, "002").message.startswith("baseline 002: module 'llmemory' has a "
                                                                           "history already")  # a no-op
    files = {m.filename: m.checksum for m in load(LLMEMORY.migrations_dir)}
    assert adopted.history("llmemory.schema_migrations", "llmemory") == sorted(files.items())
    outcome = asyncio.run(pgdbm_apply(dbs.url(adopted.dsn), LLMEMORY.migrations_dir, "llmemory", "llmemory"))
    assert outcome["status"] == "up_to_date"
    # a later file applies normally
    folder = write(tmp_path / "m", {name: (LLMEMORY.package.folder / name).read_text() for name in files})
    write(folder, {"003_tags.sql": "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n"})
    later = Settings(folder, schema="llmemory", module_name="llmemory", history_table="llmemory.schema_migrations")
    with psycopg.connect(adopted.dsn, autocommit=True) as conn:
        assert migrate.apply(conn, later).applied == ["003_tags.sql"]


def test_baseline_through_apply_settings(adopted):
    with psycopg.connect(adopted.dsn, autocommit=True) as conn:
        events = Collected()
        result = migrate.apply(conn, LLMEMORY.replace(baseline="002"), on_event=events)
    assert result.applied == [] and result.baselined == ["001_complete_schema.sql",
                                                         "002_upsert_identity_contract.sql"]
    assert [e.text for e in events if e.kind == "baseline"] == ["baselined 001…002 (schema matches)"]


def test_a_dropped_column_refuses_the_baseline_naming_it(adopted):
    adopted.sql("ALTER TABLE llmemory.documents DROP COLUMN document_date")
    with psycopg.connect(adopted.dsn, autocommit=True) as conn, pytest.raises(BaselineMismatchError) as info:
        migrate.baseline(conn, LLMEMORY, "002")
    assert "column llmemory.documents.document_date: missing" in str(info.value)
    assert "nothing was recorded" in str(info.value)
    assert adopted.sql("SELECT to_regclass('llmemory.schema_migrations')") == [(None,)]
    with psycopg.connect(adopted.dsn, autocommit=True) as conn:  # trusted: recorded, and said loudly
        result = migrate.baseline(conn, LLMEMORY, "002", trust=True)
    assert "TRUSTED WITHOUT PROOF" in result.message and not result.proven


def test_baseline_at_an_earlier_version_sees_the_later_objects(adopted):
    with psycopg.connect(adopted.dsn, autocommit=True) as conn, pytest.raises(BaselineMismatchError) as info:
        migrate.baseline(conn, LLMEMORY, "001")
    assert "constraint llmemory.documents.uq_documents_owner_id_at_origin: added" in str(info.value)


def test_an_unknown_version_is_an_error(adopted):
    with psycopg.connect(adopted.dsn, autocommit=True) as conn, pytest.raises(MigrationError) as info:
        migrate.baseline(conn, LLMEMORY, "007")
    assert "No migration file has version '007'" in str(info.value)


def test_the_proof_leaves_nothing_behind_and_locks_nothing_live(adopted):
    """While the proof runs, another session writes to a live table; the proof's locks are on its scratch schema
    only, and afterwards no scratch schema and no history row are left."""
    stop, errors, seen_locks = threading.Event(), [], []

    def writer():
        with adopted.connect() as conn:
            while not stop.is_set():
                try:
                    conn.execute("INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, "
                                 "document_name) VALUES ('w', gen_random_uuid()::text, 'text', 'n')")
                except psycopg.Error as exc:
                    errors.append(exc)
                time.sleep(0.005)

    def watcher(pid):
        with adopted.connect() as conn:
            while not stop.is_set():
                seen_locks.extend(conn.execute(
                    "SELECT c.relnamespace::regnamespace::text, l.mode FROM pg_locks l JOIN pg_class c "
                    "ON c.oid = l.relation WHERE l.pid = %s AND c.relnamespace = 'llmemory'::regnamespace",
                    (pid,)).fetchall())
                time.sleep(0.002)

    with psycopg.connect(adopted.dsn, autocommit=True) as conn:
        threads = [threading.Thread(target=writer), threading.Thread(target=watcher, args=(conn.info.backend_pid,))]
        [t.start() for t in threads]
        try:
            started = time.monotonic()
            differences = migrate.adoption.prove(conn, LLMEMORY, load(LLMEMORY.migrations_dir))
            seconds = time.monotonic() - started
        finally:
            stop.set()
            [t.join() for t in threads]
    assert differences == [] and errors == []
    assert seen_locks == []  # no lock of the proof on any live table of the schema
    assert adopted.sql("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'llmdb_scratch_%'") == [(0,)]
    assert adopted.sql("SELECT to_regclass('llmemory.schema_migrations')") == [(None,)]
    assert seconds < 5


def test_copy_history_from_another_module_name_once(db, tmp_path):
    folder = write(tmp_path / "m", {"001_a.sql": "CREATE TABLE {{tables.a}} (id int);\n",
                                    "002_b.sql": "CREATE TABLE {{tables.b}} (id int);\n"})
    db.sql("CREATE SCHEMA app")
    asyncio.run(pgdbm_apply(dbs.url(db.dsn), folder, "app", "old_name"))  # pgdbm, under another module name
    target = Settings(folder, schema="app", module_name="new_name", history_table="app.schema_migrations")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        with pytest.raises(UnknownSchemaError):  # without its history, the module's tables are unknown
            migrate.apply(conn, target)
        assert migrate.copy_history(conn, target, from_module="old_name") == ["001_a.sql", "002_b.sql"]
        assert migrate.copy_history(conn, target, from_module="old_name") == []  # run twice: one copy
        assert migrate.apply(conn, target).applied == []
    assert [r[0] for r in db.history("app.schema_migrations", "new_name")] == ["001_a.sql", "002_b.sql"]
    write(folder, {"002_b.sql": "CREATE TABLE {{tables.b}} (id bigint);\n"})
    with psycopg.connect(db.dsn, autocommit=True) as conn, pytest.raises(MigrationError) as info:
        migrate.copy_history(conn, target.replace(module_name="third"), from_module="old_name")
    assert "002_b.sql was recorded with checksum" in str(info.value) and "nothing was copied" in str(info.value)
