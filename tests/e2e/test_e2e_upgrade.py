"""Upgrading llmemory on a live database with `pulumi up` (issue 25): the real 0.4.0 and 0.5.0 applications, each in
its own venv, and the infra program seeing first 0.4.0's package, then 0.5.0's (as a `pip install -U` of the infra
venv would):

- 0.4.0 deployed with migrations_package="llmemory"; its API stores two documents under one (owner_id, id_at_origin);
- with 0.5.0, one `pulumi preview` shows the edited 001 and its proof (comments only: accepted by default for a
  package), the lock risk of 002's ADD CONSTRAINT ... UNIQUE (inside a DO block) on lm.documents with its live size,
  and the duplicate group that would make 002 fail - and refuses;
- the duplicate removed, `pulumi up` records 001's new checksum (an audit row keeps the old one) and applies 002;
- 0.5.0's own API: initialize() (its pgdbm finds the history up to date), reads the 0.4.0 documents, upserts one;
  nothing recorded twice; `preview --refresh` shows no change."""
import json
import os
import shutil
import subprocess

import pytest

from tests.helpers import ROOT
from tests.helpers import db as dbs
from tests.helpers import stacks as h

VENVS = {"0.4.0": ROOT / ".state" / "llmemory-app-0.4.0-venv", "0.5.0": ROOT / ".state" / "llmemory-app-venv"}
UPGRADE = ROOT / "tests" / "llmemory_app" / "upgrade.py"
SCHEMA = "lm"
PROGRAM = """
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs

memory = MigratedSchema("memory", MigratedSchemaArgs(schema="lm", migrations_package="llmemory",
                                                     extensions=["vector", "pgcrypto"]))
pulumi.export("applied", memory.applied)
pulumi.export("package_version", memory.package_version)
"""


def site_of(release: str, into) -> str:
    """A folder holding only llmemory ``release`` (package and dist-info), first on the infra program's path."""
    found = sorted(VENVS[release].glob("lib/python*/site-packages"))
    if not found:
        pytest.fail(f"llmemory {release}'s virtualenv is missing: run `make app-venv app-venv-0.4.0` (make test does)")
    target = into / f"site-{release}"
    if not target.exists():
        shutil.copytree(found[0] / "llmemory", target / "llmemory")
        shutil.copytree(next(found[0].glob(f"llmemory-{release}.dist-info")), target / f"llmemory-{release}.dist-info")
    return str(target)


def app(release: str, mode: str, db, tmp_path) -> dict:
    out = subprocess.run([str(VENVS[release] / "bin" / "python"), str(UPGRADE), mode, dbs.url(db.dsn), SCHEMA],
                         capture_output=True, text=True, timeout=180,
                         env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken")})
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    return json.loads(lines[-1])



def test_llmemory_0_4_0_to_0_5_0_with_pulumi(pg_server, bare_db, tmp_path):
    project = h.write_project(tmp_path / "proj", PROGRAM)

    def stack(release):
        return h.stack(project, tmp_path / "backend", pg_server, bare_db.name,
                       env={"PYTHONPATH": site_of(release, tmp_path)})

    # 0.4.0: deployed from its package, then its own API stores the same key twice
    result, text = h.run(stack("0.4.0").up)
    assert result is not None, text
    assert result.outputs["package_version"].value == "llmemory 0.4.0"
    history = bare_db.history(f"{SCHEMA}.schema_migrations", "llmemory")
    assert [name for name, _ in history] == ["001_complete_schema.sql"]
    seeded = app("0.4.0", "seed", bare_db, tmp_path)
    assert "error" not in seeded and seeded["listed"] == ["dup-1", "dup-1", "kept-1"], seeded

    # 0.5.0 in the infra venv: one preview says all three things, and refuses
    upgraded = stack("0.5.0")
    result, text = h.run(upgraded.preview)
    assert result is None
    # 1. the edited 001, both checksums, its proof: comments only, accepted (a package's default)
    assert "001_complete_schema.sql: edited after it was applied (recorded checksum 8065b5211c7d…, file " \
           "47f45382bbbf…)" in text
    assert "comments only: comment on index lm.idx_documents_owner_origin: changed; comment on table lm.documents: " \
           "changed" in text, text
    assert "the verified edit is accepted" in text
    # 2. 002's lock risk inside the DO block, on lm.documents with its live size
    assert "002_upsert_identity_contract.sql:" in text and "inside the DO block at line" in text
    assert "on lm.documents (~" in text or "on lm.documents (rows not estimated" in text, text
    # 3. the duplicate group that would make 002 fail, with the query that lists it
    assert "(owner_id, id_at_origin)=(upgrader, dup-1) x2" in text, text
    assert "the data must change, not the statement" in text and "Traceback" not in text
    assert bare_db.history(f"{SCHEMA}.schema_migrations", "llmemory") == history  # nothing ran

    # the duplicate removed: up records the edit and applies 002
    bare_db.sql(f"DELETE FROM {SCHEMA}.documents WHERE document_name = 'dup-v1.md'")
    result, text = h.run(upgraded.up)
    assert result is not None, text
    assert result.outputs["package_version"].value == "llmemory 0.5.0"
    assert result.outputs["applied"].value == ["001_complete_schema.sql", "002_upsert_identity_contract.sql"]
    after = bare_db.history(f"{SCHEMA}.schema_migrations", "llmemory")
    assert [name for name, _ in after] == ["001_complete_schema.sql", "002_upsert_identity_contract.sql"]
    assert after[0][1].startswith("47f45382bbbf")
    [audit] = bare_db.sql(f"SELECT filename, left(old_checksum, 12), left(new_checksum, 12), reason "
                          f"FROM {SCHEMA}.schema_migrations_edits")
    assert audit[:3] == ("001_complete_schema.sql", "8065b5211c7d", "47f45382bbbf")
    assert audit[3].startswith("proof: comments only: comment on index lm.idx_documents_owner_origin: changed")

    # 0.5.0's own API on it: its pgdbm finds the history up to date; the 0.4.0 documents are there; upsert works
    resumed = app("0.5.0", "continue", bare_db, tmp_path)
    assert "error" not in resumed, resumed
    assert resumed["listed"] == ["dup-1", "kept-1"] and resumed["upsert_kept_id"] is True
    assert bare_db.history(f"{SCHEMA}.schema_migrations", "llmemory") == after  # nothing recorded twice

    result, text = h.run(upgraded.preview, refresh=True, expect_no_changes=True)
    assert result is not None, text
