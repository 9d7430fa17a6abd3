"""Validation before touching the database: syntax errors as file:line:col, transaction control, wrong-schema warnings."""
import pytest

from llmemory_db.migrate import LintError, Settings, lint_pending, load
from llmemory_db.migrate.lint import lint
from tests.helpers import write


def test_syntax_error_reports_file_line_column_and_statement():
    issues = lint("002_x.sql", "CREATE TABLE a (id int);\n\nSELEC * FROM a;\n", schema=None)
    assert len(issues) == 1
    assert str(issues[0]).startswith("002_x.sql:3:1: error: syntax error: syntax error at or near \"SELEC\"")
    assert "SELEC * FROM a;" in str(issues[0])


def test_syntax_error_column_counts_characters_not_bytes():
    issues = lint("x.sql", "SELECT 'é', 'ü' FORM t;", schema=None)
    # FORM is read as an alias, so the error is at "t": character 22, byte 24
    assert (issues[0].line, issues[0].column) == (1, 22)


@pytest.mark.parametrize("sql", ["BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;", "START TRANSACTION;", "ROLLBACK;",
                                 "SAVEPOINT s;"])
def test_transaction_control_is_an_error(sql):
    issues = lint("x.sql", sql, schema=None)
    assert issues and issues[0].severity == "error"
    assert "controls transactions itself" in issues[0].message


UNQUALIFIED = ("CREATE TABLE a (id int);\nCREATE INDEX i ON a (id);\nCREATE VIEW v AS SELECT 1;\n"
               "CREATE SEQUENCE s;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1';\n"
               'CREATE TABLE "s".b (id int);\nCREATE INDEX j ON "s".b (id);\n')


def test_unqualified_creates_land_in_the_target_schema_no_warning():
    """The engine puts the target schema first on search_path for every migration: unqualified CREATEs land there
    (llmemory's own files create their functions this way)."""
    assert lint("x.sql", UNQUALIFIED, schema="s") == []
    assert lint("x.sql", UNQUALIFIED, schema=None) == []


@pytest.mark.parametrize("change", ["SET search_path TO public;", "SET LOCAL search_path = other, s;",
                                    "RESET search_path;", "SELECT set_config('search_path', 'public', true);"])
def test_unqualified_creates_after_a_search_path_change_warn(change):
    warnings = lint("x.sql", change + "\n" + UNQUALIFIED, schema="s")
    assert [(w.line, w.severity) for w in warnings] == [(2, "warning"), (3, "warning"), (4, "warning"),
                                                        (5, "warning"), (6, "warning")]
    assert "search_path was changed at line 1" in warnings[0].message and "not in the target schema s" in \
        warnings[0].message
    # set back to the target schema first: fine again
    assert lint("x.sql", change + "\nSET search_path TO s, public;\n" + UNQUALIFIED, schema="s") == []


def test_strict_turns_warnings_into_errors(tmp_path):
    write(tmp_path, {"001_a.sql": "SET search_path TO public;\nCREATE TABLE plain (id int);"})
    files = load(tmp_path)
    _, warnings = lint_pending(files, Settings(tmp_path, schema="s"))
    assert len(warnings) == 1
    with pytest.raises(LintError, match=r"001_a.sql:2:1: warning: table is not schema-qualified"):
        lint_pending(files, Settings(tmp_path, schema="s", strict=True))


def test_lint_error_lists_every_bad_file(tmp_path):
    write(tmp_path, {"001_a.sql": "SELEC 1;", "002_b.sql": "SELECT 1;", "003_c.sql": "SELECT 1;\nCREAT TABLE x();"})
    with pytest.raises(LintError) as info:
        lint_pending(load(tmp_path), Settings(tmp_path))
    text = str(info.value)
    assert "001_a.sql:1:1" in text and "003_c.sql:2:1" in text and "002_b.sql" not in text
    assert "nothing was applied" in text


def test_llmemory_migrations_lint_clean_in_both_modes():
    files = load("migrations")
    for schema in (None, "llmemory"):
        _, warnings = lint_pending(files, Settings("migrations", schema=schema, strict=True))
        assert warnings == []
