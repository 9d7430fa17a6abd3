"""The real llmemory across its 0.4.0 -> 0.5.0 upgrade (issue 25), each release in its own venv
(`make app-venv`, `make app-venv-0.4.0`; tests/llmemory_app/upgrade.py), on one database, with the engine's command
line standing in for `pulumi up`. It pins down what the upgrade has to solve, measured with the real applications:

- llmemory 0.4.0's start-up pgdbm accepts a schema the engine deployed from 0.4.0's files, and its add_document
  stores two documents with the same (owner_id, id_at_origin);
- 0.5.0's start-up pgdbm refuses that database: 001_complete_schema.sql was edited by the release;
- with the new checksum recorded (what issue 25's verified acceptance will do; by hand here), pgdbm itself would
  apply 002 at start-up and fail on the duplicate key, rolling back;
- with the duplicate removed and 002 applied by the engine, 0.5.0 starts (its pgdbm finds the history up to date),
  reads the 0.4.0 documents and upserts one.

The end-to-end test through Pulumi (issue 25) uses the same venvs and modes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmemory_db.migrate.files import checksum
from tests.helpers import db as dbs
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

VENVS = {"0.4.0": ROOT / ".state" / "llmemory-app-0.4.0-venv", "0.5.0": ROOT / ".state" / "llmemory-app-venv"}
UPGRADE = ROOT / "tests" / "llmemory_app" / "upgrade.py"
SCHEMA = "lm"
HISTORY = f"{SCHEMA}.schema_migrations"
# pgdbm's checksum (SHA-256 of the text, CRLF -> LF, stripped) of each release's files: the engine's is the same
CHECKSUMS = {
    "0.4.0": {"001_complete_schema.sql": "8065b5211c7d7b832785cd748f0067f205aa87a73ce95325e3b95b5f2908163c"},
    "0.5.0": {"001_complete_schema.sql": "47f45382bbbf0828c5c2487d2cdb501556a7bdddb4b725bdd6f6ba1be14a6cd8",
              "002_upsert_identity_contract.sql": "db5f03813c2d5ac3f33ac70e8b5e70e5667d3ae9d3c3d0e4c864186bdbc18b53"},
}


def migrations_of(release: str) -> Path:
    found = sorted(VENVS[release].glob("lib/python*/site-packages/llmemory/migrations"))
    if not found:
        pytest.fail(f"llmemory {release}'s virtualenv is missing: run `make app-venv app-venv-0.4.0` (make test does)")
    return found[0]


def app(release: str, mode: str, db, tmp_path) -> dict:
    out = subprocess.run([str(VENVS[release] / "bin" / "python"), str(UPGRADE), mode, dbs.url(db.dsn), SCHEMA],
                         capture_output=True, text=True, timeout=180,
                         env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken")})
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    return json.loads(lines[-1])


def engine_apply(db, release: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmemory_db.migrate", "apply", "--dsn", db.dsn,
                           "--dir", str(migrations_of(release)), "--schema", SCHEMA, "--module", "llmemory",
                           "--history-table", HISTORY], capture_output=True, text=True, cwd=ROOT, timeout=300)


def history(db):
    return db.history(HISTORY, "llmemory")


def test_each_release_ships_the_files_and_checksums_written_down():
    for release, sums in CHECKSUMS.items():
        files = migrations_of(release)
        assert {p.name: checksum(p.read_text(encoding="utf-8")) for p in files.glob("*.sql")} == sums


def test_llmemory_0_4_0_data_across_the_upgrade_to_0_5_0(db, tmp_path):
    db.sql("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    db.sql(f"CREATE SCHEMA {SCHEMA}")
    deployed = engine_apply(db, "0.4.0")
    assert deployed.returncode == 0, deployed.stderr
    assert history(db) == list(CHECKSUMS["0.4.0"].items())

    # 0.4.0's own API: its pgdbm finds the history up to date; it stores the same key twice
    seeded = app("0.4.0", "seed", db, tmp_path)
    assert "error" not in seeded, seeded
    assert seeded["llmemory"] == "0.4.0" and seeded["listed"] == ["dup-1", "dup-1", "kept-1"]
    assert history(db) == list(CHECKSUMS["0.4.0"].items())
    assert db.sql(f"SELECT owner_id, id_at_origin, count(*) FROM {SCHEMA}.documents GROUP BY 1, 2 "
                  "HAVING count(*) > 1") == [("upgrader", "dup-1", 2)]

    # 0.5.0 on it as it is: its start-up pgdbm refuses the edited 001, before anything runs
    refused = app("0.5.0", "continue", db, tmp_path)
    assert "Migration '001_complete_schema.sql' has been modified after being applied" in refused["error"]
    assert CHECKSUMS["0.4.0"]["001_complete_schema.sql"] in refused["error"]
    assert CHECKSUMS["0.5.0"]["001_complete_schema.sql"] in refused["error"]
    assert history(db) == list(CHECKSUMS["0.4.0"].items())

    # the new checksum recorded (issue 25's verified acceptance will do this; by hand here): 0.5.0's pgdbm would
    # then apply 002 itself, and the duplicate makes it fail; its transaction rolls back
    db.sql(f"UPDATE {HISTORY} SET checksum = %s WHERE filename = '001_complete_schema.sql'",
           CHECKSUMS["0.5.0"]["001_complete_schema.sql"])
    failed = app("0.5.0", "continue", db, tmp_path)
    assert "002_upsert_identity_contract.sql" in failed["error"]
    assert "Key (owner_id, id_at_origin)=(upgrader, dup-1) is duplicated" in failed["error"]
    assert [row[0] for row in history(db)] == ["001_complete_schema.sql"]
    assert db.sql("SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexname = 'idx_documents_owner_origin'",
                  SCHEMA) == [(1,)]

    # the duplicate removed, the engine applies 002; 0.5.0 starts, reads 0.4.0's documents and upserts one
    db.sql(f"DELETE FROM {SCHEMA}.documents WHERE document_name = 'dup-v1.md'")
    applied = engine_apply(db, "0.5.0")
    assert applied.returncode == 0, applied.stderr
    assert history(db) == sorted(CHECKSUMS["0.5.0"].items())
    resumed = app("0.5.0", "continue", db, tmp_path)
    assert "error" not in resumed, resumed
    assert resumed["llmemory"] == "0.5.0" and resumed["listed"] == ["dup-1", "kept-1"]
    assert resumed["search_text"] == ["Otters hold hands while they sleep so they do not drift apart."]
    assert resumed["upsert_kept_id"] is True and resumed["kept_name_after"] == "kept-v2.md"
    assert resumed["listed_after"] == ["dup-1", "kept-1"]
    assert history(db) == sorted(CHECKSUMS["0.5.0"].items())  # nothing recorded twice, nothing applied by the app
    assert db.sql("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'u'",
                  f"{SCHEMA}.documents") == [("uq_documents_owner_id_at_origin",)]
