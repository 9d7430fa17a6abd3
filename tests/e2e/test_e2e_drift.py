"""Drift detection with `pulumi preview --refresh`: history drift and schema drift, end to end."""
import json

import pytest
from pulumi import automation as auto

from tests.helpers import db as dbs
from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

PROGRAM = """
import json
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs
import llmemory_db

spec = json.loads(pulumi.Config().get("spec") or "{}")
if spec.pop("llmemory", True):
    spec.setdefault("migrations_dir", llmemory_db.LLMEMORY_MIGRATIONS)
db = MigratedSchema("db", MigratedSchemaArgs(**spec))
pulumi.export("applied", db.applied)
pulumi.export("fingerprint", db.fingerprint)
"""


class DriftEnv:
    def __init__(self, server, tmp_path, spec, files=None):
        self.server = server
        self.db = dbs.create(server, prefix="drift")
        self.database = self.db.name
        project = h.write_project(tmp_path / "proj", PROGRAM, files)
        self.stack = h.stack(project, tmp_path / "backend", server, self.database,
                             config={"spec": json.dumps(spec)})
        self.stack.up(on_output=lambda _: None)

    def sql(self, query):
        return self.db.sql(query)

    def preview_refresh(self):
        lines = []
        result = self.stack.preview(refresh=True, on_output=lines.append)
        return h.changes(result), "\n".join(lines)

    def close(self):
        self.db.drop()


@pytest.fixture
def drift_env(pg_server, tmp_path):
    env = DriftEnv(pg_server, tmp_path, {"schema": "llmemory"})
    yield env
    env.close()


def drift_lines(text):
    return sorted({line.strip() for line in text.splitlines()
                  if line.strip().startswith(("table ", "column ", "index ", "constraint ", "trigger ", "function ",
                                              "sequence ", "view ", "extension ")) and line.strip().endswith(
                      (": missing", ": added", ": changed"))})


SCHEMA_DRIFT = [
    ("DROP INDEX llmemory.idx_chunks_search_vector_gin", ["index llmemory.idx_chunks_search_vector_gin: missing"]),
    ("ALTER TABLE llmemory.documents ADD COLUMN extra int", ["column llmemory.documents.extra: added"]),
    ("ALTER TABLE llmemory.search_history ALTER COLUMN query_text TYPE varchar(200)",
     ["column llmemory.search_history.query_text: changed"]),
    ("ALTER TABLE llmemory.documents ALTER COLUMN document_type DROP DEFAULT",
     ["column llmemory.documents.document_type: changed"]),
    ("ALTER TABLE llmemory.documents ALTER COLUMN document_date SET NOT NULL",
     ["column llmemory.documents.document_date: changed",  # PostgreSQL 18 catalogs NOT NULL constraints too
      "constraint llmemory.documents.documents_document_date_not_null: added"]),
    ("ALTER TABLE llmemory.document_chunks DROP CONSTRAINT document_chunks_unique_hash",
     ["constraint llmemory.document_chunks.document_chunks_unique_hash: missing",
      "index llmemory.document_chunks_unique_hash: missing"]),
    ("DROP TRIGGER update_documents_updated_at ON llmemory.documents",
     ["trigger llmemory.documents.update_documents_updated_at: missing"]),
    ("CREATE OR REPLACE FUNCTION llmemory.update_updated_at_column() RETURNS trigger LANGUAGE plpgsql "
     "AS $$ BEGIN RETURN NEW; END $$", ["function llmemory.update_updated_at_column(): changed"]),
    ("ALTER SEQUENCE llmemory.search_history_search_id_seq INCREMENT BY 5",
     ["sequence llmemory.search_history_search_id_seq: changed"]),
    ("CREATE VIEW llmemory.recent AS SELECT 1 AS one", ["view llmemory.recent: added"]),
    ("CREATE TABLE llmemory.stray (id int)", ["column llmemory.stray.id: added", "table llmemory.stray: added"]),
]


def test_no_drift_means_no_changes(drift_env):
    changes, text = drift_env.preview_refresh()
    assert changes == {} and drift_lines(text) == []
    drift_env.stack.preview(refresh=True, expect_no_changes=True)  # what `make drift` runs: exit 0


