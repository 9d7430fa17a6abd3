"""MigratedSchema end to end: the real pulumi CLI, the postgresql plugin, the dynamic provider, PostgreSQL 18."""
import json
import uuid

import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

PROGRAM = """
import json
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs

for spec in json.loads(pulumi.Config().get("components") or '[{"name": "db"}]'):
    name = spec.pop("name")
    db = MigratedSchema(name, MigratedSchemaArgs(**spec))
    pulumi.export(f"{name}_schema", db.schema_name)
    pulumi.export(f"{name}_applied", db.applied)
    pulumi.export(f"{name}_checksums", db.checksums)
    pulumi.export(f"{name}_pending", db.pending)
    pulumi.export(f"{name}_history", db.history_table)
"""

FILES = {
    "001_documents.sql": "CREATE TABLE IF NOT EXISTS {{tables.documents}} (\n    id serial PRIMARY KEY,\n"
                         "    body text NOT NULL,\n    embedding vector(3)\n);\n"
                         "CREATE INDEX IF NOT EXISTS idx_documents_body ON {{tables.documents}} (body);\n",
    "002_chunks.sql": "CREATE TABLE IF NOT EXISTS {{tables.chunks}} (\n    id bigserial PRIMARY KEY,\n"
                      "    document_id int NOT NULL REFERENCES {{tables.documents}}(id)\n);\n",
}


@pytest.fixture
def env(pg_server, bare_db, tmp_path):
    """A fresh database, a project with FILES, a stack on a file backend; yields helpers."""
    db = bare_db
    name = db.name
    project = h.write_project(tmp_path / "proj", PROGRAM, FILES)

    class Env:
        server = pg_server
        database = name
        root = project
        backend = tmp_path / "backend"
        logs = []
        roles = []

        def stack(self, components, stack_name="test"):
            return h.stack(project, self.backend, pg_server, name, stack_name,
                           {"components": json.dumps(components)})

        sql = staticmethod(db.sql)
        tables = staticmethod(db.tables)
        history = staticmethod(db.history)

        def up(self, stack):
            lines = []
            result = stack.up(on_output=lines.append)
            self.logs.extend(lines)
            return result, "\n".join(lines)

        def preview(self, stack):
            lines = []
            result = stack.preview(on_output=lines.append, diff=True)
            self.logs.extend(lines)
            return result, "\n".join(lines)

    env = Env()
    yield env
    db.drop()  # first: roles are cluster-wide, and their grants go with the database
    for role in env.roles:
        db.server_sql(f'DROP ROLE IF EXISTS "{role}"')


def test_lifecycle_schema_mode(env):
    role = f"app_{uuid.uuid4().hex[:8]}"
    env.sql(f"CREATE ROLE {role} LOGIN PASSWORD 'runtime-pw'")
    env.roles.append(role)
    stack = env.stack([{"name": "db", "schema": "llmemory", "runtime_roles": [role]}])

    # first up creates schema, extension, tables, history, grants
    result, _ = env.up(stack)
    assert result.outputs["db_applied"].value == ["001_documents.sql", "002_chunks.sql"]
    assert result.outputs["db_pending"].value == []
    assert env.tables("llmemory") == ["chunks", "documents"]
    recorded = dict(env.history())
    assert result.outputs["db_checksums"].value == recorded
    assert env.sql("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")[0][0] == 1

    # the runtime role can read and write rows, but not change the schema or write history
    privileges = env.sql("SELECT has_table_privilege(%s, 'llmemory.documents', 'SELECT,INSERT,UPDATE,DELETE'), "
                         "has_table_privilege(%s, 'public.schema_migrations', 'SELECT'), "
                         "has_table_privilege(%s, 'public.schema_migrations', 'INSERT'), "
                         "has_sequence_privilege(%s, 'llmemory.chunks_id_seq', 'USAGE'), "
                         "has_schema_privilege(%s, 'llmemory', 'CREATE')", role, role, role, role, role)
    assert privileges == [(True, True, False, True, False)]

    # second preview and up: no changes
    preview, _ = env.preview(stack)
    assert h.changes(preview) == {}
    result, _ = env.up(stack)
    assert result.summary.resource_changes.get("update", 0) == 0

    # add a file: preview names it, up applies exactly it; the new table is covered by default privileges
    (env.root / "migrations" / "003_tags.sql").write_text("CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n")
    preview, text = env.preview(stack)
    assert h.changes(preview).get("update") == 1 and "003_tags.sql" in text
    before = env.history()
    result, _ = env.up(stack)
    after = env.history()
    assert [f for f, _ in after if (f, _) not in before] == ["003_tags.sql"]
    assert result.outputs["db_applied"].value[-1] == "003_tags.sql"
    assert env.sql("SELECT has_table_privilege(%s, 'llmemory.tags', 'INSERT')", role) == [(True,)]

    # edit an applied file: preview fails with the spec's message, nothing runs
    path = env.root / "migrations" / "002_chunks.sql"
    original = path.read_text()
    path.write_text(original + "CREATE TABLE {{tables.sneaky}} (id int);\n")
    with pytest.raises(auto.CommandError) as info:
        env.preview(stack)
    assert "002_chunks.sql has been modified after being applied" in str(info.value)
    assert "recorded checksum" in str(info.value) and "Remedy" in str(info.value)
    with pytest.raises(auto.CommandError) as info:
        env.up(stack)
    assert "002_chunks.sql has been modified after being applied" in str(info.value)
    assert "sneaky" not in env.tables("llmemory") and env.history() == after
    path.write_text(original)

    # destroy keeps data by default
    stack.destroy(on_output=env.logs.append)
    assert env.tables("llmemory") == ["chunks", "documents", "tags"] and len(env.history()) == 3

    # nothing of the password in state, outputs or logs
    assert env.server.password not in h.state_text(env.backend)
    assert env.server.password not in "\n".join(env.logs)


