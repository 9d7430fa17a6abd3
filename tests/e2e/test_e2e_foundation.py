"""Foundation, end to end: the real pulumi CLI + the postgresql plugin against the embedded PostgreSQL."""
import psycopg
import pytest

from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

PROGRAM = """
import pulumi
import pulumi_postgresql as postgresql

schema = postgresql.Schema("s", name="e2e_found", if_not_exists=True)
ext = postgresql.Extension("vector", name="vector", schema="public", opts=pulumi.ResourceOptions(depends_on=[schema]))
pulumi.export("schema", schema.name)
"""


def test_schema_and_extension_up_preview_destroy(pg_server, tmp_path):
    name = "e2e_foundation"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    project = h.write_project(tmp_path / "proj", PROGRAM)
    stack = h.stack(project, tmp_path / "backend", pg_server, name)
    up = stack.up(on_output=lambda _: None)
    assert up.outputs["schema"].value == "e2e_found"
    with psycopg.connect(pg_server.dsn(database=name)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'e2e_found'").fetchone()[0] == 1
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
    assert h.changes(stack.preview()) == {}
    stack.destroy(on_output=lambda _: None)
    with psycopg.connect(pg_server.dsn(database=name)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'e2e_found'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0
    # the password never reaches the state in plain text
    assert pg_server.password not in h.state_text(tmp_path / "backend")
