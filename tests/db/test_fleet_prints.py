"""The fleet's fingerprints digested in the database (one row per tenant) are the Python digests of the catalog
rows (``inspect_fleet``), byte for byte: same objects, same exclusions, the schema name factored out the same way."""
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings, fleet_prints
from llmemory_db.migrate.fleet import apply_fleet
from llmemory_db.migrate.fleet_settings import FleetSettings, Tenant
from llmemory_db.migrate.fleet_state import inspect_fleet
from llmemory_db.migrate.objects import ManagedObjects
from tests.helpers import write

FILES = {
    "001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigserial PRIMARY KEY, body text NOT NULL DEFAULT 'n.y', "
                    "tag text CHECK (tag <> 'a'), v vector(3));\n"
                    "CREATE INDEX idx_docs_body ON {{tables.docs}} (body);\n"
                    "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY, doc bigint REFERENCES {{tables.docs}}(id));\n",
    "002_code.sql": "CREATE VIEW {{tables.recent}} AS SELECT id, body FROM {{tables.docs}} WHERE id > 10;\n"
                    "CREATE FUNCTION {{tables.touch}}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                    "BEGIN PERFORM 1 FROM {{tables.tags}}; RETURN NEW; END $$;\n"
                    "CREATE TRIGGER docs_touch BEFORE INSERT ON {{tables.docs}} FOR EACH ROW "
                    "EXECUTE FUNCTION {{tables.touch}}();\n"
                    "CREATE SEQUENCE {{tables.counter}} INCREMENT 5;\n",
}
# names that are parts of each other and of other names, one needing quotes, one a prefix of a table's name
NAMES = ["t1", "t1t1", "T1", "docs", "x"]


def fleet(folder, extensions=("vector",)):
    return FleetSettings(Settings(folder, module_name="memory", extensions=extensions))


def both(conn, settings, tenants):
    python = inspect_fleet(conn, settings, tenants, ManagedObjects())
    database = fleet_prints.digests(conn, settings, tenants)
    return python, database


@pytest.fixture
def applied(db, tmp_path):
    folder = write(tmp_path / "m", FILES)
    settings = fleet(folder)
    tenants = [Tenant(n) for n in NAMES]
    result = apply_fleet(settings, tenants, lambda _key: migrate.connect(db.dsn))
    assert result.failed == []
    return settings, tenants


def test_the_database_digests_are_the_python_digests_and_factor_the_schema_out(db, applied):
    settings, tenants = applied
    with migrate.connect(db.dsn) as conn:
        python, database = both(conn, settings, tenants)
        maps = fleet_prints.objects_of(conn, settings, NAMES)
    assert database == python.prints
    assert len(set(database.values())) == 1  # every tenant alike: no schema name in any digest
    only = python.maps[database["t1"]]
    assert all(maps[name] == only for name in NAMES)
    assert "extension vector" in only and "index {schema}.idx_docs_body" in only and \
        "function {schema}.touch()" in only and "trigger {schema}.docs.docs_touch" in only and \
        "view {schema}.recent" in only and "sequence {schema}.counter" in only
    assert not any(name in key for key in only for name in ("t1", "T1"))


@pytest.mark.parametrize("change,key", [
    ("ALTER TABLE t1t1.docs ADD COLUMN extra int", "column {schema}.docs.extra"),
    ("ALTER TABLE t1t1.docs ALTER COLUMN body DROP DEFAULT", "column {schema}.docs.body"),
    ("DROP INDEX t1t1.idx_docs_body", "index {schema}.idx_docs_body"),
    ("CREATE OR REPLACE FUNCTION t1t1.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
     "function {schema}.touch()"),
    # the schema's own name in a definition stays factored out, another tenant's name does not
    ("CREATE OR REPLACE VIEW t1t1.recent AS SELECT id, body FROM t1.docs WHERE id > 10", "view {schema}.recent"),
])
def test_one_change_changes_exactly_that_tenants_digest(db, applied, change, key):
    settings, tenants = applied
    with migrate.connect(db.dsn) as conn:
        before = fleet_prints.digests(conn, settings, tenants)
        db.sql(change)
        python, after = both(conn, settings, tenants)
        changed = fleet_prints.objects_of(conn, settings, ["t1t1"])["t1t1"]
        same = fleet_prints.objects_of(conn, settings, ["t1"])["t1"]
    assert after == python.prints
    assert {n for n in NAMES if after[n] != before[n]} == {"t1t1"}
    assert changed == python.maps[after["t1t1"]]
    assert {k for k in set(changed) | set(same) if changed.get(k) != same.get(k)} == {key}


def test_the_engines_own_objects_and_extension_members_are_left_out(db, applied):
    settings, tenants = applied
    with migrate.connect(db.dsn) as conn:
        before = fleet_prints.digests(conn, settings, tenants)
        db.sql("CREATE TABLE t1.schema_migrations_inflight (x int); "
               "CREATE FUNCTION t1.llmemory_db_guard_x() RETURNS int LANGUAGE sql AS 'SELECT 1'; "
               "CREATE EXTENSION pgcrypto SCHEMA x")  # its functions are members of the extension
        python, after = both(conn, settings, tenants)
    assert after == before == python.prints


def test_a_definition_holding_the_helper_characters_takes_the_exact_pattern(db, applied):
    """\\x01 and \\x02 mark occurrences on the fast path: a definition that holds them itself is split with the
    per-schema pattern instead, with the same result as Python's."""
    settings, tenants = applied
    for schema in ("t1", '"T1"'):  # the characters themselves in the function's text
        db.sql(f"CREATE FUNCTION {schema}.odd() RETURNS text LANGUAGE sql AS $$ SELECT '\x01 {schema}.docs \x02' $$")
    assert db.sql("SELECT strpos(pg_get_functiondef('t1.odd()'::regprocedure), chr(1)) > 0") == [(True,)]
    with migrate.connect(db.dsn) as conn:
        python, database = both(conn, settings, tenants)
    assert database == python.prints and database["t1"] == database["T1"] != database["x"]


def test_schemas_without_objects_and_no_extensions(db, tmp_path):
    folder = write(tmp_path / "m", {"001.sql": "SELECT 1;\n"})
    settings = fleet(folder, extensions=())
    tenants = [Tenant("empty"), Tenant("missing")]
    db.sql("CREATE SCHEMA empty")
    with migrate.connect(db.dsn) as conn:
        python, database = both(conn, settings, tenants)
        assert fleet_prints.objects_of(conn, settings, ["empty"]) == {"empty": {}}
    assert database == python.prints and database["empty"] == database["missing"]


def test_canonical_and_representatives():
    prints = {"a": "p1", "b": "p2", "c": "p2", "d": "p1", "e": "p2"}
    assert fleet_prints.canonical(prints) == "p2" and fleet_prints.canonical({}) == ""
    assert fleet_prints.representatives(prints) == {"p1": "a", "p2": "b"}
