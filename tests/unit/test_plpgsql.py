"""The SQL inside DO blocks and PL/pgSQL functions (pglast's PL/pgSQL parser): the statements, their lines in the
file, their context, EXECUTE of a constant vs a string built at run time, and what squawk makes of them."""
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings, load, plpgsql, risk
from tests.helpers import write

FILE = """-- héllo: a comment with a multibyte character before everything
CREATE TABLE app.t (id bigint PRIMARY KEY, a text);

DO $$
BEGIN
    -- the first statement is on line 7
    ALTER TABLE app.t ADD CONSTRAINT t_a_key UNIQUE (a);
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'x') THEN
        CREATE INDEX idx_t_a ON app.t (a);
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    DELETE FROM app.t WHERE a IS NULL;
END $$;

DO LANGUAGE plpgsql $body$ BEGIN EXECUTE 'DROP INDEX app.idx_t_a'; END $body$;

CREATE OR REPLACE FUNCTION f(p_name text) RETURNS void AS $fn$
DECLARE
    q text := 'x';
BEGIN
    EXECUTE format('ALTER TABLE %I ADD COLUMN z int', p_name);
    EXECUTE 'ALTER TABLE app.t ' || 'ADD COLUMN y int';
    EXECUTE q;
    FOR i IN 1..3 LOOP
        UPDATE app.t SET a = 'b' WHERE id = i;
    END LOOP;
END;
$fn$ LANGUAGE plpgsql;

CREATE PROCEDURE app.p() LANGUAGE plpgsql AS 'BEGIN
  TRUNCATE app.t;
END';

CREATE FUNCTION app.s() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
DO 'BEGIN NULL; END';
"""


def items():
    return plpgsql.embedded(FILE, schema="app")


def test_do_block_statements_have_their_file_line_context_and_handlers():
    first, index, delete = items()[:3]
    assert (first.line, first.text, first.context) == (
        7, "ALTER TABLE app.t ADD CONSTRAINT t_a_key UNIQUE (a)", "inside the DO block at line 4")
    assert first.parsed[0][0] == "AlterTableStmt" and not first.dynamic
    assert first.handlers == ("duplicate_object", "unique_violation")
    assert (index.line, index.text, index.handlers) == (9, "CREATE INDEX idx_t_a ON app.t (a)", first.handlers)
    assert (delete.line, delete.handlers) == (12, ())  # a handler's own statements are not covered by it


def test_execute_of_a_constant_is_analysed_and_a_built_string_is_reported_not_dropped():
    by_line = {i.line: i for i in items()}
    drop = by_line[15]
    assert (drop.text, drop.constant, drop.dynamic, drop.context) == (
        "DROP INDEX app.idx_t_a", True, False, "inside the DO block at line 15")
    built, concatenated, variable = by_line[21], by_line[22], by_line[23]
    assert built.dynamic and built.text == "format('ALTER TABLE %I ADD COLUMN z int', p_name)"
    assert built.reason == "EXECUTE of a string built at run time cannot be analysed"
    assert (concatenated.text, concatenated.constant) == ("ALTER TABLE app.t ADD COLUMN y int", True)
    assert variable.dynamic and variable.text == "q"


def test_function_and_procedure_bodies_say_they_run_when_called():
    by_line = {i.line: i for i in items()}
    update = by_line[25]
    assert update.text == "UPDATE app.t SET a = 'b' WHERE id = i"
    assert update.context == "inside function app.f() at line 17 (runs when the function is called)"
    assert not update.routine.runs_at_apply
    truncate = by_line[31]
    assert (truncate.text, truncate.context) == (
        "TRUNCATE app.t", "inside procedure app.p() at line 30 (runs when the procedure is called)")
    assert update.routine.context("003_x.sql:9") == ("inside function app.f() at line 17 (runs when the function "
                                                     "is called: 003_x.sql:9 calls it)")
    assert max(by_line) == 31  # LANGUAGE sql and an empty DO add nothing


def test_a_body_pglast_cannot_parse_is_one_unanalysable_item():
    text = "SELECT 1;\nDO $$\nBEGIN\n  FOR rec IN SELECT * FROM t LOOP NULL; END LOOP;\nEND $$;\n"  # rec undeclared
    [item] = plpgsql.embedded(text)
    assert item.dynamic and item.line == 2 and item.context == "inside the DO block at line 2"
    assert item.reason.startswith("its PL/pgSQL body does not parse here (")


