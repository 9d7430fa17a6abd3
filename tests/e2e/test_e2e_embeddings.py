"""Changing the embedding model of the real llmemory 0.5.0 application, through `pulumi up` (issue 22).

The stack deploys llmemory's own migrations (MigratedSchema, its package's files) and two EmbeddingProviders: the
OpenAI provider llmemory's migration made (adopted: given its table, nothing is created) and a 384-dimension local
one. The real application (its own venv, tests/llmemory_app/embeddings_app.py, deterministic fake models
registered as llmemory registers its providers) adds documents; a `pulumi up` backfills the new provider's queue;
the application's process_pending_embeddings() fills its table; coverage reaches 100%; the default switches; the
application's vector and hybrid searches then read the new provider's table (their scores are its rows'); the old
provider serves until it is removed from the stack (unregistered, its table kept); removing the default is
refused."""
import importlib.util
import json
import os
import subprocess
import uuid

import pytest
from pulumi import automation as auto

from tests.helpers import ROOT
from tests.helpers import db as dbs
from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

APP_PYTHON = ROOT / ".state" / "llmemory-app-venv" / "bin" / "python"
APP = ROOT / "tests" / "llmemory_app" / "embeddings_app.py"
PASSWORD = "llmemory-embeddings-pw"
_spec = importlib.util.spec_from_file_location("fake_models", ROOT / "tests" / "llmemory_app" / "fake_models.py")
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

PROGRAM = """
import pulumi
from llmemory_db import EmbeddingProvider, EmbeddingProviderArgs, MigratedSchema, MigratedSchemaArgs

cfg = pulumi.Config("test")
role = cfg.require("role")
db = MigratedSchema("llmemory", MigratedSchemaArgs(schema="llmemory", migrations_package="llmemory",
                    extensions=["vector", "pgcrypto"], runtime_roles=[role], startup_role=role))
switch = cfg.get_bool("switch") or False
if cfg.get_bool("openai") is not False:
    # llmemory's own provider, made by its migration: adopted (its table is given: llmemory's migration does not use
    # the name llmemory derives for openai)
    openai = EmbeddingProvider("openai", EmbeddingProviderArgs(
        schema=db.schema_name, provider_id="openai-text-embedding-3-small", provider_type="openai",
        model_name="text-embedding-3-small", dimension=1536, table_name="embeddings_openai_3_small",
        default=not switch))
    pulumi.export("openai_coverage", openai.coverage)
if cfg.get_bool("minilm") is not False:
    minilm = EmbeddingProvider("minilm", EmbeddingProviderArgs(
        schema=db.schema_name, provider_id="local-minilm", provider_type="local", model_name="all-MiniLM-L6-v2",
        dimension=384, backfill=True, default=switch))
    pulumi.export("minilm_table", minilm.table_name)
    pulumi.export("minilm_index", minilm.index_name)
    pulumi.export("minilm_coverage", minilm.coverage)
    pulumi.export("minilm_default", minilm.is_default)
"""
NEW_TABLE = "llmemory.chunk_embeddings_all_minilm_l6_v2_384"
OLD_TABLE = "llmemory.embeddings_openai_3_small"



