"""Risk analysis of pending files: squawk's rules on the rendered SQL, the live table sizes, the deny policy,
reviewed exceptions, and its bad inputs."""
import sys

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import MigrationError, RiskError, Settings, load, risk, squawk
from tests.helpers import db as dbs
from tests.helpers import write

FIRST = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                         "body text);\n"}
RISKY = {"002_idx.sql": "-- the index\nCREATE INDEX idx_docs_body ON {{tables.docs}} (body);\n"}


def analyze(db, folder, **settings):
    settings = Settings(folder, schema="app", **settings)
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        pending = migrate.status(conn, settings).plan.pending
        return risk.analyze(pending, migrate.render_files(pending, settings.schema), settings, conn)


@pytest.fixture
def docs(db, tmp_path):
    """app.docs applied and loaded with 150,000 rows; the folder holds 001 and the risky 002."""
    folder = write(tmp_path / "m", FIRST)
    db.sql("CREATE SCHEMA app")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        migrate.apply(conn, Settings(folder, schema="app"))
    db.sql("INSERT INTO app.docs (body) SELECT md5(g::text) FROM generate_series(1, 150000) g; ANALYZE app.docs")
    write(folder, RISKY)
    return folder


def test_finding_names_file_line_rule_table_and_live_size(db, docs):
    report = analyze(db, docs)
    [finding] = report.findings
    assert (finding.file, finding.line, finding.rule, finding.severity) == (
        "002_idx.sql", 2, "require-concurrent-index-creation", "warning")
    assert finding.table == "app.docs" and 140_000 < finding.rows_estimate < 160_000 and finding.bytes > 5_000_000
    assert str(finding).startswith("002_idx.sql:2 require-concurrent-index-creation: CREATE INDEX on app.docs "
                                   "(~15") and "MB) " in str(finding) and "Help: " in str(finding)


def test_deny_policy_refuses_large_tables_before_anything_runs(db, docs):
    assert [f.severity for f in analyze(db, docs, risk_policy="deny").findings] == ["error"]
    assert [f.severity for f in analyze(db, docs, risk_policy="deny", risk_min_rows=1_000_000).findings] == [
        "warning"]
    with psycopg.connect(db.dsn, autocommit=True) as conn, pytest.raises(RiskError) as info:
        migrate.apply(conn, Settings(docs, schema="app", risk_policy="deny"))
    assert "refused by risk_policy 'deny'; nothing was applied" in str(info.value)
    assert "002_idx.sql:2 require-concurrent-index-creation" in str(info.value)
    assert [row[0] for row in db.history()] == ["001_docs.sql"]


def test_a_reviewed_exception_silences_the_rule_for_that_file_and_is_echoed(db, docs):
    write(docs, {"002_idx.sql": "-- llmemory-db:allow require-concurrent-index-creation: a one-off, off hours\n"
                                + RISKY["002_idx.sql"]})
    report = analyze(db, docs, risk_policy="deny")
    assert report.findings == [] and report.allowed == [
        "002_idx.sql:1 allows require-concurrent-index-creation: a one-off, off hours"]


def test_an_unknown_rule_in_an_exception_names_file_and_line(db, docs):
    write(docs, {"002_idx.sql": "SELECT 1;\n-- llmemory-db:allow require-concurrent-index-creations: typo\n"})
    with pytest.raises(MigrationError) as info:
        analyze(db, docs)
    assert str(info.value).startswith("002_idx.sql:2: unknown squawk rule 'require-concurrent-index-creations'")


def test_tables_created_in_the_plan_or_empty_are_not_at_risk(db, tmp_path):
    db.sql("CREATE SCHEMA app; CREATE TABLE app.empty (x int)")
    folder = write(tmp_path / "m", {**FIRST, **RISKY, "003_empty.sql": "CREATE INDEX ON {{tables.empty}} (x);\n",
                                    "004_gone.sql": "ALTER TABLE {{tables.nowhere}} ALTER COLUMN x TYPE bigint;\n"})
    notes = {f.file: (f.severity, f.note) for f in analyze(db, folder, risk_policy="deny").findings}
    assert notes == {"002_idx.sql": ("info", "created by 001_docs.sql in this plan: not at risk"),
                     "003_empty.sql": ("info", "empty: not at risk"),
                     "004_gone.sql": ("info", "does not exist (yet): not at risk")}


def test_without_a_database_squawk_alone(docs):
    report = risk.analyze(load(docs)[1:], migrate.render_files(load(docs)[1:], "app"),
                          Settings(docs, schema="app"))
    [finding] = report.findings
    assert finding.severity == "warning" and finding.rows_estimate is None
    assert finding.note == "live size not read: no database given"


def test_a_table_the_role_may_not_read_has_size_unknown_and_no_crash(db, docs, pg_server):
    role = "risk_reader_" + db.name[-6:]
    db.server_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    try:
        db.sql(f"GRANT USAGE ON SCHEMA app TO {role}")
        settings = Settings(docs, schema="app", history_table="public.schema_migrations")
        with psycopg.connect(dbs.with_params(db.dsn, user=role, password=f"pw-{role}"), autocommit=True) as conn:
            pending = load(docs)[1:]
            [finding] = risk.analyze(pending, migrate.render_files(pending, settings.schema), settings, conn).findings
        assert finding.bytes is None and "size unknown" in finding.note and finding.severity == "warning"
    finally:
        db.sql(f"REVOKE ALL ON SCHEMA app FROM {role}; REVOKE ALL ON ALL TABLES IN SCHEMA app FROM {role}")
        db.drop()
        db.server_sql(f"DROP ROLE {role}")


def test_squawk_missing_or_not_starting_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setattr(squawk.shutil, "which", lambda name: None)
    with pytest.raises(MigrationError) as info:
        squawk.squawk({"001_a.sql": "SELECT 1;"}, set())
    assert "squawk, the linter the risk analysis runs, is not installed" in str(info.value)
    assert "pip install squawk-cli==2.70.0" in str(info.value)
    broken = write(tmp_path / "bin", {"squawk": "not a program"})
    monkeypatch.setattr(squawk.shutil, "which", lambda name: str(broken / "squawk"))
    (broken / "squawk").chmod(0o644)
    with pytest.raises(MigrationError) as info:
        squawk.squawk({"001_a.sql": "SELECT 1;"}, set())
    assert "failed to start" in str(info.value) and "--force-reinstall squawk-cli" in str(info.value)


def test_the_project_migrations_and_examples_lint_clean():
    from tests.helpers import ROOT
    folders = [ROOT / "migrations"] + sorted(p for p in (ROOT / "examples").glob("*/migrations"))
    for folder in folders:
        settings = Settings(folder, schema="app")
        files = load(folder)
        report = risk.analyze(files, migrate.render_files(files, settings.schema), settings)
        assert [str(f) for f in report.findings if f.severity != "info"] == [], folder
    settings = Settings(migrations_package="llmemory", schema="llmemory")
    files = load(settings.migrations_dir)
    assert [f for f in risk.analyze(files, migrate.render_files(files, settings.schema), settings).findings
            if f.severity != "info"] == []
