"""The data-aware preflight against real PostgreSQL: for each kind of statement that fails on existing rows, the
violations found (count, examples, a listing query that really lists them), none found, tables the plan creates
skipped, a check that times out or may not write skipped with a note, and the refusal's message."""
import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings, risk, violation_reads
from llmemory_db.migrate import violation_checks as violations
from tests.helpers import write

def preflight(db, folder, files, **settings):
    """The data preflight's findings on the pending ``files`` (added to ``folder``)."""
    write(folder, files)
    settings = Settings(folder, schema="app", **settings)
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        pending = migrate.status(conn, settings).plan.pending
        report = risk.analyze(pending, migrate.render_files(pending, settings.schema), settings, conn)
    return report, [f for f in report.findings if f.rule in violations.RULES]


def listed(db, finding):
    """What the finding's query lists on the live database (it must run as printed)."""
    with psycopg.connect(db.dsn) as conn:
        return conn.execute(finding.query).fetchall()


def one(db, folder, statement, **settings):
    _, found = preflight(db, folder, {"002_x.sql": f"-- the statement\n{statement}\n"}, **settings)
    assert len(found) == 1, [str(f) for f in found]
    return found[0]


def test_add_unique_constraint_duplicates_are_an_error_with_examples_and_query(db, live):
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD CONSTRAINT t_a_key UNIQUE (a);")
    assert (finding.file, finding.line, finding.rule, finding.severity, finding.table, finding.violations) == (
        "002_x.sql", 2, "unique-violation", "error", "app.t", 1)
    assert finding.examples == [{"key": {"a": "x"}, "rows": 2}]  # NULLs are distinct: (4) and (5) do not clash
    assert listed(db, finding) == [("x", 2)]
    assert finding.message == ("ADD CONSTRAINT t_a_key UNIQUE (a) will fail on app.t: 1 duplicate (a) group(s) "
                               "(2 rows), e.g. (a)=(x) x2")
    assert finding.as_dict()["violations"] == 1 and finding.as_dict()["query"] == finding.query
    assert finding.rows_estimate == 6 and finding.bytes > 0


def test_no_violation_is_an_info_finding_that_says_it_was_checked(db, live):
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD UNIQUE (id, a);")
    assert (finding.severity, finding.violations, finding.examples) == ("info", 0, [])
    assert finding.message.startswith("ADD UNIQUE (id, a): no existing row of app.t violates it (checked in ")


def test_unique_index_partial_and_nulls_not_distinct(db, live):
    partial = one(db, live, "CREATE UNIQUE INDEX idx_t_a ON {{tables.t}} (a) WHERE b > 1;")
    assert partial.violations == 0  # the two 'x' rows: b = 1 is outside the index
    wider = one(db, live, "CREATE UNIQUE INDEX idx_t_a ON {{tables.t}} (a) WHERE b > 0;")
    assert (wider.violations, wider.examples) == (1, [{"key": {"a": "x"}, "rows": 2}])
    nulls = one(db, live, "CREATE UNIQUE INDEX idx_t_a ON {{tables.t}} (a) NULLS NOT DISTINCT WHERE b > 1 OR b IS NULL;")
    assert (nulls.violations, nulls.examples) == (1, [{"key": {"a": None}, "rows": 2}])  # rows 4 and 5
    assert listed(db, nulls) == [(None, 2)]
    assert one(db, live, "CREATE UNIQUE INDEX idx_t_a ON {{tables.t}} (a) WHERE b > 1 OR b IS NULL;").violations == 0
    expression = one(db, live, "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_t_c ON {{tables.t}} "
                               "(lower(a), (b > 0));")
    assert (expression.violations, expression.examples) == (1, [{"key": {"lower(a)": "x", "b > 0": True}, "rows": 2}])
    assert listed(db, expression) == [("x", True, 2)]
    db.sql("CREATE INDEX idx_t_c ON app.t (a)")  # IF NOT EXISTS and it exists: a no-op, nothing to check
    _, found = preflight(db, live, {"002_x.sql": "CREATE UNIQUE INDEX IF NOT EXISTS idx_t_c ON {{tables.t}} (a);\n"})
    assert found == []


