"""Bad input, table-driven: each case fails with a message naming the file (and line where there is one), nothing
of that file is applied and the history is unchanged; or, for the cases that must work, it works."""
import os

import pytest

from llmemory_db import migrate
from llmemory_db.migrate import InvalidIdentifierError, MigrationError, Settings
from tests.helpers import db as dbs
from tests.helpers import write

GOOD = {"001_base.sql": "CREATE TABLE {{tables.base}} (id int);\n"}
LONG = "a" * 64

# (case id, files added after GOOD was applied, expected text in the message, expected line or None)
FILE_CASES = [
    ("syntax error mid-file", {"002_x.sql": "CREATE TABLE {{tables.x}} (id int);\nSELEC 1;\nCREATE TABLE y (id int);"},
     "002_x.sql:2:1: error: syntax error", 2),
    ("unknown placeholder", {"002_x.sql": "SELECT 1;\nSELECT * FROM {{foo}};"}, "002_x.sql:2: unknown or malformed", 2),
    ("empty table placeholder", {"002_x.sql": "SELECT * FROM {{tables.}};"}, "002_x.sql:1: unknown or malformed", 1),
    ("dash in placeholder", {"002_x.sql": "SELECT * FROM {{tables.x-y}};"}, "002_x.sql:1: unknown or malformed", 1),
    ("quotes in placeholder", {"002_x.sql": 'SELECT * FROM {{tables."x"}};'}, "002_x.sql:1: unknown or malformed", 1),
    ("semicolon in placeholder", {"002_x.sql": "SELECT * FROM {{tables.x;DROP TABLE base}};"},
     "002_x.sql:1: unknown or malformed", 1),
    ("space in placeholder", {"002_x.sql": "\n\nSELECT * FROM {{tables.x y}};"}, "002_x.sql:3: unknown or malformed", 3),
    ("64-character placeholder", {"002_x.sql": "SELECT * FROM {{tables.%s}};" % LONG}, "invalid table", 1),
    ("placeholder starting with a digit", {"002_x.sql": "SELECT * FROM {{tables.1x}};"}, "invalid table", 1),
    ("unclosed placeholder", {"002_x.sql": "SELECT * FROM {{tables.x;"}, "002_x.sql:1: unknown or malformed", 1),
    ("single braces are not placeholders but a syntax error", {"002_x.sql": "SELECT * FROM {tables.x};"},
     "002_x.sql:1:15: error: syntax error", 1),
    ("not UTF-8", {"002_x.sql": b"SELECT 1;\nSELECT '\xff';"}, "002_x.sql is not valid UTF-8 (byte 18, line 2)", 2),
    ("empty file", {"002_x.sql": ""}, "002_x.sql is empty", None),
    ("whitespace and a BOM only", {"002_x.sql": "\ufeff \n\t\n"}, "002_x.sql is empty", None),
    ("duplicate version", {"001_again.sql": "SELECT 1;"}, "001_again.sql and 001_base.sql both claim version 001",
     None),
    ("own BEGIN/COMMIT", {"002_x.sql": "BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;"},
     "002_x.sql:1:1: error: the file controls transactions itself", 1),
    ("own SAVEPOINT", {"002_x.sql": "CREATE TABLE x (id int);\nSAVEPOINT s;"}, "002_x.sql:2:1", 2),
    ("drops the history table", {"002_x.sql": "CREATE TABLE x (id int);\nDROP TABLE public.schema_migrations;"},
     "002_x.sql:2:1: error: the file changes the migration history table", 2),
    ("deletes history rows", {"002_x.sql": "DELETE FROM schema_migrations WHERE true;"},
     "changes the migration history table", 1),
    ("unterminated string", {"002_x.sql": "SELECT 1;\nSELECT 'abc;\n"}, "002_x.sql:2:8: error: syntax error", 2),
    ("unterminated dollar quote", {"002_x.sql": "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1;"},
     "002_x.sql:1:", 1),
    ("unterminated comment", {"002_x.sql": "SELECT 1;\n/* never closed\nSELECT 2;"}, "002_x.sql:2:1", 2),
    ("runtime error (no server position)", {"002_x.sql": "CREATE TABLE x (id int);\n\nCREATE TABLE x (id int);"},
     "002_x.sql failed at line 3: relation \"x\" already exists (SQLSTATE 42P07)", 3),
    ("runtime error (server position)", {"002_x.sql": "SELECT 1;\nSELECT nosuchcolumn FROM {{tables.base}};"},
     "002_x.sql failed at line 2: column \"nosuchcolumn\" does not exist (SQLSTATE 42703)", 2),
    ("type error", {"002_x.sql": "CREATE TABLE x (id int);\nINSERT INTO x VALUES ('not a number');"},
     "002_x.sql failed at line 2: invalid input syntax for type integer", 2),
    ("foreign key to nothing", {"002_x.sql": "CREATE TABLE x (b int REFERENCES nowhere(id));"},
     "relation \"nowhere\" does not exist (SQLSTATE 42P01)", 1),
]


