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
