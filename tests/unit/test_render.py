"""Templates render exactly as pgdbm renders them; leftovers are errors with file and line."""
import pytest
from pgdbm.core import AsyncDatabaseManager, DatabaseConfig

from llmemory_db.migrate import InvalidIdentifierError, TemplateError, render

TEMPLATES = [
    "CREATE TABLE {{tables.documents}} (id int);",
    "SELECT * FROM {{tables.a}} JOIN {{tables.other.b}} USING (id);",
    "CREATE FUNCTION {{schema}}.f() RETURNS int LANGUAGE sql AS 'select 1';",
    "SET search_path TO {{schema}};",
    "SELECT '{{1,2},{3,4}}'::int[];",
]


def pgdbm_render(text, schema):
    manager = AsyncDatabaseManager(DatabaseConfig(connection_string="postgresql://localhost/x", schema=schema))
    return manager.prepare_query(text)


@pytest.mark.parametrize("schema", [None, "llmemory"])
@pytest.mark.parametrize("text", TEMPLATES)
def test_render_matches_pgdbm(text, schema):
    assert render(text, schema) == pgdbm_render(text, schema)


def test_schema_mode_and_standalone():
    assert render("{{tables.documents}}", "llmemory") == '"llmemory".documents'
    assert render("{{tables.documents}}", None) == "documents"
    assert render("{{tables.other.t}}", None) == '"other".t'
    assert render("{{schema}}", None) == "public"


@pytest.mark.parametrize("text,line", [
    ("SELECT 1;\nSELECT * FROM {{table.documents}};", 2),
    ("SELECT 1;\n\nSELECT * FROM {{tables.bad-name}};", 3),
    ("SELECT * FROM {{ tables.documents }};", 1),
    ("SELECT * FROM {{tables.documents};", 1),
    ("SELECT * FROM {{tables.x; DROP TABLE y}};", 1),
    ("SELECT * FROM {{tables.\"q\"}};", 1),
    ("SELECT * FROM {{unknown}};", 1),
])
def test_leftover_placeholder_is_an_error_with_file_and_line(text, line):
    with pytest.raises(TemplateError) as info:
        render(text, "s", "005_x.sql")
    assert f"005_x.sql:{line}:" in str(info.value)
    assert info.value.line == line


def test_placeholder_names_too_long_or_starting_with_a_digit():
    with pytest.raises(TemplateError, match="invalid table"):
        render("SELECT * FROM {{tables.%s}};" % ("a" * 64), "s", "x.sql")
    with pytest.raises(TemplateError, match="invalid table"):
        render("SELECT * FROM {{tables.1abc}};", "s", "x.sql")


@pytest.mark.parametrize("schema", ['bad"schema', "a;drop", "with space", "a" * 64, "1abc", ""])
def test_invalid_schema_names(schema):
    if schema == "":
        assert render("{{tables.t}}", schema) == "t"  # empty means standalone
        return
    with pytest.raises(InvalidIdentifierError, match="Invalid schema name"):
        render("{{tables.t}}", schema)