def history(conn):
    return dbs.history(conn)


def relations(conn):
    return conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE nspname = 'public' AND relkind = 'r' ORDER BY 1").fetchall()


@pytest.mark.parametrize("case,files,message,line", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_file(conn, tmp_path, case, files, message, line):
    migrations = write(tmp_path, GOOD)
    migrate.apply(conn, Settings(migrations))
    before_history, before_tables = history(conn), relations(conn)
    write(migrations, files)
    with pytest.raises(MigrationError) as info:
        migrate.apply(conn, Settings(migrations))
    text = str(info.value)
    assert message in text, text
    if line is not None:
        assert info.value.line == line, text
    assert "Remedy:" in text
    assert history(conn) == before_history and relations(conn) == before_tables  # nothing of the file applied


def test_error_in_third_of_five_keeps_two(conn, tmp_path):
    files = {f"00{i}_t{i}.sql": f"CREATE TABLE t{i} (id int);" for i in (1, 2, 4, 5)}
    files["003_t3.sql"] = "CREATE TABLE t3 (id int);\nSELECT 1/0;"
    with pytest.raises(MigrationError) as info:
        migrate.apply(conn, Settings(write(tmp_path, files)))
    assert "committed earlier in this run: 001_t1.sql, 002_t2.sql" in str(info.value)
    assert [r[0] for r in history(conn)] == ["001_t1.sql", "002_t2.sql"]


def test_link_escaping_the_directory(conn, tmp_path):
    outside = write(tmp_path / "outside", {"evil.sql": "DROP TABLE base;"})
    migrations = write(tmp_path / "m", GOOD)
    os.symlink(outside / "evil.sql", migrations / "002_evil.sql")
    with pytest.raises(MigrationError, match="002_evil.sql is a link"):
        migrate.apply(conn, Settings(migrations))
    assert conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone() == (None,)


def test_missing_directory(conn, tmp_path):
    with pytest.raises(MigrationError, match=r"nowhere does not exist"):
        migrate.apply(conn, Settings(tmp_path / "nowhere"))


@pytest.mark.parametrize("field,value,named", [
    ("schema", 'sch"ema', "schema name"), ("schema", "a;drop schema public", "schema name"),
    ("schema", "with space", "schema name"), ("schema", LONG, "schema name"),
    ("module_name", "mod'ule", "module name"), ("module_name", "a;b", "module name"), ("module_name", "with space", "module name"),
    ("module_name", "m" * 101, "module name"),
    ("history_table", 'public."x"', "history table name"), ("history_table", "a.b.c", "history table"),
    ("history_table", "x;drop", "history table name"), ("history_table", "public." + LONG, "history table name"),
])
def test_invalid_names_are_refused_before_any_sql(tmp_path, field, value, named):
    with pytest.raises((InvalidIdentifierError, MigrationError)) as info:
        Settings(tmp_path, **{field: value})
    assert str(info.value).startswith(f"Invalid value {value!r} for {field}") and "Remedy:" in str(info.value)


@pytest.mark.parametrize("name,text", [
    ("crlf", "CREATE TABLE {{tables.x}} (id int);\r\nCREATE INDEX ix ON {{tables.x}} (id);\r\n"),
    ("bom", "\ufeffCREATE TABLE {{tables.x}} (id int);\n"),
    ("comments only", "-- nothing to do yet\n/* really */\n"),
])
def test_inputs_that_must_work(conn, tmp_path, name, text):
    result = migrate.apply(conn, Settings(write(tmp_path, {"002_x.sql": text})))
    assert result.applied == ["002_x.sql"]
    assert result.checksums["002_x.sql"] == migrate.checksum(text)


def test_ten_megabyte_file_with_an_error_on_its_last_line(conn, tmp_path):
    rows = "\n".join(f"INSERT INTO big VALUES ({i}, '{'x' * 80}');" for i in range(100_000))
    text = f"CREATE TABLE big (id int, pad text);\n{rows}\nINSERT INTO big VALUES ('oops', 'x');\n"
    assert len(text) > 10_000_000
    with pytest.raises(MigrationError) as info:
        migrate.apply(conn, Settings(write(tmp_path, {"001_big.sql": text})))
    assert info.value.line == 100_002 and "invalid input syntax for type integer" in str(info.value)
    assert ("big",) not in relations(conn)
