"""Pure functions: drift comparison, remedies by SQLSTATE (no database)."""
import pytest

from llmemory_db.migrate import Settings
from llmemory_db.migrate.diagnosis import EXTENSION_REMEDY, remedy_for
from llmemory_db.migrate.drift import compare, without_expected
from llmemory_db.migrate.errors import StatementFailure


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


def test_fleet_failures_are_grouped_per_reason_with_a_remedy_and_bounded():
    from llmemory_db.migrate.fleet_results import failure_lines
    down = "server db3:5432: Cannot connect to PostgreSQL: Connection refused"
    failed = {f"db3/t{i:03}": {"file": "", "line": 0, "message": down} for i in range(1000)}
    failed["db1/t7"] = {"file": "002_tags.sql", "line": 3.0, "message": 'column "x" does not exist'}
    lines = failure_lines(failed)
    assert lines[0] == (f"  {down} (start the server or fix its connection, then run the update again): 1000 "
                        "tenant(s): db3/t000, db3/t001, db3/t002, db3/t003, db3/t004 and 995 more")
    assert lines[1] == '  db1/t7: 002_tags.sql:3 column "x" does not exist' and len(lines) == 2
    many = {f"t{i:02}": {"file": "001_a.sql", "line": 1, "message": "boom"} for i in range(30)}
    lines = failure_lines(many)
    assert len(lines) == 21 and lines[-1] == "  ... and 10 more (the output `failed` lists every tenant)"