def test_bad_inputs_fail_at_preview_and_apply_nothing(env):
    cases = [
        ({"name": "db", "schema": "bad-schema"}, None, "Invalid value 'bad-schema' for schema"),
        ({"name": "db", "schema": "s1", "migrations_dir": "nowhere"}, None, "nowhere does not exist"),
        ({"name": "db", "schema": "s1"}, ("004_bad.sql", "CREATE TABLE {{tables.x}} (id int);\nSELEC 1;\n"),
         "004_bad.sql:2:1: error: syntax error"),
        ({"name": "db", "schema": "s1"}, ("004_bad.sql", "SELECT * FROM {{tables.x-y}};\n"),
         "004_bad.sql:1: unknown or malformed placeholder"),
    ]
    stack = env.stack([{"name": "db"}])
    for spec, bad_file, message in cases:
        bad = env.root / "migrations" / bad_file[0] if bad_file else None
        if bad:
            bad.write_text(bad_file[1])
        stack.set_config("components", auto.ConfigValue(json.dumps([spec])))
        with pytest.raises(auto.CommandError) as info:
            env.preview(stack)
        assert message in str(info.value), str(info.value)[-2000:]
        if bad:
            bad.unlink()
    assert env.sql("SELECT to_regclass('public.schema_migrations')") == [(None,)]
    assert env.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 's1'") == [(0,)]


def test_standalone_mode_and_drop_on_destroy(env):
    env.sql("CREATE TABLE other_app (id int)")  # another application's table in public
    stack = env.stack([{"name": "db", "drop_on_destroy": True}])
    result, _ = env.up(stack)
    assert result.outputs["db_schema"].value == "public"
    assert {"documents", "chunks", "schema_migrations", "other_app"} <= set(env.tables("public"))
    stack.destroy(on_output=env.logs.append)
    assert env.history() == []  # the module's history is forgotten
    remaining = set(env.tables("public"))
    assert "documents" not in remaining and "chunks" not in remaining
    assert {"other_app", "schema_migrations"} <= remaining  # not ours: kept
    assert env.sql("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [(1,)]  # shared: kept


def test_schema_mode_drop_on_destroy_drops_the_schema(env):
    stack = env.stack([{"name": "db", "schema": "doomed", "drop_on_destroy": True}])
    env.up(stack)
    assert env.tables("doomed") == ["chunks", "documents"]
    stack.destroy(on_output=env.logs.append)
    assert env.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'doomed'") == [(0,)]
    assert env.history() == []


def test_two_schemas_in_one_stack_and_colliding_histories_rejected(env):
    stack = env.stack([{"name": "a", "schema": "tenant_a", "module_name": "mem_a"},
                       {"name": "b", "schema": "tenant_b", "module_name": "mem_b"}])
    result, _ = env.up(stack)
    assert env.tables("tenant_a") == env.tables("tenant_b") == ["chunks", "documents"]
    assert len(env.history(module="mem_a")) == len(env.history(module="mem_b")) == 2

    clash = env.stack([{"name": "a", "schema": "tenant_c"}, {"name": "b", "schema": "tenant_d"}], "clash")
    with pytest.raises(auto.CommandError) as info:
        env.preview(clash)
    assert "would share the history of module 'aword_memory'" in str(info.value)


def test_schema_isolation_one_stack_per_schema(env):
    first = env.stack([{"name": "db", "schema": "env_one", "module_name": "m_one"}], "one")
    second = env.stack([{"name": "db", "schema": "env_two", "module_name": "m_two"}], "two")
    env.up(first)
    env.up(second)
    assert env.tables("env_one") == env.tables("env_two") == ["chunks", "documents"]
    assert h.changes(env.preview(first)[0]) == {} and h.changes(env.preview(second)[0]) == {}
