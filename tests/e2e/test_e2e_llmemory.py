"""The real llmemory 0.5.0 application on what this project deploys, end to end.

This repository's own stack program, configured as `make up STACK=llmemory` configures it (tools/stack.py's
LOCAL_STACKS), deploys llmemory's own migration files from its installed package with the real CLI; then the
real llmemory application (its own virtualenv: tests/llmemory_app, no torch, no network) runs its public API
against it: initialize (its start-up pgdbm), add_document with embeddings, upsert, text/vector/hybrid search,
list_documents, delete_document. Each least-privilege recipe of the README is measured by trying."""
import json
import os
import shutil
import subprocess
import uuid

import psycopg
import pytest
from pulumi import automation as auto

from tests.helpers import db as dbs
from tests.helpers import stacks as h
from tools.stack import LOCAL_STACKS

pytestmark = pytest.mark.e2e

APP_PYTHON = h.ROOT / ".state" / "llmemory-app-venv" / "bin" / "python"
APP = h.ROOT / "tests" / "llmemory_app" / "app.py"
PASSWORD = "llmemory-service-pw"


@pytest.fixture
def llmemory(pg_server, bare_db, tmp_path):
    if not APP_PYTHON.exists():
        pytest.fail("the llmemory application's virtualenv is missing: run `make app-venv` (make test does)")
    role = f"llm_svc_{uuid.uuid4().hex[:8]}"
    project = tmp_path / "proj"
    project.mkdir()
    shutil.copy(h.ROOT / "__main__.py", project)
    (project / "Pulumi.yaml").write_text((h.ROOT / "Pulumi.yaml").read_text().replace(
        "virtualenv: .venv", f"virtualenv: {h.VENV}"))

    class Env:
        db, role_name = bare_db, role

        def stack(self, **overrides):
            config = dict(LOCAL_STACKS["llmemory"]["config"])
            config.update({"llmemory-db:runtimeRoles": [role], "llmemory-db:startupRole": role})
            config.update({f"llmemory-db:{k}": v for k, v in overrides.items()})
            stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name)
            values = {f"{k}[{i}]" if isinstance(v, list) else k: auto.ConfigValue(str(item).lower()
                      if isinstance(item, bool) else item)
                      for k, v in config.items() if v is not None
                      for i, item in (enumerate(v) if isinstance(v, list) else [(None, v)])}
            stack.set_all_config(values, path=True)
            stack.set_config("llmemory-db:runtimePassword", auto.ConfigValue(PASSWORD, secret=True))
            return stack

        def app(self, mode, user=None, password=PASSWORD):
            dsn = dbs.url(dbs.with_params(bare_db.dsn, **({"user": user or role, "password": password})))
            out = subprocess.run([str(APP_PYTHON), str(APP), mode, dsn, "llmemory"], capture_output=True, text=True,
                                 timeout=180, env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken")})
            return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr

        def as_role(self):
            return bare_db.connect(user=role, password=PASSWORD)

    yield Env()
    bare_db.drop()  # first: the role's grants go with the database
    bare_db.server_sql(f'DROP ROLE IF EXISTS "{role}"')


def assert_the_api_worked(result):
    assert "error" not in result, result
    assert result["added"] == [2, 2, 2, 2] and result["upsert_kept_id"] is True
    parrots = "Cats are independent felines. Parrots can imitate human speech."
    assert result["search_text"] == [parrots]
    assert result["search_vector"][0] == parrots and result["search_hybrid"][0] == parrots
    assert result["listed"] == ["doc-1", "doc-2"] and result["after_delete"] == ["doc-1"]


def history(db):
    return db.history("llmemory.schema_migrations", "llmemory", "filename, checksum, applied_by")


def test_the_real_llmemory_runs_on_the_llmemory_stack_with_a_guarded_start_up_role(llmemory):
    stack = llmemory.stack()
    result = stack.up(on_output=lambda _: None)
    assert result.outputs["package_version"].value == "llmemory 0.5.0"
    assert result.outputs["module_name"].value == "llmemory"
    assert result.outputs["history_table"].value == "llmemory.schema_migrations"
    deployed = history(llmemory.db)
    assert [row[0] for row in deployed] == ["001_complete_schema.sql", "002_upsert_identity_contract.sql"]
    assert llmemory.db.sql("SELECT extname FROM pg_extension WHERE extname IN ('vector', 'pgcrypto') "
                           "ORDER BY 1") == [("pgcrypto",), ("vector",)]

    for mode in ("dsn", "shared"):  # LLMemory(connection_string=...) and the pgdbm shared-pool pattern
        outcome, _ = llmemory.app(mode)
        assert_the_api_worked(outcome)
    # the app's start-up pgdbm found nothing to do and recorded nothing; its rows are in the catalog
    assert history(llmemory.db) == deployed
    assert llmemory.db.sql("SELECT count(*) FROM llmemory.documents") == [(1,)]
    assert llmemory.db.sql("SELECT count(*) > 0 FROM llmemory.document_chunks c JOIN llmemory.embeddings_openai_3_small "
                           "e USING (chunk_id)") == [(True,)]

    # what the start-up role may do, by trying: rows and pgdbm's no-op check yes; any schema change or a
    # history write no
    with llmemory.as_role() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS llmemory.schema_migrations (id serial)")  # pgdbm's check
        conn.execute("CREATE INDEX IF NOT EXISTS idx_schema_migrations_module "
                     "ON llmemory.schema_migrations (module_name, filename)")
        refused = ["CREATE TABLE llmemory.intruder (id int)", "CREATE SCHEMA intruder",
                   "ALTER TABLE llmemory.documents ADD COLUMN intruder int", "DROP TABLE llmemory.search_history",
                   "CREATE FUNCTION llmemory.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                   "INSERT INTO llmemory.schema_migrations (filename, checksum, module_name) "
                   "VALUES ('003_x.sql', 'x', 'llmemory')", "DELETE FROM llmemory.schema_migrations",
                   "TRUNCATE llmemory.schema_migrations", "DROP TABLE llmemory.schema_migrations",
                   "ALTER TABLE llmemory.schema_migrations DISABLE TRIGGER ALL",
                   "GRANT ALL ON llmemory.documents TO PUBLIC", "CREATE TABLE public.intruder (id int)"]
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # `make drift` is clean after the app ran
    stack.preview(refresh=True, expect_no_changes=True, on_output=lambda _: None)


def test_as_the_migration_role_the_app_runs_and_applies_nothing(llmemory):
    llmemory.stack().up(on_output=lambda _: None)
    deployed = history(llmemory.db)
    outcome, _ = llmemory.app("dsn", user="postgres", password=llmemory.db.server.password)
    assert_the_api_worked(outcome)
    assert history(llmemory.db) == deployed


def test_a_crud_only_runtime_role_cannot_start_llmemory(llmemory):
    """Without a start-up role the runtime role can read and write rows, but llmemory's initialize() runs pgdbm's
    CREATE TABLE IF NOT EXISTS on the history, which PostgreSQL refuses before it looks whether the table exists."""
    llmemory.stack(startupRole=None).up(on_output=lambda _: None)
    outcome, _ = llmemory.app("shared")
    assert "permission denied for schema llmemory" in outcome["error"]
    outcome, _ = llmemory.app("dsn")  # llmemory's own pool first runs CREATE SCHEMA IF NOT EXISTS
    assert "permission denied for database" in outcome["error"]
    with llmemory.as_role() as conn:
        conn.execute("INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name) "
                     "VALUES ('o', 'x', 'text', 'n')")
        assert conn.execute("DELETE FROM llmemory.documents").rowcount == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE llmemory.intruder (id int)")


def test_an_unguarded_start_up_role_can_change_the_schema_and_the_history(llmemory):
    """startupGuard false (no superuser for event triggers): the app starts (shared-pool mode), and the role can do
    what owning the history and CREATE on the schema allow. The README says so; this measures it."""
    llmemory.stack(startupGuard=False).up(on_output=lambda _: None)
    outcome, _ = llmemory.app("shared")
    assert_the_api_worked(outcome)
    with llmemory.as_role() as conn:
        conn.execute("CREATE TABLE llmemory.allowed_but_unwanted (id int)")
        conn.execute("INSERT INTO llmemory.schema_migrations (filename, checksum, module_name) "
                     "VALUES ('999_forged.sql', 'x', 'llmemory')")
        for statement in ["ALTER TABLE llmemory.documents ADD COLUMN intruder int",  # not its tables
                          "DROP TABLE llmemory.search_history", "CREATE SCHEMA intruder"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


PACKAGE_PROGRAM = """
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs
db = MigratedSchema("db", MigratedSchemaArgs(schema="lib", migrations_package="fakelib", extensions=[]))
pulumi.export("applied", db.applied)
pulumi.export("package_version", db.package_version)
pulumi.export("history_table", db.history_table)
"""


def test_bumping_the_installed_package_shows_its_new_files_in_the_preview(pg_server, bare_db, tmp_path):
    from tests.helpers.packages import make_package
    site = tmp_path / "site"
    package = make_package(site, version="1.0.0")
    project = h.write_project(tmp_path / "proj", PACKAGE_PROGRAM)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name, env={"PYTHONPATH": str(site)})
    result = stack.up(on_output=lambda _: None)
    assert result.outputs["package_version"].value == "fakelib 1.0.0"
    assert result.outputs["history_table"].value == "lib.schema_migrations"
    assert bare_db.history("lib.schema_migrations", "fakelib", "filename") == [("001_a.sql",)]
    # a new release of the package: a new file and a new version
    (package / "migrations" / "002_b.sql").write_text("CREATE TABLE {{tables.b}} (id int);\n")
    shutil.move(site / "fakelib-1.0.0.dist-info", site / "fakelib-1.1.0.dist-info")
    (site / "fakelib-1.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fakelib\nVersion: 1.1.0\n")
    lines = []
    preview = stack.preview(on_output=lines.append)
    assert h.changes(preview) == {"update": 1} and "1 pending: 002_b.sql" in "\n".join(lines)
    result = stack.up(on_output=lambda _: None)
    assert result.outputs["package_version"].value == "fakelib 1.1.0"
    assert bare_db.history("lib.schema_migrations", "fakelib", "filename") == [("001_a.sql",), ("002_b.sql",)]
