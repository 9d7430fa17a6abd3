"""Fleets of tenant schemas (the engine's fan-out): per-tenant histories in pgdbm's layout, a bounded pool, the
canary, on_error, pgdbm-compatible locking that lets tenants migrate in parallel, and bad input."""
import asyncio
import threading
import time

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import MigrationError, Settings
from llmemory_db.migrate.fleet import FleetSettings, Tenant, apply_fleet
from llmemory_db.migrate.fleet_state import fingerprint, inspect_fleet
from llmemory_db.migrate.objects import ManagedObjects
from tests.helpers import db as dbs
from tests.helpers import write
from tests.helpers.pgdbm import pgdbm_apply

FILES = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                         "body text);\nCREATE INDEX idx_docs_body ON {{tables.docs}} (body);\n",
         "002_tags.sql": "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n",
         "003_slow.sql": "SELECT pg_sleep(0.05);\n"}


def fleet(folder, **kwargs):
    return FleetSettings(Settings(folder, module_name="memory"), **kwargs)


def tenants(n, prefix="t"):
    return [Tenant(f"{prefix}{i:03d}") for i in range(n)]


def run(db, settings, targets, events=None):
    return apply_fleet(settings, targets, lambda _key: migrate.connect(db.dsn),
                       on_event=(lambda e: events.append(e.text)) if events is not None else (lambda _: None))


class Sessions:
    """Samples how many sessions of the engine are connected while the fleet runs."""

    def __init__(self, db):
        self.db, self.peak, self._stop = db, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        with self.db.connect() as conn:
            while not self._stop.is_set():
                count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND application_name LIKE 'llmemory-db-%'").fetchone()[0]
                self.peak = max(self.peak, count)
                time.sleep(0.005)

    def stop(self):
        self._stop.set()
        self.thread.join()
        return self.peak


def test_every_tenant_gets_its_schema_history_and_files_with_a_bounded_pool(db, tmp_path):
    folder = write(tmp_path / "m", FILES)
    sessions = Sessions(db)
    result = run(db, fleet(folder, max_parallel=3), tenants(12))
    assert sessions.stop() <= 3 + 1
    assert result.summary() == "12 tenants: 12 up to date" and result.failed == []
    for i in (0, 7, 11):
        schema = f"t{i:03d}"
        assert db.tables(schema) == ["docs", "schema_migrations", "tags"]
        assert [r[0] for r in db.history(f"{schema}.schema_migrations", "memory")] == sorted(FILES)
    # pgdbm on one tenant (its schema mode: <schema>.schema_migrations) finds nothing to do
    assert asyncio.run(pgdbm_apply(dbs.url(db.dsn), folder, "t005", "memory"))["status"] == "up_to_date"
    # a new file: every tenant gets exactly it; a second run has nothing to do
    write(folder, {"004_more.sql": "ALTER TABLE {{tables.tags}} ADD COLUMN note text;\n"})
    again = run(db, fleet(folder, max_parallel=3), tenants(12))
    assert {t.schema: t.applied for t in again.tenants.values()} == {f"t{i:03d}": ["004_more.sql"] for i in range(12)}
    assert all(not t.applied for t in run(db, fleet(folder), tenants(12)).tenants.values())


def test_a_schema_holding_the_modules_objects_without_history_is_refused(db, tmp_path):
    folder = write(tmp_path / "m", FILES)
    db.sql("CREATE SCHEMA t001; CREATE TABLE t001.tags (x int)")
    result = run(db, fleet(folder, canary=0, on_error="continue"), tenants(3))
    assert [t.schema for t in result.failed] == ["t001"]
    assert "already holds objects of module 'memory' but has no history" in result.failed[0].error["message"]


def at_001_then_conflict(db, tmp_path, schema, count):
    folder = write(tmp_path / "m", {"001_docs.sql": FILES["001_docs.sql"]})
    run(db, fleet(folder), tenants(count))
    db.sql(f"CREATE TABLE {schema}.tags (x int)")  # a hand-made table in that tenant only: its 002 fails
    return write(folder, {"002_tags.sql": FILES["002_tags.sql"], "003_slow.sql": FILES["003_slow.sql"]})


