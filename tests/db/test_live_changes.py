"""The README's safe patterns for a live database (examples/live-changes), applied under application load: each
file lints clean with live table sizes, the application never fails nor waits long, every change lands."""
import threading
import time

import psycopg

from llmemory_db import migrate
from llmemory_db.migrate import Settings, load, risk
from tests.helpers import write  # noqa
from tests.helpers import ROOT

PATTERNS = ROOT / "examples" / "live-changes" / "migrations"
ROWS = 20_000


def test_safe_patterns_apply_under_load_and_lint_clean(db, tmp_path):
    folder = write(tmp_path / "m", {"001_documents.sql": (PATTERNS / "001_documents.sql").read_text()})
    settings = Settings(folder, schema="app", pool_mode="session")
    db.sql("CREATE SCHEMA app")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        migrate.apply(conn, settings)
    db.sql(f"INSERT INTO app.owners SELECT 'owner-' || g FROM generate_series(1, 100) g; "
           f"INSERT INTO app.documents (owner_id, body, embedding) SELECT 'owner-' || (g % 100 + 1), md5(g::text), "
           f"ARRAY[random(), random(), random()]::vector FROM generate_series(1, {ROWS}) g; ANALYZE app.documents")
    for path in sorted(PATTERNS.glob("*.sql"))[1:]:
        write(folder, {path.name: path.read_text()})
    files = load(folder)
    pending = files[1:]

    # every pattern lints clean with the live sizes: only reviewed exceptions, nothing to warn about
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        report = risk.analyze(pending, migrate.render_files(pending, settings.schema), settings, conn)
    assert [str(f) for f in report.findings if f.severity != "info"] == []
    assert report.allowed == ["009_set_not_null.sql:1 allows adding-not-nullable-field: 008 validated the CHECK "
                              "(title IS NOT NULL), so PostgreSQL 12+ sets NOT NULL without a scan; the CHECK is "
                              "redundant afterwards", "009_set_not_null.sql:1 allows ban-drop-constraint: 008 "
                              "validated the CHECK (title IS NOT NULL), so PostgreSQL 12+ sets NOT NULL without a "
                              "scan; the CHECK is redundant afterwards"]

    # applied while the application writes
    stop, latencies, errors = threading.Event(), [], []

    def application():
        with psycopg.connect(db.dsn, autocommit=True) as app:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    app.execute("INSERT INTO app.documents (owner_id, body) VALUES ('owner-1', 'from the app')")
                except psycopg.Error as exc:
                    errors.append(exc)
                latencies.append(time.monotonic() - started)
                time.sleep(0.02)

    writer = threading.Thread(target=application)
    writer.start()
    try:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            result = migrate.apply(conn, settings)
    finally:
        stop.set()
        writer.join()
    assert result.applied == [m.filename for m in pending]
    assert errors == [] and len(latencies) > 10
    assert max(latencies) < settings.lock_timeout + 0.5, max(latencies)
    assert db.sql("SELECT indexrelid::regclass::text, indisvalid FROM pg_index WHERE indrelid = 'app.documents'"
                  "::regclass ORDER BY 1") == [("app.documents_pkey", True), ("app.idx_documents_embedding", True),
                                               ("app.idx_documents_owner", True)]
    assert db.sql("SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'app.documents'::regclass "
                  "AND contype IN ('f', 'c') ORDER BY 1") == [("documents_owner_fk", True)]
    assert db.sql("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'app.documents'::regclass "
                  "AND attname = 'title'") == [(True,)]
    assert db.sql("SELECT count(*) FROM app.documents WHERE title IS NULL") == [(0,)]