def test_primary_key_checks_duplicates_and_nulls(db, live):
    _, found = preflight(db, live, {"002_x.sql": "ALTER TABLE {{tables.t}} ADD PRIMARY KEY (c);\n"})
    unique, nulls = sorted(found, key=lambda f: f.rule, reverse=True)
    assert (unique.rule, unique.violations, unique.examples) == ("unique-violation", 1, [{"key": {"c": 1}, "rows": 2}])
    assert (nulls.rule, nulls.violations, nulls.examples) == ("not-null-violation", 1, [{"id": 4}])
    assert listed(db, nulls) == [(4,)]


def test_set_not_null(db, live):
    finding = one(db, live, "ALTER TABLE {{tables.t}} ALTER COLUMN a SET NOT NULL;")
    assert (finding.rule, finding.severity, finding.violations) == ("not-null-violation", "error", 2)
    assert finding.examples == [{"id": 4}, {"id": 5}] and listed(db, finding) == [(4,), (5,)]
    assert "2 row(s) with NULL, e.g. (id=4); (id=5)" in finding.message
    assert one(db, live, "ALTER TABLE {{tables.t}} ALTER COLUMN id SET NOT NULL;").violations == 0


def test_add_column_not_null_without_default(db, live):
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD COLUMN f int NOT NULL;")
    assert (finding.rule, finding.violations) == ("not-null-violation", 6)
    assert "the table holds 6 row(s) and the new column has no DEFAULT to fill them" in finding.message
    assert "empty table" in finding.help
    _, found = preflight(db, live, {"002_x.sql": "ALTER TABLE {{tables.t}} ADD COLUMN f int NOT NULL DEFAULT 0, "
                                                 "ADD COLUMN g bigserial NOT NULL, ADD COLUMN h int;\n"})
    assert found == []
    _, found = preflight(db, live, {"002_x.sql": "ALTER TABLE {{tables.t}} ADD COLUMN IF NOT EXISTS a int NOT NULL;\n"})
    assert found == []  # a exists: the statement does nothing
    db.sql("DELETE FROM app.t")
    assert one(db, live, "ALTER TABLE {{tables.t}} ADD COLUMN f int NOT NULL;").violations == 0


def test_add_check(db, live):
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD CONSTRAINT t_b_positive CHECK (b > 0 AND c < 8);")
    assert (finding.rule, finding.violations) == ("check-violation", 2)
    assert finding.examples == [{"id": 3, "b": -3, "c": 7}, {"id": 6, "b": 6, "c": 9}]
    assert listed(db, finding) == [(3, -3, 7), (6, 6, 9)]
    _, found = preflight(db, live, {"002_x.sql": "ALTER TABLE {{tables.t}} ADD CHECK (b > 0) NOT VALID;\n"})
    assert found == []


def test_add_foreign_key(db, live):
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD FOREIGN KEY (c) REFERENCES {{tables.parent}};")
    assert (finding.rule, finding.violations) == ("foreign-key-violation", 2)  # c = 7 and 9; NULL passes
    assert finding.examples == [{"id": 3, "c": 7}, {"id": 6, "c": 9}] and listed(db, finding) == [(3, 7), (6, 9)]
    full = one(db, live, "ALTER TABLE {{tables.t}} ADD FOREIGN KEY (c, b) REFERENCES {{tables.t}} (id, b) "
                         "MATCH FULL;")
    assert full.violations == 3  # (7,-3), (1,5), (9,6) have no row; (NULL, NULL) passes; (1,1) and (2,2) match
    _, found = preflight(db, live, {"002_x.sql": "ALTER TABLE {{tables.t}} ADD FOREIGN KEY (c) REFERENCES "
                                                 "{{tables.parent}} (id) NOT VALID;\n"})
    assert found == []