def test_long_files_keep_the_bound_the_lock_watches_share_one_connection(db, tmp_path):
    """A file running longer than the lock watch's delay makes every worker's watch look for blockers: they share
    one connection, so the fleet stays within max_parallel + 1 sessions."""
    folder = write(tmp_path / "m", {"000_init.sql": "SELECT 1;\n"})
    run(db, fleet(folder, canary=0), tenants(8))  # tenants with a history: one transaction (and watch) per file
    write(folder, {"001_slow.sql": "CREATE TABLE {{tables.a}} (id int);\nSELECT pg_sleep(0.8);\n"})
    sessions = Sessions(db)
    result = run(db, fleet(folder, max_parallel=4, canary=0), tenants(8))
    peak = sessions.stop()
    assert result.failed == [] and 4 < peak <= 4 + 1  # the watches' one connection was there, and only one


def test_a_failed_canary_stops_everything(db, tmp_path):
    folder = at_001_then_conflict(db, tmp_path, "t000", 5)
    events = []
    result = run(db, fleet(folder, canary=1, on_error="continue"), tenants(5), events)
    assert [t.schema for t in result.failed] == ["t000"]
    assert result.failed[0].error["file"] == "002_tags.sql" and "already exists" in result.failed[0].error["message"]
    assert sorted(result.skipped) == ["t001", "t002", "t003", "t004"]
    assert "canary t000: failed: nothing else runs" in events
    assert [r[0] for r in db.history("t004.schema_migrations", "memory")] == ["001_docs.sql"]


def test_continue_applies_every_other_tenant_and_the_next_run_retries_only_the_failed(db, tmp_path):
    folder = at_001_then_conflict(db, tmp_path, "t003", 8)
    result = run(db, fleet(folder, max_parallel=2, on_error="continue"), tenants(8))
    assert [t.schema for t in result.failed] == ["t003"] and result.skipped == []
    assert result.summary() == "8 tenants: 7 up to date, 1 failed"
    assert result.tenants["t003"].error["file"] == "002_tags.sql"
    assert [r[0] for r in db.history("t003.schema_migrations", "memory")] == ["001_docs.sql"]  # whole files only
    db.sql("DROP TABLE t003.tags")
    again = run(db, fleet(folder, on_error="continue"), tenants(8))
    assert {k: t.applied for k, t in again.tenants.items() if t.applied} == {"t003": ["002_tags.sql", "003_slow.sql"]}


def test_stop_starts_no_new_tenant_after_a_failure(db, tmp_path):
    folder = at_001_then_conflict(db, tmp_path, "t002", 6)
    result = run(db, fleet(folder, max_parallel=1, on_error="stop"), tenants(6))
    assert [t.schema for t in result.failed] == ["t002"]
    assert sorted(result.skipped) == ["t003", "t004", "t005"]
    assert [t.schema for t in result.tenants.values() if not t.pending and not t.error] == ["t000", "t001"]


def test_tenants_migrate_in_parallel_while_pgdbm_on_any_tenant_is_excluded(db, tmp_path):
    """pgdbm's module key is taken shared by the fleet: two tenants hold it at once; pgdbm's exclusive request waits
    for both; a shared request that comes after the queued exclusive one waits behind it (pgdbm is not starved)."""
    key = "hashtext('pgdbm_migration_' || 'memory')"
    a, b, pgdbm, late = (db.connect() for _ in range(4))
    try:
        for conn in (a, b):
            conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock_shared({key})")  # two tenants at once: both granted
        waiting = threading.Thread(target=lambda: pgdbm.execute(f"BEGIN; SELECT pg_advisory_xact_lock({key})"))
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive()  # pgdbm waits for the fleet
        late.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):  # a new tenant queues behind pgdbm
            late.execute(f"BEGIN; SELECT pg_advisory_xact_lock_shared({key})")
        late.execute("ROLLBACK")
        a.execute("COMMIT")
        b.execute("COMMIT")
        waiting.join(timeout=5)
        assert not waiting.is_alive()  # then pgdbm gets it
        pgdbm.execute("COMMIT")
    finally:
        for conn in (a, b, pgdbm, late):
            conn.close()