@pytest.fixture
def env(pg_server, bare_db, tmp_path):
    if not APP_PYTHON.exists():
        pytest.fail("the llmemory application's virtualenv is missing: run `make app-venv` (make test does)")
    role = f"llm_emb_{uuid.uuid4().hex[:8]}"
    bare_db.server_sql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{PASSWORD}'")
    project = h.write_project(tmp_path / "proj", PROGRAM)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name, config={"test:role": role})

    class Env:
        db = bare_db

        def configure(self, **values):
            for key, value in values.items():
                stack.set_config(f"test:{key}", auto.ConfigValue(str(value).lower()))
            return stack

        def app(self, *args, fails=False):
            dsn = dbs.url(dbs.with_params(bare_db.dsn, user=role, password=PASSWORD))
            out = subprocess.run([str(APP_PYTHON), str(APP), args[0], dsn, "llmemory", *args[1:]],
                                 capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken")})
            result = json.loads(out.stdout.strip().splitlines()[-1])
            assert ("error" in result) == fails, (result, out.stderr[-3000:])
            return result

    yield Env()
    bare_db.drop()
    bare_db.server_sql(f'DROP ROLE IF EXISTS "{role}"')


def refreshed(stack, name):
    """The outputs of resource ``name`` in the stack's state (a refresh updates them, not the stack's exports)."""
    resources = stack.export_stack().deployment["resources"]
    return next(r["outputs"] for r in resources if r["urn"].endswith(f"::{name}"))


def registry(db):
    return {row[0]: row[1:] for row in db.sql("SELECT provider_id, table_name, dimension, is_active, is_default "
                                              "FROM llmemory.embedding_providers")}


def exact(db, table, query, dimension, model, limit=5):
    """What an exact scan of ``table`` answers for the query's vector: [(chunk_id, similarity)]."""
    vector = fake.literal(fake.embed(query, dimension, model))
    with db.connect() as conn:
        conn.execute("SET enable_indexscan = off")
        return [(str(c), s) for c, s in conn.execute(
            f"SELECT e.chunk_id, 1 - (e.embedding <=> %s::vector) FROM {table} e ORDER BY e.embedding <=> %s::vector "
            "LIMIT %s", (vector, vector, limit)).fetchall()]


def assert_served_by(results, expected):
    got = [(r["chunk_id"], r["similarity"]) for r in results]
    assert [c for c, _ in got] == [c for c, _ in expected], (got, expected)
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(got, expected)), (got, expected)


