"""Risky DDL named at `pulumi preview`, with live table sizes, and the deny policy, with the real CLI."""
import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

PROGRAM = """
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs
config = pulumi.Config()
db = MigratedSchema("db", MigratedSchemaArgs(schema="app", extensions=[], risk_policy=config.get("policy") or "warn"))
pulumi.export("applied", db.applied)
"""
FIRST = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                         "body text);\n"}
RISKY = "CREATE INDEX idx_docs_body ON {{tables.docs}} (body);\n"


def preview(stack):
    lines = []
    try:
        result = stack.preview(on_output=lines.append)
        return h.changes(result), "\n".join(lines)
    except auto.CommandError as exc:
        return None, "\n".join(lines) + str(exc)


def test_preview_names_risky_statements_with_live_sizes_and_deny_refuses_them(pg_server, bare_db, tmp_path):
    project = h.write_project(tmp_path / "proj", PROGRAM, FIRST)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name)
    stack.up(on_output=lambda _: None)
    bare_db.sql("INSERT INTO app.docs (body) SELECT md5(g::text) FROM generate_series(1, 150000) g; "
                "ANALYZE app.docs")
    (project / "migrations" / "002_idx.sql").write_text(RISKY)

    changes, text = preview(stack)
    assert changes == {"update": 1}
    assert "risk: 002_idx.sql:1 require-concurrent-index-creation: CREATE INDEX on app.docs (~15" in text
    assert "MB) During normal index creation, table updates are blocked" in text

    stack.set_config("policy", auto.ConfigValue("deny"))
    changes, text = preview(stack)
    assert changes is None and "refused by risk_policy 'deny'; nothing was applied" in text
    assert "002_idx.sql:1 require-concurrent-index-creation" in text and "Traceback" not in text
    with pytest.raises(auto.CommandError):
        stack.up(on_output=lambda _: None)
    assert [row[0] for row in bare_db.history()] == ["001_docs.sql"]
    assert bare_db.sql("SELECT to_regclass('app.idx_docs_body')") == [(None,)]

    (project / "migrations" / "002_idx.sql").write_text(
        "-- llmemory-db:allow require-concurrent-index-creation: reviewed, a maintenance window\n" + RISKY)
    changes, text = preview(stack)
    assert changes == {"update": 1} and "allowed: 002_idx.sql:1 allows require-concurrent-index-creation: " \
                                        "reviewed, a maintenance window" in text
    stack.up(on_output=lambda _: None)
    assert [row[0] for row in bare_db.history()] == ["001_docs.sql", "002_idx.sql"]

    stack.set_config("policy", auto.ConfigValue("sometimes"))
    changes, text = preview(stack)
    assert changes is None and "Invalid value 'sometimes' for risk_policy: use one of warn, deny" in text
