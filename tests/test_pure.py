"""Pure functions: the provider's diff and check, drift comparison, remedies by SQLSTATE (no database)."""
import pytest

from llmemory_db.migrate import ChecksumMismatchError, Settings
from llmemory_db.migrate.diagnosis import EXTENSION_REMEDY, remedy_for
from llmemory_db.migrate.drift import compare, without_expected
from llmemory_db.migrate.errors import StatementFailure
from llmemory_db.provider import MigrationsProvider, diff_migrations
from tests.conftest import write

BASE = {"schema": "s", "database": "d", "host": "h", "port": 5432, "module_name": "m",
        "history_table": "public.schema_migrations", "checksums": {"001_a.sql": "aa"}}


def test_diff_nothing_changed():
    assert diff_migrations(BASE, dict(BASE)) == ([], [])


def test_diff_new_file_is_an_update_naming_it():
    changed, lines = diff_migrations(BASE, {**BASE, "checksums": {"001_a.sql": "aa", "002_b.sql": "bb"}})
    assert changed == ["checksums"] and lines == ["migrations d/public.schema_migrations/m: 1 pending: 002_b.sql"]


def test_diff_edited_applied_file_raises_with_both_checksums():
    with pytest.raises(ChecksumMismatchError) as info:
        diff_migrations(BASE, {**BASE, "checksums": {"001_a.sql": "zz"}})
    assert "001_a.sql has been modified after being applied" in str(info.value)
    assert "recorded checksum: aa" in str(info.value) and "current checksum:  zz" in str(info.value)


def test_diff_other_target_makes_every_file_pending_and_is_no_mismatch():
    changed, lines = diff_migrations(BASE, {**BASE, "schema": "t", "checksums": {"001_a.sql": "zz"}})
    assert "schema" in changed and lines[-1].endswith("1 pending: 001_a.sql")


def test_diff_reports_drift_and_interruptions_found_by_a_refresh():
    changed, lines = diff_migrations({**BASE, "drift": ["table s.x: added"], "interrupted": ["002 (...)"]}, BASE)
    assert changed == ["drift", "interrupted"]
    assert "schema drift:\n  table s.x: added" in lines[0] and "interrupted:\n  002 (...)" in lines[1]


def test_diff_file_removed_from_disk():
    changed, lines = diff_migrations({**BASE, "checksums": {"001_a.sql": "aa", "002_b.sql": "bb"}}, BASE)
    assert changed == ["checksums"] and lines == ["migrations d/public.schema_migrations/m: recorded but not on "
                                                  "disk: 002_b.sql"]


def test_compare_in_plain_words():
    recorded = {"table s.a": "1", "column s.a.x": "2", "index s.i": "3"}
    live = {"table s.a": "1", "column s.a.x": "9", "column s.a.y": "4"}
    assert compare(recorded, live) == ["column s.a.x: changed", "column s.a.y: added", "index s.i: missing"]
    assert compare(live, live) == []


def test_without_expected_keeps_what_no_pending_file_creates():
    differences = ["table s.tags: added", "column s.tags.name: added", "index s.idx_tags: added",
                   "table s.other: added", "column s.docs.x: changed", "extension vector: added"]
    assert without_expected(differences, {"tags", "idx_tags", "vector"}) == [
        "table s.other: added", "column s.docs.x: changed", "extension vector: added"]


@pytest.mark.parametrize("message", ["permission denied to create extension \"vector\"",
                                     "keine Berechtigung, um Erweiterung »vector« zu erzeugen"])
def test_remedies_come_from_sqlstate_and_statement_not_message_language(message):
    failure = StatementFailure(sqlstate="42501", message=message)
    assert remedy_for(failure, Settings(), "CREATE EXTENSION IF NOT EXISTS vector") == EXTENSION_REMEDY
    assert "pgcrypto" in remedy_for(failure, Settings(), "CREATE EXTENSION pgcrypto")
    assert remedy_for(failure, Settings(), "CREATE TABLE t (id int)") == "fix the statement and run again"
    assert "lock_timeout" in remedy_for(StatementFailure("55P03", "Sperre nicht verfügbar"), Settings())
    assert "CREATE SCHEMA IF NOT EXISTS s" in remedy_for(StatementFailure("3F000", "Schema existiert nicht"),
                                                         Settings(schema="s"))


def test_check_lints_pending_files_only(tmp_path, capsys):
    """Strict mode turned on after a file with a warning was applied must not block every preview."""
    warned = "SET search_path TO public;\nCREATE TABLE plain (id int);\n"
    folder = write(tmp_path / "m", {"001_a.sql": warned})
    news = {**BASE, "migrations_dir": str(folder), "strict": True, "checksums": {"001_a.sql": "x"}}
    provider = MigrationsProvider()
    assert provider.check(news, news).failures == []  # 001 was applied by the previous update
    failures = provider.check({}, news).failures       # a new resource: 001 is pending
    assert len(failures) == 1 and "001_a.sql:2:1: warning: table is not schema-qualified" in failures[0].reason
    write(folder, {"002_b.sql": warned})
    failures = provider.check(news, {**news, "checksums": {"001_a.sql": "x", "002_b.sql": "y"}}).failures
    assert len(failures) == 1 and "002_b.sql:2:1" in failures[0].reason and "001_a.sql" not in failures[0].reason
    relaxed = {**news, "strict": False, "checksums": {"001_a.sql": "x", "002_b.sql": "y"}}
    assert provider.check(news, relaxed).failures == []
    assert "warning: 002_b.sql:2:1: warning" in capsys.readouterr().out