def test_type_changes_with_a_cast(db, live):
    finding = one(db, live, "ALTER TABLE {{tables.t}} ALTER COLUMN d TYPE int USING d::int;")
    assert (finding.rule, finding.violations) == ("cast-failure", 2)  # 'abc' and 9999999999
    assert finding.examples == [{"id": 3, "d": "abc"}, {"id": 5, "d": "9999999999"}]
    assert listed(db, finding) == [(3, "abc"), (5, "9999999999")]
    shorter = one(db, live, "ALTER TABLE {{tables.t}} ALTER COLUMN a TYPE varchar(3);")
    assert (shorter.violations, shorter.examples) == (1, [{"id": 6, "a": "zzzz"}])
    smaller = one(db, live, "ALTER TABLE {{tables.t}} ALTER COLUMN c TYPE smallint;")
    assert smaller.violations == 0
    _, found = preflight(db, live, {"002_x.sql": "ALTER TABLE {{tables.t}} ALTER COLUMN b TYPE bigint, "
                                                 "ALTER COLUMN d TYPE text, ALTER COLUMN a TYPE varchar;\n"})
    assert found == []  # widening: nothing can fail, nothing is read
    using = one(db, live, "ALTER TABLE {{tables.t}} ALTER COLUMN d TYPE int USING length(d) * 2;")
    assert (using.severity, using.violations) == ("warning", None)
    assert "the USING expression (length(d) * 2) cannot be checked before it runs" in using.message
    numeric = one(db, live, "ALTER TABLE {{tables.t}} ALTER COLUMN e TYPE int;")
    assert (numeric.severity, numeric.violations) == ("warning", None)
    assert "the cast from numeric to integer is not checked" in numeric.message


def test_tables_the_plan_creates_are_not_checked(db, live):
    _, found = preflight(db, live, {
        "002_new.sql": "CREATE TABLE {{tables.n}} (a int);\nALTER TABLE {{tables.n}} ADD UNIQUE (a);\n",
        "003_more.sql": "ALTER TABLE {{tables.n}} ALTER COLUMN a SET NOT NULL;\n"
                        "CREATE TABLE {{tables.t2}} AS SELECT * FROM {{tables.t}};\n"
                        "ALTER TABLE {{tables.t2}} ADD UNIQUE (a);\n"})
    assert found == []
    _, found = preflight(db, live, {"004_column.sql": "ALTER TABLE {{tables.t}} ADD COLUMN f int;\n"
                                                      "UPDATE {{tables.t}} SET f = id;\n"
                                                      "ALTER TABLE {{tables.t}} ALTER COLUMN f SET NOT NULL;\n"})
    [finding] = found  # a column the plan adds first: not there to read, and not a warning
    assert (finding.line, finding.severity, finding.violations) == (3, "info", None)
    assert 'not checked: it refers to what does not exist yet (column src.f does not exist)' in finding.message
    _, found = preflight(db, live, {"005_fk.sql": "CREATE TABLE {{tables.p2}} (id int PRIMARY KEY);\n"
                                                  "ALTER TABLE {{tables.t}} ADD FOREIGN KEY (c) REFERENCES "
                                                  "{{tables.p2}};\n"})
    [fk] = [f for f in found if f.file == "005_fk.sql"]  # the referenced table is made by the plan: not read
    assert (fk.line, fk.severity, fk.violations) == (2, "info", None)
    assert fk.message.endswith("the referenced table p2 does not exist (yet): not checked")


def test_statements_in_do_blocks_and_called_functions_are_checked(db, live):
    _, found = preflight(db, live, {"002_x.sql": (
        "DO $$\nBEGIN\n  ALTER TABLE {{tables.t}} ADD UNIQUE (a);\nEND $$;\n"
        "DO $$\nBEGIN\n  ALTER TABLE {{tables.t}} ALTER COLUMN a SET NOT NULL;\n"
        "EXCEPTION WHEN others THEN NULL;\nEND $$;\n"
        "CREATE FUNCTION {{schema}}.fix() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
        "  ALTER TABLE {{tables.t}} ADD CHECK (b > 0);\nEND $$;\n"
        "CREATE FUNCTION {{schema}}.never() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n"
        "  ALTER TABLE {{tables.t}} ADD CHECK (b > 100);\nEND $$;\n"
        "SELECT {{schema}}.fix();\n")})
    unique, not_null, check = found
    assert (unique.line, unique.severity, unique.context) == (3, "error", "inside the DO block at line 1")
    assert "will fail on app.t inside the DO block at line 1: 1 duplicate (a) group(s)" in unique.message
    assert (not_null.line, not_null.severity) == (7, "warning")  # caught: the file applies without it
    assert "the EXCEPTION WHEN others around it catches that error, so the file applies WITHOUT this change" in \
        not_null.message
    assert (check.line, check.severity, check.violations, check.context) == (
        12, "error", 1, "inside function app.fix() at line 10 (runs when the function is called: 002_x.sql:18 "
                        "calls it)")


