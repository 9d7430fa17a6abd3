"""llmemory 0.5.0's real 002_upsert_identity_contract.sql on a live 0.4-era schema: the risk analysis sees the
statements inside its DO blocks (with the live size of documents), and the data preflight finds the duplicate
(owner_id, id_at_origin) group that will make it fail, through the command line's ``plan --json``."""
import json
import shutil
import subprocess
import sys

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from llmemory_db.migrate.source import find_package
from tests.helpers import ROOT

ROWS = 300_000


def cli(*args):
    return subprocess.run([sys.executable, "-m", "llmemory_db.migrate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture
def lm(db, tmp_path):
    """Schema lm at llmemory 0.5.0's 001 (recorded under pgdbm's layout), documents holding 300,000 rows."""
    package = find_package("llmemory")
    if not (package.folder / "002_upsert_identity_contract.sql").exists():
        pytest.skip("the installed llmemory has no 002_upsert_identity_contract.sql (0.5.0 is pinned)")
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(package.folder / "001_complete_schema.sql", first)
    db.sql("CREATE SCHEMA lm")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        migrate.apply(conn, Settings(first, schema="lm", module_name="llmemory",
                                     history_table="lm.schema_migrations"))
    db.sql(f"INSERT INTO lm.documents (owner_id, id_at_origin, document_type, document_name) "
           f"SELECT 'owner-' || (g % 100), 'doc-' || g, 'text', 'n' || g FROM generate_series(1, {ROWS}) g; "
           "ANALYZE lm.documents")
    return db


def plan(db):
    result = cli("plan", "--dsn", db.dsn, "--package", "llmemory", "--schema", "lm", "--json")
    assert result.returncode in (0, 1), result.stderr
    return result, json.loads(result.stdout)


def test_002_lock_findings_inside_its_do_blocks_name_documents_and_its_live_size(lm):
    result, out = plan(lm)
    assert out["pending"] == ["002_upsert_identity_contract.sql"] and result.returncode == 0, result.stdout
    on_documents = [f for f in out["findings"] if f["table"] == "lm.documents"]
    by_rule = {f["rule"]: f for f in on_documents}
    unique = by_rule["disallowed-unique-constraint"]
    assert (unique["file"], unique["line"], unique["severity"]) == ("002_upsert_identity_contract.sql", 26, "warning")
    assert unique["context"] == "inside the DO block at line 23"
    assert 250_000 < unique["rows_estimate"] < 350_000 and unique["bytes"] > 10_000_000
    drop = by_rule["require-concurrent-index-deletion"]  # DROP INDEX idx_documents_owner_origin: its table
    assert (drop["line"], drop["context"]) == (15, "inside the DO block at line 12")
    assert drop["rows_estimate"] == unique["rows_estimate"]
    clean = by_rule["unique-violation"]  # the data preflight ran and found no duplicate
    assert (clean["severity"], clean["violations"], clean["line"]) == ("info", 0, 25)
    text = cli("plan", "--dsn", lm.dsn, "--package", "llmemory", "--schema", "lm").stdout
    assert "002_upsert_identity_contract.sql:26 disallowed-unique-constraint: ADD UNIQUE on lm.documents (~300k " \
           "rows" in text and "inside the DO block at line 23:" in text


def test_002_a_duplicate_identity_is_an_error_naming_the_group_and_the_query(lm):
    lm.sql("INSERT INTO lm.documents (owner_id, id_at_origin, document_type, document_name) "
           "VALUES ('owner-7', 'doc-7', 'text', 'again'); ANALYZE lm.documents")
    result, out = plan(lm)
    assert result.returncode == 1
    [violation] = [f for f in out["findings"] if f["rule"] == "unique-violation"]
    assert (violation["file"], violation["line"], violation["table"], violation["severity"],
            violation["violations"]) == ("002_upsert_identity_contract.sql", 25, "lm.documents", "error", 1)
    assert violation["examples"] == [{"key": {"owner_id": "owner-7", "id_at_origin": "doc-7"}, "rows": 2}]
    assert violation["query"] == (
        'SELECT "src"."owner_id", "src"."id_at_origin", count(*) AS rows FROM "lm"."documents" AS src WHERE '
        '"src"."owner_id" IS NOT NULL AND "src"."id_at_origin" IS NOT NULL GROUP BY "src"."owner_id", '
        '"src"."id_at_origin" HAVING count(*) > 1 ORDER BY count(*) DESC')
    with psycopg.connect(lm.dsn) as conn:
        assert conn.execute(violation["query"]).fetchall() == [("owner-7", "doc-7", 2)]
    assert "002_upsert_identity_contract.sql:25 ADD CONSTRAINT uq_documents_owner_id_at_origin UNIQUE (owner_id, " \
           "id_at_origin) will fail on lm.documents inside the DO block at line 23: 1 duplicate (owner_id, " \
           "id_at_origin) group(s) (2 rows), e.g. (owner_id, id_at_origin)=(owner-7, doc-7) x2" in out["error"]
    assert "the data must change" in out["error"] and "list them: SELECT" in out["error"]
