"""Adopting existing databases with the real CLI: a schema made by `psql -f` is refused at preview, then
baselined (proven); a deployment whose Pulumi state was lost is imported, after which preview shows no changes."""
import json

import pytest
from pulumi import automation as auto

from llmemory_db.migrate import Settings, load
from tests.helpers import db as dbs
from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

PROGRAM = """
import json
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs
config = pulumi.Config()
db = MigratedSchema("db", MigratedSchemaArgs(**json.loads(config.get("args") or "{}"), adopt=config.get_bool("adopt") or False))
pulumi.export("applied", db.applied)
"""
LLMEMORY = {"migrations_package": "llmemory", "schema": "llmemory", "extensions": ["vector", "pgcrypto"]}


def preview(stack, **kwargs):
    lines = []
    try:
        return h.changes(stack.preview(on_output=lines.append, **kwargs)), "\n".join(lines)
    except auto.CommandError as exc:
        return None, "\n".join(lines) + str(exc)


def test_a_schema_made_by_psql_is_refused_then_baselined(pg_server, bare_db, tmp_path):
    bare_db.sql("CREATE EXTENSION vector; CREATE EXTENSION pgcrypto; CREATE SCHEMA llmemory")
    dbs.psql_f(pg_server, bare_db, Settings(**{**LLMEMORY, "extensions": tuple(LLMEMORY["extensions"])}))
    project = h.write_project(tmp_path / "proj", PROGRAM)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name, config={"args": json.dumps(LLMEMORY)})
    changes, text = preview(stack)
    assert changes is None and "Schema llmemory already holds" in text and "table llmemory.documents" in text
    assert "baseline='VERSION'" in text and "Traceback" not in text  # the Python argument

    stack.set_config("args", auto.ConfigValue(json.dumps({**LLMEMORY, "baseline": "002"})))
    changes, text = preview(stack)
    assert changes is not None, text[-3000:]
    assert "baseline 002: the live schema matches 001_complete_schema.sql…" \
           "002_upsert_identity_contract.sql" in text
    lines = []
    stack.up(on_output=lines.append)
    assert "baselined 001…002 (schema matches)" in "\n".join(lines)
    files = load(Settings(**{**LLMEMORY, "extensions": ()}).migrations_dir)
    assert bare_db.history("llmemory.schema_migrations", "llmemory") == [(m.filename, m.checksum) for m in files]
    assert preview(stack, expect_no_changes=True)[0] == {}


def test_a_deployment_whose_state_was_lost_is_imported(pg_server, bare_db, tmp_path):
    role = "adopt_app_" + bare_db.name[-6:]
    bare_db.server_sql(f"CREATE ROLE {role}")
    try:
        project = h.write_project(tmp_path / "proj", PROGRAM,
                                  {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id serial PRIMARY KEY);\n"})
        args = json.dumps({"schema": "app", "runtime_roles": [role]})
        first = h.stack(project, tmp_path / "backend", pg_server, bare_db.name, "first", {"args": args})
        first.up(on_output=lambda _: None)
        history = bare_db.history()
        # the state is lost: a new backend, the same database; adopt imports instead of creating
        lost = h.stack(project, tmp_path / "backend-new", pg_server, bare_db.name, "again",
                       {"args": args, "adopt": "true"})
        lines = []
        result = lost.up(on_output=lines.append)
        operations = result.summary.resource_changes
        assert operations.get("import") == 2, operations  # the schema and the extension
        assert bare_db.history() == history and "applied 001" not in "\n".join(lines)  # nothing re-applied
        assert result.outputs["applied"].value == ["001_docs.sql"]
        assert preview(lost, expect_no_changes=True)[0] == {}
        lost.set_config("adopt", auto.ConfigValue("false"))
        assert preview(lost, expect_no_changes=True)[0] == {}
    finally:
        bare_db.drop()
        bare_db.server_sql(f"DROP ROLE IF EXISTS {role}")