def test_rows_changed_earlier_in_the_plan_make_a_violation_a_warning(db, live):
    _, found = preflight(db, live, {"002_dedupe.sql": "DELETE FROM {{tables.t}} WHERE id = 2;\n",
                                    "003_unique.sql": "ALTER TABLE {{tables.t}} ADD UNIQUE (a);\n"})
    [finding] = found
    assert finding.severity == "warning" and "002_dedupe.sql:1 changes them earlier in this plan" in finding.message
    _, found = preflight(db, live, {"002_dedupe.sql": "DO $$ BEGIN EXECUTE format('DELETE FROM %s', 'x'); END $$;\n"})
    assert found[0].severity == "warning"  # a dynamic EXECUTE may have changed them


def test_a_check_that_takes_too_long_is_skipped_with_a_note(db, live, monkeypatch):
    monkeypatch.setattr(violation_reads, "SCAN_BYTES_PER_SECOND", 1 << 40)  # not skipped by size: the query times out
    db.sql("INSERT INTO app.t (id, a, b) SELECT g, md5(g::text), g FROM generate_series(100, 400000) g; "
           "ANALYZE app.t")
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD UNIQUE (a, b);", preflight_timeout=0.01)
    assert (finding.severity, finding.violations, finding.examples) == ("warning", None, None)
    assert "the check did not finish within the preflight limit of 0.01s: not checked; run the query yourself" \
           in finding.message
    assert finding.query.startswith('SELECT "src"."a", "src"."b", count(*)')
    assert "Run it yourself: SELECT" in str(finding)


def test_a_table_too_big_for_the_limit_is_not_read(db, live, monkeypatch):
    monkeypatch.setattr(violation_reads, "SCAN_BYTES_PER_SECOND", 1000)
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD UNIQUE (a);")
    assert finding.violations is None and "app.t is too big to be read within the preflight limit of 2s (8.0 kB)" in \
        finding.message


def test_no_data_checks_with_a_zero_limit(db, live):
    _, found = preflight(db, live, {"002_x.sql": "ALTER TABLE {{tables.t}} ADD UNIQUE (a);\n"}, preflight_timeout=0)
    assert found == []


def test_the_check_is_read_only(db, live):
    db.sql("CREATE TABLE app.log (x int); CREATE FUNCTION app.logs(v int) RETURNS int LANGUAGE sql "
           "AS 'INSERT INTO app.log VALUES (v) RETURNING v'")
    finding = one(db, live, "ALTER TABLE {{tables.t}} ADD CHECK (app.logs(b) > 0);")
    assert finding.violations is None and "cannot execute INSERT in a read-only transaction" in finding.message
    assert db.sql("SELECT count(*) FROM app.log") == [(0,)]


def test_a_violation_refuses_the_plan_naming_everything(db, live):
    report, _ = preflight(db, live, {"002_x.sql": "SELECT 1;\nALTER TABLE {{tables.t}} ADD CONSTRAINT t_a_key "
                                                  "UNIQUE (a);\n"})
    with pytest.raises(risk.ViolationError) as info:
        report.raise_for_errors(Settings(live, schema="app"))
    text = str(info.value)
    assert text.startswith("1 pending statement(s) will fail on rows the live tables hold; nothing was applied:\n"
                           "  002_x.sql:2 ADD CONSTRAINT t_a_key UNIQUE (a) will fail on app.t: 1 duplicate (a) "
                           "group(s) (2 rows), e.g. (a)=(x) x2\n"
                           '    list them: SELECT "src"."a", count(*) AS rows FROM "app"."t" AS src WHERE "src"."a" '
                           'IS NOT NULL GROUP BY "src"."a" HAVING count(*) > 1 ORDER BY count(*) DESC\n'
                           "    then: remove or merge the duplicate rows (the query lists them)\n")
    assert "Remedy: the data must change, not the statement: change the rows each query lists" in text
    assert (info.value.file, info.value.line) == ("002_x.sql", 2)
    # the deny policy's findings come along, and a warn-policy apply with a violation still fails at apply
    report, _ = preflight(db, live, {}, risk_policy="deny", risk_min_rows=1)
    with pytest.raises(risk.ViolationError) as info:
        report.raise_for_errors(Settings(live, schema="app"))
    assert "also refused by risk_policy 'deny':\n  002_x.sql:2 constraint-missing-not-valid" in str(info.value)
    with psycopg.connect(db.dsn, autocommit=True) as conn, pytest.raises(risk.ViolationError):
        migrate.apply(conn, Settings(live, schema="app", risk_policy="deny"))