@pytest.mark.parametrize("statement,expected", SCHEMA_DRIFT, ids=[e[1][0].split(":")[0] for e in SCHEMA_DRIFT])
def test_schema_drift_is_reported_exactly_and_up_stops(drift_env, statement, expected):
    drift_env.sql(statement)
    changes, text = drift_env.preview_refresh()
    assert changes == {"update": 1}
    assert drift_lines(text) == sorted(expected)
    with pytest.raises(auto.CommandError) as info:
        drift_env.stack.preview(refresh=True, expect_no_changes=True)  # `make drift` fails
    assert "no changes were expected for preview but changes were proposed" in str(info.value) and expected[0] in str(info.value)
    history = drift_env.sql("SELECT count(*) FROM public.schema_migrations")
    with pytest.raises(auto.CommandError) as info:
        drift_env.stack.up(refresh=True, on_output=lambda _: None)
    message = str(info.value)
    assert "Schema drift in llmemory" in message and expected[0] in message
    assert "accept_schema_drift" in message and "nothing was applied" in message
    assert drift_env.sql("SELECT count(*) FROM public.schema_migrations") == history


def test_accepting_schema_drift_records_the_new_fingerprint(drift_env):
    before = drift_env.stack.outputs()["fingerprint"].value
    drift_env.sql("ALTER TABLE llmemory.documents ADD COLUMN extra int")
    drift_env.stack.set_config("spec", auto.ConfigValue(json.dumps({"schema": "llmemory",
                                                                    "accept_schema_drift": True})))
    result = drift_env.stack.up(refresh=True, on_output=lambda _: None)
    assert result.outputs["fingerprint"].value != before
    drift_env.stack.set_config("spec", auto.ConfigValue(json.dumps({"schema": "llmemory"})))
    changes, text = drift_env.preview_refresh()
    assert drift_lines(text) == [] and changes == {"update": 1}  # the flag itself flips back: no drift
    drift_env.stack.up(on_output=lambda _: None)
    assert drift_env.preview_refresh()[0] == {}


def test_history_drift_development_reset_is_reapplied(drift_env):
    drift_env.sql("DELETE FROM public.schema_migrations WHERE module_name = 'aword_memory'")
    changes, text = drift_env.preview_refresh()
    assert changes == {"update": 1} and "001_complete_schema.sql" in text
    drift_env.stack.up(refresh=True, on_output=lambda _: None)
    assert drift_env.sql("SELECT filename FROM public.schema_migrations") == [("001_complete_schema.sql",)]
    assert drift_env.preview_refresh()[0] == {}


def test_history_checksum_changed_is_reported(drift_env):
    drift_env.sql("UPDATE public.schema_migrations SET checksum = repeat('0', 64)")
    with pytest.raises(auto.CommandError) as info:
        drift_env.stack.preview(refresh=True)
    assert "001_complete_schema.sql has been modified after being applied" in str(info.value)


def test_standalone_other_tables_in_public_are_not_drift_but_extension_is(pg_server, tmp_path):
    files = {"001_t.sql": "CREATE TABLE {{tables.notes}} (id serial PRIMARY KEY, body text);\n"}
    env = DriftEnv(pg_server, tmp_path, {"llmemory": False}, files)
    try:
        env.sql("CREATE TABLE public.other_app (id int); CREATE INDEX other_idx ON public.other_app (id)")
        changes, text = env.preview_refresh()
        assert changes == {} and drift_lines(text) == []
        env.sql("DROP EXTENSION vector")
        changes, text = env.preview_refresh()
        assert "extension vector: missing" in drift_lines(text)
    finally:
        env.close()


def test_migrations_applied_by_pgdbm_between_ups_are_not_drift(pg_server, tmp_path):
    """The app's pgdbm applies a new file at start-up before `pulumi up` does: its tables and its ALTER are the
    history moving on, not a manual change; the up records them and takes the fingerprint again."""
    import asyncio

    from tests.helpers.pgdbm import pgdbm_apply
    files = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id serial PRIMARY KEY, body text);\n"}
    env = DriftEnv(pg_server, tmp_path, {"schema": "app", "llmemory": False, "migrations_dir": "migrations",
                                         "history_table": "app.schema_migrations"}, files)
    try:
        (tmp_path / "proj" / "migrations" / "002_tags.sql").write_text(
            "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n"
            "ALTER TABLE {{tables.docs}} ADD COLUMN tag text REFERENCES {{tables.tags}}(name);\n")
        url = dbs.url(env.db.dsn)
        result = asyncio.run(pgdbm_apply(url, tmp_path / "proj" / "migrations", "app"))
        assert [m if isinstance(m, str) else m["filename"] for m in result["applied"]] == ["002_tags.sql"]
        lines = []
        env.stack.up(on_output=lines.append)
        text = "\n".join(lines)
        assert "applied outside this stack since its last update: 002_tags.sql" in text
        assert "schema drift" not in text.lower() and "updated" in text
        assert h.changes(env.stack.preview(refresh=True, on_output=lambda _: None)) == {}
        # and a manual change after that is drift again
        env.sql("ALTER TABLE app.tags ADD COLUMN intruder int")
        changes, text = env.preview_refresh()
        assert "column app.tags.intruder: added" in text
    finally:
        env.close()
