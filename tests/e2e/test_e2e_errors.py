"""Expected failures read as Pulumi errors with the engine's message and remedy, never a Python traceback, in every
provider operation (check, diff, create, update, read, delete); and several components sharing extensions in one
stack (the spec's pattern 3) deploy without racing (issue 23)."""
import json
import uuid

import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h

PROGRAM = """
import json
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs

for spec in json.loads(pulumi.Config().get("components")):
    name = spec.pop("name")
    db = MigratedSchema(name, MigratedSchemaArgs(**spec))
    pulumi.export(f"{name}_applied", db.applied)
"""
FILES = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigserial PRIMARY KEY, body text, v vector(3));\n"
                         "CREATE TABLE {{tables.keys}} (k text PRIMARY KEY DEFAULT encode(gen_random_bytes(8), "
                         "'hex'));\n"}



def no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text


@pytest.fixture
def project(pg_server, bare_db, tmp_path):
    root = h.write_project(tmp_path / "proj", PROGRAM, FILES)

    def stack(components):
        return h.stack(root, tmp_path / "backend", pg_server, bare_db.name,
                       config={"components": json.dumps(components)})
    return root, stack


def test_five_schemas_sharing_extensions_deploy_in_one_stack(project, bare_db):
    _, stack = project
    components = [{"name": f"c{i}", "schema": f"s{i}", "module_name": f"m{i}", "extensions": ["vector", "pgcrypto"],
                   "history_table": f"s{i}.schema_migrations"} for i in range(5)]
    result, text = h.run(stack(components).up)
    assert result is not None, text
    for i in range(5):
        assert result.outputs[f"c{i}_applied"].value == ["001_docs.sql"]
        assert bare_db.tables(f"s{i}") == ["docs", "keys", "schema_migrations"]
    assert bare_db.sql("SELECT extname FROM pg_extension WHERE extname IN ('vector', 'pgcrypto') ORDER BY 1") == [
        ("pgcrypto",), ("vector",)]


def test_expected_failures_in_every_operation_have_no_traceback(project, bare_db, pg_server):
    root, stack_of = project
    role = f"mig_{uuid.uuid4().hex[:8]}"
    bare_db.server_sql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'first-pw'")
    try:
        stack = stack_of([{"name": "db", "schema": "app", "extensions": ["vector", "pgcrypto"],
                           "drop_on_destroy": True}])
        stack.set_config("postgresql:username", auto.ConfigValue(role))
        stack.set_config("postgresql:password", auto.ConfigValue("first-pw", secret=True))
        result, text = h.run(stack.up)
        assert result is not None, text

        # update: a migration that fails on the server names file:line and the remedy
        (root / "migrations" / "002_bad.sql").write_text("ALTER TABLE {{tables.docs}} ADD COLUMN x int;\n"
                                                         "ALTER TABLE {{tables.nowhere}} ADD COLUMN y int;\n")
        result, text = h.run(stack.up)
        assert result is None and "Migration 002_bad.sql failed at line 2" in text and "Remedy:" in text
        no_traceback(text)
        (root / "migrations" / "002_bad.sql").unlink()

        # check (the preview): an edited applied file, refused with its proof
        path = root / "migrations" / "001_docs.sql"
        original = path.read_text()
        path.write_text(original.replace("body text", "body text, extra int"))
        result, text = h.run(stack.preview)
        assert result is None and "001_docs.sql has been modified after being applied" in text
        assert "the schema differs" in text
        no_traceback(text)
        path.write_text(original)

        # update: drift stops it, in the caller's terms
        bare_db.sql("ALTER TABLE app.docs ADD COLUMN sneaky int")
        result, text = h.run(stack.up, refresh=True)
        assert result is None and "column app.docs.sneaky: added" in text and "accept_schema_drift=True" in text
        no_traceback(text)
        bare_db.sql("ALTER TABLE app.docs DROP COLUMN sneaky")

        # read and delete: the password the state holds no longer works
        bare_db.server_sql(f"ALTER ROLE {role} PASSWORD 'second-pw'")
        result, text = h.run(stack.refresh)
        assert result is None and "password authentication failed" in text and "Remedy:" in text
        no_traceback(text)
        result, text = h.run(stack.destroy)
        assert result is None and "password authentication failed" in text
        no_traceback(text)
        assert "second-pw" not in text and "first-pw" not in text

        # the new password in the config: a plain destroy still fails (the providers are configured from the
        # state: the config of the last successful up); with --run-program they take this run's config, and this
        # component's own resources take it for the fields the program left to the config (docs/troubleshooting.md)
        stack.set_config("postgresql:password", auto.ConfigValue("second-pw", secret=True))
        result, text = h.run(stack.destroy)
        assert result is None and "password authentication failed" in text
        no_traceback(text)
        result, text = h.run(stack.destroy, run_program=True)
        assert result is not None, text
        assert bare_db.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'app'") == [(0,)]
    finally:
        bare_db.drop()
        bare_db.server_sql(f"DROP ROLE IF EXISTS {role}")
