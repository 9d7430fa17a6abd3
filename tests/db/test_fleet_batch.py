"""A new tenant in one transaction and one round trip (``fleet_batch``): the same history rows pgdbm reads, each
file committed with its row, and on anything unexpected the usual one transaction per file, with the same result
and the same error as before."""
import asyncio

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from llmemory_db.migrate.fleet import apply_fleet
from llmemory_db.migrate.fleet_settings import FleetSettings, Tenant
from tests.helpers import db as dbs
from tests.helpers import write
from tests.helpers.pgdbm import pgdbm_apply

FILES = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigserial PRIMARY KEY, body text);\n"
                         "CREATE INDEX idx_docs_body ON {{tables.docs}} (body); -- a trailing comment",
         "002_tags.sql": "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY)",  # no semicolon
         "003_slow.sql": "SELECT pg_sleep(0.02);\n"}


def run(db, folder, names, **kwargs):
    settings = FleetSettings(Settings(folder, module_name="memory"), **kwargs)
    return apply_fleet(settings, [Tenant(n) for n in names], lambda _key: migrate.connect(db.dsn))


class RoundTrips:
    """Counts the statements' round trips the fleet's workers send (``execute`` calls), per tenant."""

    def __init__(self, monkeypatch):
        self.texts = []
        original = psycopg.Connection.execute

        def counting(conn, query, params=None, **kwargs):
            self.texts.append(query if isinstance(query, str) else query.as_string(conn))
            return original(conn, query, params, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", counting)

    def of(self, schema):
        return [t for t in self.texts if f'"{schema}"' in t or f"'{schema}'" in t]


def test_a_new_tenant_is_one_round_trip_with_the_rows_pgdbm_reads(db, tmp_path, monkeypatch):
    folder = write(tmp_path / "m", FILES)
    trips = RoundTrips(monkeypatch)
    result = run(db, folder, ["acme", "globex"])
    assert result.summary() == "2 tenants: 2 up to date"
    assert result.tenants["acme"].applied == sorted(FILES)
    sent = trips.of("globex")
    assert len(sent) == 1 and sent[0].count("COMMIT") == 1 and sent[0].count("INSERT INTO") == 1
    rows = db.sql("SELECT id, filename, checksum, module_name, version, execution_time_ms, applied_at "
                  "FROM globex.schema_migrations ORDER BY id")
    assert [r[1] for r in rows] == sorted(FILES) and {r[3] for r in rows} == {"memory"}
    assert [r[4] for r in rows] == ["001", "002", "003"] and all(r[5] >= 1 for r in rows)
    assert rows[2][5] >= 20  # 003 sleeps 20 ms: timed per file by the server
    assert [r[6] for r in rows] == sorted(r[6] for r in rows) and rows[0][6] < rows[2][6]
    assert {r[2] for r in rows} == {m.checksum for m in migrate.load(folder)}
    assert db.tables("globex") == ["docs", "schema_migrations", "tags"]
    assert asyncio.run(pgdbm_apply(dbs.url(db.dsn), folder, "globex", "memory"))["status"] == "up_to_date"
    # the next file for these (now known) tenants: one transaction per file, as always
    write(folder, {"004_note.sql": "ALTER TABLE {{tables.tags}} ADD COLUMN note text;\n"})
    trips.texts.clear()
    assert run(db, folder, ["acme", "globex"]).tenants["acme"].applied == ["004_note.sql"]
    assert any("pg_try_advisory_xact_lock" in t and "004_note.sql" in t for t in trips.of("acme"))


def test_a_failing_file_leaves_what_one_transaction_per_file_leaves_and_names_it(db, tmp_path):
    folder = write(tmp_path / "m", {**FILES, "002_tags.sql": "CREATE TABLE {{tables.tags}} (name text);\n"
                                                            "SELECT 1/0;\n"})
    result = run(db, folder, ["acme"], canary=0, on_error="continue")
    error = result.tenants["acme"].error
    assert error["file"] == "002_tags.sql" and error["line"] == 2 and "division by zero" in error["message"]
    assert [r[0] for r in db.history("acme.schema_migrations", "memory")] == ["001_docs.sql"]
    assert db.tables("acme") == ["docs", "schema_migrations"]


def test_files_that_cannot_share_a_transaction_run_one_per_file(db, tmp_path, monkeypatch):
    """A value added to an enum cannot be used before it commits: such files keep one transaction each."""
    folder = write(tmp_path / "m", {"001_type.sql": "CREATE TYPE {{tables.mood}} AS ENUM ('ok');\n",
                                    "002_add.sql": "ALTER TYPE {{tables.mood}} ADD VALUE 'sad';\n",
                                    "003_use.sql": "CREATE TABLE {{tables.t}} (m {{tables.mood}} DEFAULT 'sad');\n"})
    trips = RoundTrips(monkeypatch)
    result = run(db, folder, ["acme"])
    assert result.failed == [] and result.tenants["acme"].applied == ["001_type.sql", "002_add.sql", "003_use.sql"]
    assert sum("INSERT INTO" in t for t in trips.of("acme")) == 3


def test_a_history_written_meanwhile_by_another_applier_is_replanned_file_by_file(db, tmp_path):
    """Between the fleet's read and its set-up, pgdbm created the tenant's history and applied 001: the batch sees
    a non-empty history under the lock, and the usual path applies the rest, each file once."""
    folder = write(tmp_path / "m", FILES)
    from llmemory_db.migrate import fleet as fleet_mod
    real = fleet_mod.read_fleet

    def read_then_pgdbm(conn, settings, tenants, objects):
        states = real(conn, settings, tenants, objects)
        db.sql("CREATE SCHEMA acme")
        asyncio.run(pgdbm_apply(dbs.url(db.dsn), write(tmp_path / "first", {"001_docs.sql": FILES["001_docs.sql"]}),
                                "acme", "memory"))
        return states

    fleet_mod.read_fleet = read_then_pgdbm
    try:
        result = run(db, folder, ["acme"])
    finally:
        fleet_mod.read_fleet = real
    assert result.failed == [] and result.tenants["acme"].applied == ["002_tags.sql", "003_slow.sql"]
    assert db.sql("SELECT filename, count(*) FROM acme.schema_migrations GROUP BY 1 ORDER BY 1") == [
        (name, 1) for name in sorted(FILES)]


@pytest.mark.parametrize("statement", ["SET LOCAL statement_timeout = '5s';", "RESET search_path;",
                                       "SET CONSTRAINTS ALL DEFERRED;", "DISCARD TEMP;"])
def test_settings_in_a_file_keep_it_in_a_transaction_of_its_own(tmp_path, statement):
    from llmemory_db.migrate import fleet_batch
    folder = write(tmp_path / "m", {"001.sql": "CREATE TABLE {{tables.a}} (id int);\n",
                                    "002.sql": statement + "\nCREATE TABLE {{tables.b}} (id int);\n"})
    assert fleet_batch.batchable(migrate.load(folder), "acme") is False
    assert fleet_batch.batchable(migrate.load(folder)[:1], "acme") is True