def test_a_new_embedding_model_deployed_backfilled_and_switched_under_the_running_app(env):
    stack = env.configure(switch=False)
    result, text = h.run(stack.up)
    assert result is not None, text
    outputs = {k: v.value for k, v in result.outputs.items()}
    assert outputs["minilm_table"] == "chunk_embeddings_all_minilm_l6_v2_384"
    assert outputs["minilm_index"] == "idx_chunk_embeddings_all_minilm_l6_v2_384_embedding"
    assert outputs["minilm_default"] is False and outputs["minilm_coverage"] == 100  # no chunks yet
    assert registry(env.db) == {
        "openai-text-embedding-3-small": ("embeddings_openai_3_small", 1536, True, True),
        "local-minilm": ("chunk_embeddings_all_minilm_l6_v2_384", 384, True, False)}
    said = [line for line in text.splitlines() if "embedding provider openai-text-embedding-3-small:" in line]
    assert said and not [line for line in said if "created table" in line or "registered" in line or "built" in line]
    assert env.db.sql("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                      "'llmemory.idx_chunk_embeddings_all_minilm_l6_v2_384_embedding'::regclass") == [(True,)]

    # the application adds documents: its default provider (openai) embeds them
    added = env.app("add")["added"]
    chunks = env.db.sql("SELECT count(*) FROM llmemory.document_chunks")[0][0]
    assert len(added) == 6 and chunks >= 6

    # the next up sees chunks without a vector that are not queued for the new provider: the backfill queues them
    result, text = h.run(stack.up)
    assert result is not None, text
    assert f"backfill: queued {chunks:,} of {chunks:,} chunks for local-minilm" in text, text
    assert env.db.sql("SELECT status, count(*) FROM llmemory.embedding_queue WHERE provider_id = 'local-minilm' "
                      "GROUP BY 1") == [("pending", chunks)]

    # the old provider serves meanwhile: the application's search reads its table
    seen = env.app("search", "openai", "parrots imitate speech")
    assert_served_by(seen["vector"], exact(env.db, OLD_TABLE, "parrots imitate speech", 1536,
                                           "text-embedding-3-small"))

    # switching now is refused at preview, naming the coverage
    env.configure(switch=True)
    result, text = h.run(stack.preview)
    assert result is None
    assert "local-minilm cannot become llmemory's default provider yet: 0 of" in text, text
    assert "(coverage 0.00%), below min_coverage 100%" in text and "Traceback" not in text
    env.configure(switch=False)

    # the application embeds its queue: the new provider's table fills, coverage reaches 100%
    assert env.app("process")["processed"] == chunks
    assert env.db.sql(f"SELECT count(*) FROM {NEW_TABLE}") == [(chunks,)]
    result, _ = h.run(stack.refresh)
    assert result is not None
    assert refreshed(stack, "minilm-table")["coverage"] == 100

    # switch the default: one transaction
    env.configure(switch=True)
    result, text = h.run(stack.up)
    assert result is not None, text
    assert "default provider: openai-text-embedding-3-small -> local-minilm" in text, text
    assert result.outputs["minilm_default"].value is True
    assert registry(env.db) == {
        "openai-text-embedding-3-small": ("embeddings_openai_3_small", 1536, True, False),
        "local-minilm": ("chunk_embeddings_all_minilm_l6_v2_384", 384, True, True)}

    # the application's searches read the new provider's table now: its rows are the ones returned
    query = "parrots imitate speech"
    seen = env.app("search", "local-minilm", query)
    new = exact(env.db, NEW_TABLE, query, 384, "all-MiniLM-L6-v2")
    assert_served_by(seen["vector"], new)
    assert seen["vector"][0]["content"].startswith("Parrots can imitate human speech")
    old = exact(env.db, OLD_TABLE, query, 1536, "text-embedding-3-small")
    assert [round(s, 4) for _, s in new] != [round(s, 4) for _, s in old]
    # hybrid: a query no chunk's text matches, so its ranking is the vector search's alone - the new table's order
    nothing = "zebra quasar xylophone"
    seen = env.app("search", "local-minilm", nothing)
    assert [r["chunk_id"] for r in seen["hybrid"]] == [c for c, _ in exact(env.db, NEW_TABLE, nothing, 384,
                                                                             "all-MiniLM-L6-v2")]
    assert [r["chunk_id"] for r in seen["hybrid"]] != [c for c, _ in exact(env.db, OLD_TABLE, nothing, 1536,
                                                                             "text-embedding-3-small")]

    # an instance still configured with the old model during the switch: its query vector has the old dimension,
    # which pgvector will not compare with the new table's (vector and hybrid search fail; text search works); the
    # documents it adds are queued for the new default (the database's), so the queue's processing embeds them
    refused = env.app("search", "openai", query, fails=True)["error"]
    assert "different vector dimensions 384 and 1536" in refused, refused
    late = env.app("add-late", "openai")
    before, chunks = chunks, env.db.sql("SELECT count(*) FROM llmemory.document_chunks")[0][0]
    assert late["embedded"] == 0 and chunks > before
    assert env.app("process")["processed"] == chunks - before
    assert env.db.sql(f"SELECT count(*) FROM {NEW_TABLE}") == [(chunks,)]
    assert env.app("search", "local-minilm", "volcanoes lava")["vector"][0]["content"].startswith("Volcanoes")

    # the old provider still serves until it is removed: registered, its table whole
    assert env.db.sql(f"SELECT count(*) FROM {OLD_TABLE}") == [(before,)]
    env.configure(openai=False)
    result, text = h.run(stack.up)
    assert result is not None, text
    # unregistered (kept inactive: the application's search history refers to it), its table kept
    assert registry(env.db)["openai-text-embedding-3-small"] == ("embeddings_openai_3_small", 1536, False, False)
    assert "kept its registry row inactive" in text and "kept table llmemory.embeddings_openai_3_small" in text
    assert env.db.sql(f"SELECT count(*) FROM {OLD_TABLE}") == [(before,)]
    assert_served_by(env.app("search", "local-minilm", query)["vector"],
                     exact(env.db, NEW_TABLE, query, 384, "all-MiniLM-L6-v2"))

    # removing the default provider is refused
    env.configure(minilm=False)
    result, text = h.run(stack.up)
    assert result is None
    assert "local-minilm is llmemory's default provider in llmemory" in text and "removing it is refused" in text
    assert "Traceback" not in text
    assert registry(env.db)["local-minilm"] == ("chunk_embeddings_all_minilm_l6_v2_384", 384, True, True)
    env.configure(minilm=True)
    result, text = h.run(stack.preview, refresh=True, expect_no_changes=True)
    assert result is not None, text