def test_constant_strings():
    assert plpgsql.constant_string("'a'") == "a"
    assert plpgsql.constant_string("$q$it's$q$") == "it's"
    assert plpgsql.constant_string("'a' || 'b'::text") == "ab"
    assert plpgsql.constant_string("'a' || v") is None
    assert plpgsql.constant_string("format('%I', v)") is None


@pytest.mark.parametrize("handlers,sqlstate,caught", [
    (("others",), "23505", "others"), (("unique_violation",), "23505", "unique_violation"),
    (("23505",), "23505", "23505"), (("integrity_constraint_violation",), "23505", "integrity_constraint_violation"),
    (("duplicate_object",), "23505", None), (("not_null_violation", "check_violation"), "23514", "check_violation"),
    (("data_exception",), "22000", "data_exception"), ((), "23505", None)])
def test_which_exception_condition_catches_which_sqlstate(handlers, sqlstate, caught):
    assert plpgsql.catches(handlers, sqlstate) == caught


# --------------------------------------------------------------------------- through squawk (no database)

def analyze(folder):
    settings = Settings(folder, schema="app")
    files = load(folder)
    return risk.analyze(files, migrate.render_files(files, settings.schema), settings)


def test_squawk_findings_inside_plpgsql_name_the_line_and_the_block(tmp_path):
    folder = write(tmp_path / "m", {"001_x.sql": (
        "-- a comment\n"
        "DO $$\n"
        "BEGIN\n"
        "    CREATE INDEX idx_docs_body\n"
        "        ON {{tables.docs}} (body);\n"
        "    EXECUTE 'ALTER TABLE {{tables.docs}} ALTER COLUMN body TYPE varchar(10)';\n"
        "    EXECUTE format('CREATE INDEX ON %s (id)', 'x');\n"
        "END $$;\n")})
    findings = [(f.line, f.rule, f.severity, f.table, f.context) for f in analyze(folder).findings]
    assert findings == [
        (4, "require-concurrent-index-creation", "warning", "app.docs", "inside the DO block at line 2"),
        (6, "changing-column-type", "warning", "app.docs", "inside the DO block at line 2"),
        (7, "dynamic-sql", "info", None, "inside the DO block at line 2")]
    text = [str(f) for f in analyze(folder).findings]
    assert text[0].startswith("001_x.sql:4 require-concurrent-index-creation: CREATE INDEX on app.docs (live size "
                              "not read: no database given) inside the DO block at line 2: ")
    assert text[2] == ("001_x.sql:7 dynamic-sql: inside the DO block at line 2, EXECUTE of a string built at run "
                       "time cannot be analysed: format('CREATE INDEX ON %s (id)', 'x'); review it by hand [info]")


def test_a_function_body_counts_only_when_the_plan_calls_it(tmp_path):
    function = ("CREATE FUNCTION {{schema}}.reindex() RETURNS void LANGUAGE plpgsql AS $$\n"
                "BEGIN\n"
                "    CREATE INDEX idx_docs_body ON {{tables.docs}} (body);\n"
                "END $$;\n")
    folder = write(tmp_path / "m", {"001_f.sql": function})
    [finding] = analyze(folder).findings
    assert (finding.line, finding.severity, finding.context) == (
        3, "info", "inside function app.reindex() at line 1 (runs when the function is called)")
    assert "not run by this plan" in finding.note
    write(folder, {"002_call.sql": "SELECT 1;\nSELECT {{schema}}.reindex();\n"})
    [finding] = analyze(folder).findings
    assert (finding.file, finding.line, finding.severity, finding.context) == (
        "001_f.sql", 3, "warning",
        "inside function app.reindex() at line 1 (runs when the function is called: 002_call.sql:2 calls it)")


def test_allowing_dynamic_sql_silences_it_and_is_not_a_squawk_rule(tmp_path):
    folder = write(tmp_path / "m", {"001_x.sql": "-- llmemory-db:allow dynamic-sql: built from a fixed list\n"
                                                 "DO $$ BEGIN EXECUTE format('SELECT %s', 1); END $$;\n"})
    report = analyze(folder)
    assert report.findings == [] and report.allowed == ["001_x.sql:1 allows dynamic-sql: built from a fixed list"]
