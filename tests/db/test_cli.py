"""The command line: exit codes, one clear message, --json for scripts, starts without Pulumi."""
import json
import subprocess
import sys

from tests.helpers import write  # noqa
from tests.helpers import ROOT

ENGINE = ROOT / "llmemory_db" / "migrate"


def cli(*args, check=False):
    return subprocess.run([sys.executable, "-m", "llmemory_db.migrate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, check=check)


def test_engine_never_imports_pulumi():
    code = ("import sys, llmemory_db.migrate, llmemory_db.migrate.cli, components.migrate; "
            "print([m for m in sys.modules if m.startswith('pulumi')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for path in ENGINE.glob("*.py"):
        assert "import pulumi" not in path.read_text() and "from pulumi" not in path.read_text(), path


def test_lint_needs_no_database(tmp_path):
    write(tmp_path, {"001_a.sql": "CREATE TABLE {{tables.a}} (id int);"})
    result = cli("lint", "--dir", tmp_path, "--schema", "s", "--json", "--dsn", "host=does-not-exist")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == ["001_a.sql"]
    result = cli("lint", "--dir", tmp_path, "--schema", "s", "--dsn", "host=does-not-exist")
    assert result.returncode == 0 and "live table sizes not read: Cannot connect to PostgreSQL" in result.stdout


def test_lint_failure_exit_code_and_message(tmp_path):
    write(tmp_path, {"001_a.sql": "SELECT 1;\nSELECT * FROM {{tables.a b}};"})
    result = cli("lint", "--dir", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: 001_a.sql:2: unknown or malformed placeholder")


def test_plan_apply_status_json(database, tmp_path):
    write(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);", "002_b.sql": "CREATE TABLE b (id int);"})
    plan = json.loads(cli("plan", "--dsn", database, "--dir", tmp_path, "--json", check=True).stdout)
    assert plan["pending"] == ["001_a.sql", "002_b.sql"] and plan["applied"] == []
    applied = json.loads(cli("apply", "--dsn", database, "--dir", tmp_path, "--json", check=True).stdout)
    assert applied["applied"] == ["001_a.sql", "002_b.sql"] and len(applied["checksums"]) == 2
    status = json.loads(cli("status", "--dsn", database, "--dir", tmp_path, "--json", check=True).stdout)
    assert status["pending"] == [] and status["applied"] == ["001_a.sql", "002_b.sql"]
    again = cli("apply", "--dsn", database, "--dir", tmp_path)
    assert again.returncode == 0 and "0 migration(s) applied, 2 already applied" in again.stdout


def test_connection_failure_hides_the_password(tmp_path):
    write(tmp_path, {"001_a.sql": "SELECT 1;"})
    result = cli("apply", "--dsn", "postgresql://u:sup3r-s3cret@127.0.0.1:1/db", "--dir", tmp_path)
    assert result.returncode == 2
    assert "Cannot connect to PostgreSQL" in result.stderr and "sup3r-s3cret" not in result.stderr + result.stdout


def test_missing_directory_is_one_clear_error(tmp_path):
    result = cli("lint", "--dir", tmp_path / "missing")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Remedy:" in result.stderr and "Traceback" not in result.stderr


def test_drift_command_compares_the_live_schema_with_the_applied_files(db, tmp_path):
    """For teams running pgdbm without Pulumi: exit 0 when the schema is what the applied files make, 1 with the
    differences in the drift check's words."""
    write(tmp_path, {"001_a.sql": "CREATE TABLE {{tables.a}} (id int PRIMARY KEY, body text);\n"
                                  "CREATE INDEX idx_a_body ON {{tables.a}} (body);\n"})
    db.sql("CREATE SCHEMA app")
    cli("apply", "--dsn", db.dsn, "--dir", tmp_path, "--schema", "app", check=True)
    clean = cli("drift", "--dsn", db.dsn, "--dir", tmp_path, "--schema", "app")
    assert clean.returncode == 0 and "no drift in app" in clean.stdout
    db.sql("DROP INDEX app.idx_a_body; ALTER TABLE app.a ADD COLUMN extra int")
    drifted = cli("drift", "--dsn", db.dsn, "--dir", tmp_path, "--schema", "app", "--json")
    assert drifted.returncode == 1
    assert json.loads(drifted.stdout)["differences"] == ["column app.a.extra: added", "index app.idx_a_body: missing"]
    assert db.sql("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'llmdb_scratch_%'") == [(0,)]


def test_a_syntax_error_comes_before_any_risk_finding(tmp_path):
    write(tmp_path, {"001_a.sql": "CREATE INDEX i ON t (x);\nSELEC 1;\n"})
    result = cli("lint", "--dir", tmp_path)
    assert result.returncode == 2 and "001_a.sql:2:1: error: syntax error" in result.stderr
    assert "require-concurrent-index-creation" not in result.stdout + result.stderr
