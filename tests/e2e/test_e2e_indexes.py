"""Concurrent index builds through `pulumi up` (issue 20): progress lines while the build runs, and an INVALID index
made by hand reported as drift by `pulumi preview --refresh`, with the SQL that rebuilds it."""
import pytest

from tests.helpers import stacks as h

PROGRAM = """
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs
db = MigratedSchema("db", MigratedSchemaArgs(schema="app", extensions=[]))
pulumi.export("applied", db.applied)
"""
FILES = {"001_big.sql": "CREATE TABLE {{tables.big}} (id bigint PRIMARY KEY, t text);\n"}
CIC = ("-- pgdbm:no-transaction\n"
       "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_big_t ON {{tables.big}} (t);\n")



def test_a_concurrent_build_reports_progress_and_an_invalid_index_is_drift(pg_server, bare_db, tmp_path):
    project = h.write_project(tmp_path / "proj", PROGRAM, FILES)
    # a short progress interval for the test (the default: first after 5 s, then every 10 s)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name,
                    env={"LLMEMORY_DB_PROGRESS_INTERVAL": "0.2"})
    result, text = h.run(stack.up)
    assert result is not None, text
    bare_db.sql("INSERT INTO app.big SELECT g, md5(g::text) FROM generate_series(1, 600000) g; ANALYZE app.big")

    (project / "migrations" / "002_index.sql").write_text(CIC)
    result, text = h.run(stack.up)
    assert result is not None, text
    progress = [line for line in text.splitlines() if "progress: 002_index.sql:2" in line]
    assert progress and "phase:" in progress[0], text
    assert bare_db.sql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'app.idx_big_t'::regclass") == [(True,)]

    # an INVALID index made by hand (a failed UNIQUE build): a refresh names it, with the SQL that rebuilds it
    bare_db.sql("INSERT INTO app.big VALUES (-1, 'same'), (-2, 'same')")
    with bare_db.connect() as conn:
        with pytest.raises(Exception, match="could not create unique index"):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_by_hand ON app.big (t)")
    result, text = h.run(stack.preview, refresh=True)  # (not --diff: it leaves the provider's lines out)
    assert "index app.idx_by_hand on app.big: INVALID" in text, text
    assert "DROP INDEX CONCURRENTLY IF EXISTS \"app\".\"idx_by_hand\"; CREATE UNIQUE INDEX CONCURRENTLY" in text
    # printed once, although a preview with --refresh diffs twice (the CLI's live lines repeat it as it goes)
    assert text.split("Diagnostics:")[1].count("rebuild: DROP INDEX CONCURRENTLY") == 1
    assert "[diff: -drift]" in text and "Traceback" not in text  # the diff names the drift