def test_the_real_pgdbm_racing_the_fleet_records_each_file_once(db, tmp_path):
    folder = write(tmp_path / "m", {f"{i:03d}_t{i}.sql": f"CREATE TABLE {{{{tables.t{i}}}}} (id int);\n"
                                    f"SELECT pg_sleep(0.02);\n" for i in range(1, 9)})
    targets = tenants(6)
    for tenant in targets:  # pgdbm creates its history table before it takes the lock: start from one
        db.sql(f"CREATE SCHEMA {tenant.schema}")
    run(db, fleet(write(tmp_path / "empty", {"000_init.sql": "SELECT 1;\n"})), targets)
    errors = []

    def pgdbm_on(schema):
        try:
            asyncio.run(pgdbm_apply(dbs.url(db.dsn), folder, schema, "memory"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    racers = [threading.Thread(target=pgdbm_on, args=(t.schema,)) for t in targets[:3]]
    [r.start() for r in racers]
    result = run(db, fleet(folder, max_parallel=3), targets)
    [r.join() for r in racers]
    assert errors == [] and result.failed == []
    for tenant in targets:
        rows = db.sql(f"SELECT filename, count(*) FROM {tenant.schema}.schema_migrations GROUP BY 1 ORDER BY 1")
        assert rows == [("000_init.sql", 1)] + [(f"{i:03d}_t{i}.sql", 1) for i in range(1, 9)], tenant


@pytest.mark.parametrize("targets,history,module,message", [
    ([Tenant("acme"), Tenant("bad-name")], None, "memory", "Invalid tenant schema ('bad-name')"),
    ([Tenant("acme"), Tenant("acme")], None, "memory", "Tenants listed more than once: acme"),
    ([Tenant("acme")], "public.schema_migrations", "memory", "their histories would collide"),
])
def test_bad_tenants_are_refused_naming_them(db, tmp_path, targets, history, module, message):
    folder = write(tmp_path / "m", FILES)
    with pytest.raises(MigrationError) as info:
        run(db, FleetSettings(Settings(folder, module_name=module), **(
            {"history_template": history} if history else {})), targets)
    assert message in str(info.value) and "Remedy:" in str(info.value)
    assert db.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'acme'") == [(0,)]


def test_an_applied_file_edited_is_named_once(db, tmp_path):
    folder = write(tmp_path / "m", FILES)
    run(db, fleet(folder), tenants(4))
    write(folder, {"002_tags.sql": "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY, x int);\n"})
    with pytest.raises(migrate.ChecksumMismatchError) as info:
        run(db, fleet(folder), tenants(4))
    assert str(info.value).count("has been modified after being applied") == 1


def test_the_fleets_fingerprint_factors_the_schema_out_and_covers_its_extensions(db, tmp_path):
    """Every tenant's objects under one fingerprint (schema names factored out, more tenants than re's cache of
    512 patterns is not needed to show it), the database's extensions included (their rows have no schema)."""
    folder = write(tmp_path / "m", FILES)
    settings = FleetSettings(Settings(folder, module_name="memory", extensions=("vector",)))
    run(db, settings, tenants(3))
    with migrate.connect(db.dsn) as conn:
        found = inspect_fleet(conn, settings, tenants(3), ManagedObjects())
    assert len(set(found.prints.values())) == 1 and list(found.maps) == [found.prints["t000"]]
    objects = found.maps[found.prints["t000"]]
    assert "extension vector" in objects and "index {schema}.idx_docs_body" in objects
    assert fingerprint(objects) == found.prints["t001"]
    db.sql("ALTER TABLE t002.docs ADD COLUMN extra int")  # one tenant differs: its own map is kept too
    with migrate.connect(db.dsn) as conn:
        found = inspect_fleet(conn, settings, tenants(3), ManagedObjects())
    assert found.prints["t000"] == found.prints["t001"] != found.prints["t002"] and len(found.maps) == 2
    assert "column {schema}.docs.extra" in found.maps[found.prints["t002"]]
