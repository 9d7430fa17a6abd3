"""Least privilege, by trying, with the real CLI: the shape of managed services (RDS, Cloud SQL) where the
database's administrator is not a superuser and an operator installed the extension beforehand."""
import uuid

import psycopg
import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

PROGRAM = """
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs
config = pulumi.Config()
db = MigratedSchema("db", MigratedSchemaArgs(schema="llmemory", migrations_dir="migrations",
                                             history_table=config.get("history") or "public.schema_migrations",
                                             runtime_roles=config.require_object("roles")))
pulumi.export("applied", db.applied)
"""


@pytest.fixture
def managed(pg_server, tmp_path):
    """A database owned by a NOSUPERUSER admin role (CREATEROLE, like RDS's master user) and a runtime role."""
    tag = uuid.uuid4().hex[:8]
    name, admin, runtime = f"e2e_{tag}", f"svc_admin_{tag}", f"app_rw_{tag}"
    admin_pw, runtime_pw = f"admin-pw-{tag}-secret", f"rw-pw-{tag}-secret"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as su:
        su.execute(f"CREATE ROLE {admin} LOGIN NOSUPERUSER CREATEROLE PASSWORD '{admin_pw}'")
        su.execute(f"CREATE ROLE {runtime} LOGIN NOSUPERUSER PASSWORD '{runtime_pw}'")
        su.execute(f'CREATE DATABASE "{name}" OWNER {admin}')
    project = h.write_project(tmp_path / "proj", PROGRAM,
                              {"001_complete_schema.sql": (h.ROOT / "migrations" / "001_complete_schema.sql").read_text()})

    class Managed:
        database, admin_role, runtime_role, admin_password = name, admin, runtime, admin_pw
        root, backend = project, tmp_path / "backend"

        def superuser(self, query):
            with psycopg.connect(pg_server.dsn(database=name), autocommit=True) as conn:
                conn.execute(query)

        def stack(self):
            st = h.stack(project, tmp_path / "backend", pg_server, name, config={"roles": f'["{runtime}"]'})
            st.set_config("postgresql:username", auto.ConfigValue(admin))
            st.set_config("postgresql:password", auto.ConfigValue(admin_pw, secret=True))
            return st

        def as_runtime(self):
            return psycopg.connect(pg_server.dsn(database=name, user=runtime, password=runtime_pw), autocommit=True)

    yield Managed()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as su:
        su.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        su.execute(f"DROP ROLE IF EXISTS {runtime}")
        su.execute(f"DROP ROLE IF EXISTS {admin}")


def up(stack):
    lines = []
    try:
        stack.up(on_output=lines.append)
        return True, "\n".join(lines)
    except auto.CommandError as exc:
        return False, "\n".join(lines) + str(exc)


def test_non_superuser_admin_gets_the_extension_remedy_then_works_once_it_is_installed(managed):
    stack = managed.stack()
    ok, out = up(stack)
    assert not ok
    assert 'permission denied to create extension "vector"' in out
    assert "CREATE EXTENSION IF NOT EXISTS vector" in out  # the spec remedy
    assert managed.admin_password not in out

    managed.superuser("CREATE EXTENSION vector")  # what the operator of a managed service does
    ok, out = up(stack)
    assert ok, out
    # no plain password in the run's output, the outputs, the state (with its history and backups) or the config
    assert managed.admin_password not in out
    assert managed.admin_password not in repr(stack.outputs())
    state = h.state_text(managed.backend, every_file=True)
    assert managed.database in state and "ciphertext" in state  # the scan reads the real thing
    assert managed.admin_password not in state
    assert managed.admin_password not in (managed.root / "Pulumi.test.yaml").read_text()

    # the runtime role, by trying: rows yes; DDL and the history no
    with managed.as_runtime() as rw:
        rw.execute("INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name) "
                   "VALUES ('o', 'x', 'text', 'n')")
        assert rw.execute("UPDATE llmemory.documents SET document_name = 'm' RETURNING document_name").fetchone() == ("m",)
        assert rw.execute("SELECT count(*) FROM public.schema_migrations").fetchone() == (1,)
        assert rw.execute("DELETE FROM llmemory.documents").rowcount == 1
        refused = [
            "CREATE TABLE llmemory.intruder (id int)",
            "CREATE TABLE public.intruder (id int)",
            "ALTER TABLE llmemory.documents ADD COLUMN intruder int",
            "DROP TABLE llmemory.document_chunks",
            "CREATE INDEX intruder ON llmemory.documents (document_name)",
            "TRUNCATE llmemory.documents",
            "INSERT INTO public.schema_migrations (filename, checksum, module_name) VALUES ('x', 'y', 'z')",
            "UPDATE public.schema_migrations SET checksum = 'x'",
            "DELETE FROM public.schema_migrations",
            "DROP SCHEMA llmemory CASCADE",
        ]
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rw.execute(statement)


NO_TRANSACTION = ("-- pgdbm:no-transaction\n"
                  "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_name ON {{tables.documents}} (document_name);\n")


@pytest.mark.parametrize("history", ["llmemory.schema_migrations", "public.schema_migrations",
                                     "ops.schema_migrations"], ids=["in-the-schema", "public", "other-schema"])
def test_runtime_role_cannot_write_the_history_in_any_layout(managed, history):
    """Regression: with the history in the target schema (pgdbm's layout), the schema's default privileges gave the
    runtime role INSERT/UPDATE/DELETE on the history table and USAGE/SELECT on its id sequence."""
    managed.superuser("CREATE EXTENSION vector")
    (managed.root / "migrations" / "002_idx.sql").write_text(NO_TRANSACTION)  # creates the in-flight table too
    stack = managed.stack()
    stack.set_config("history", auto.ConfigValue(history))
    ok, out = up(stack)
    assert ok, out
    with managed.as_runtime() as rw:
        assert rw.execute(f"SELECT count(*) FROM {history}").fetchone() == (2,)
        refused = [f"INSERT INTO {history} (filename, checksum, module_name) VALUES ('x', 'y', 'aword_memory')",
                   f"UPDATE {history} SET checksum = 'x'", f"DELETE FROM {history}", f"TRUNCATE {history}",
                   f"SELECT nextval('{history}_id_seq')", f"SELECT currval('{history}_id_seq')",
                   f"SELECT count(*) FROM {history}_inflight",
                   f"INSERT INTO {history}_inflight (module_name, filename, checksum, total, next_line) "
                   "VALUES ('m', 'f', 'c', 1, 1)"]
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rw.execute(statement)
    # what `make drift` runs is clean right after the first up
    stack.preview(refresh=True, expect_no_changes=True, on_output=lambda _: None)
