"""An EmbeddingProvider's index build killed with `pulumi up`, and bad input at preview (issue 22), with the real CLI.

- SIGKILL of `pulumi up` in the middle of a concurrent rebuild of the vector index (whatever the machine's speed: a
  transaction holding an older snapshot keeps the build in its last phase until the kill), then `pulumi up` again
  (after `pulumi cancel`, which the dead CLI's lock needs): one valid index, built as asked, nothing left of the
  killed build, one registry row.
- Bad input, each refused at preview with a message naming the argument: a dimension over the index's limit
  (halfvec suggested), an operator class the server does not have, a provider id whose table exists in another
  shape, a second default.
"""
import json
import os
import subprocess

import psycopg
import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h
from tests.helpers.faults import backend_gone, kill_group, wait_for_build

pytestmark = pytest.mark.e2e

PROGRAM = """
import pulumi
from llmemory_db import EmbeddingProvider, EmbeddingProviderArgs, MigratedSchema, MigratedSchemaArgs

cfg = pulumi.Config("test")
db = MigratedSchema("llmemory", MigratedSchemaArgs(schema="llmemory", migrations_package="llmemory",
                    extensions=["vector", "pgcrypto"]))
p = EmbeddingProvider("small", EmbeddingProviderArgs(
    schema=db.schema_name, provider_id="small", provider_type="local", model_name="small-model", dimension=32,
    m=cfg.get_int("m") or 16, ef_construction=64))
pulumi.export("index", p.index_name)
"""
TABLE = "llmemory.chunk_embeddings_small_model_32"
INDEX = "idx_chunk_embeddings_small_model_32_embedding"


@pytest.fixture
def project(pg_server, bare_db, tmp_path):
    proj = h.write_project(tmp_path / "proj", PROGRAM)
    backend = tmp_path / "backend"
    h.stack(proj, backend, pg_server, bare_db.name)
    # progress lines every 0.2 s instead of every 10 s (the build here takes seconds, not hours)
    env = dict(os.environ, **h.pulumi_env(backend), LLMEMORY_DB_PROGRESS_INTERVAL="0.2")
    sessions = []

    class Project:
        dsn = pg_server.dsn(database=bare_db.name)
        db = bare_db

        def start(self, *args):
            proc = subprocess.Popen(["pulumi", *args, "--yes", "-s", "test"], cwd=proj, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            sessions.append(proc.pid)
            return proc

        def run(self, *args):
            proc = self.start(*args)
            out = proc.communicate(timeout=300)[0]
            return proc.returncode, out

        def config(self, key, value):
            subprocess.run(["pulumi", "config", "set", key, value, "-s", "test"], cwd=proj, env=env, check=True,
                           capture_output=True)

        def pending_operations(self):
            exported = subprocess.run(["pulumi", "stack", "export", "-s", "test"], cwd=proj, env=env,
                                      capture_output=True, text=True, check=True).stdout
            return [op["type"] for op in json.loads(exported)["deployment"].get("pending_operations") or []]

    yield Project()
    for sid in sessions:  # the CLI's own language host outlives a SIGKILLed CLI (Pulumi's behaviour)
        subprocess.run(["pkill", "-9", "-s", str(sid)], capture_output=True)



def indexes(db):
    return db.sql("SELECT c.relname, i.indisvalid, coalesce(array_to_string(c.reloptions, ','), '') FROM pg_index i "
                  "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass AND c.relname LIKE "
                  "'idx_%%' ORDER BY 1", TABLE)


def test_sigkill_of_pulumi_up_mid_build_then_up_again_ends_with_one_valid_index(project):
    code, out = project.run("up", "--skip-preview")
    assert code == 0, out
    project.db.sql("INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name) "
                   "VALUES ('o', 'd', 'text', 'n')")
    project.db.sql("INSERT INTO llmemory.document_chunks (document_id, chunk_index, content, content_hash, "
                   "token_count) SELECT document_id, g, 'c' || g, md5(g::text), 1 FROM llmemory.documents, "
                   "generate_series(1, 20000) g")
    project.db.sql(f"INSERT INTO {TABLE} (chunk_id, embedding) SELECT chunk_id, (SELECT array_agg(random()) FROM "
                   "generate_series(1, 32) WHERE c.chunk_index > 0)::vector FROM llmemory.document_chunks c")

    project.config("test:m", "24")  # the index is rebuilt beside the old one, then swapped in
    with psycopg.connect(project.dsn, autocommit=True) as snapshot:
        snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT count(*) FROM llmemory.documents")
        proc = project.start("up", "--skip-preview")
        pid = wait_for_build(project.dsn, proc, timeout=120.0, phase="waiting for old snapshots")
        kill_group(proc)
        backend_gone(project.dsn, pid, timeout=20)  # the provider exits with the engine; the server ends the build
        snapshot.execute("ROLLBACK")
    left = indexes(project.db)
    assert (INDEX, True, "m=16,ef_construction=64") in left  # the old index served throughout
    assert [v for n, v, _ in left if n.endswith("_rebuild")] == [False]  # the killed build's INVALID leftover
    assert project.pending_operations() == ["updating"]

    code, out = project.run("up", "--skip-preview")
    assert code != 0 and "the stack is currently locked" in out  # the dead CLI's lock
    assert project.run("cancel")[0] == 0
    code, out = project.run("up", "--skip-preview")
    assert code == 0, out
    assert "dropped the INVALID index llmemory.idx_chunk_embeddings_small_model_32_embedding_rebuild" in out, out
    assert "swapped in the rebuilt llmemory.idx_chunk_embeddings_small_model_32_embedding" in out
    progress = [line for line in out.splitlines() if "progress: embedding provider small CREATE INDEX CONCURRENTLY" in line]
    assert progress and "phase:" in progress[0], out  # pg_stat_progress_create_index, in pulumi up's output
    assert indexes(project.db) == [(INDEX, True, "m=24,ef_construction=64")]  # one valid index, as asked
    assert project.db.sql("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace "
                          "n ON n.oid = c.relnamespace WHERE n.nspname = 'llmemory' AND NOT i.indisvalid") == [(0,)]
    assert project.db.sql("SELECT provider_id, is_active, is_default FROM llmemory.embedding_providers WHERE "
                          "provider_id = 'small'") == [("small", True, False)]
    assert project.pending_operations() == []


# --------------------------------------------------------------------------- bad input, at preview
BAD = """
import pulumi
from llmemory_db import EmbeddingProvider, EmbeddingProviderArgs, MigratedSchema, MigratedSchemaArgs

cfg = pulumi.Config("test")
db = MigratedSchema("llmemory", MigratedSchemaArgs(schema="llmemory", migrations_package="llmemory",
                    extensions=["vector", "pgcrypto"]))
base = dict(schema=db.schema_name, provider_type="local")
EmbeddingProvider("ok", EmbeddingProviderArgs(**base, provider_id="ok", model_name="m1", dimension=8,
                                              default=cfg.get_bool("twodefaults") or False))
case = cfg.get("case")
if case == "dimension":
    EmbeddingProvider("large", EmbeddingProviderArgs(**base, provider_id="large", model_name="big", dimension=3072))
if case == "opclass":
    EmbeddingProvider("ivf", EmbeddingProviderArgs(**base, provider_id="ivf", model_name="m2", dimension=8,
                                                   index_type="ivfflat", operator_class="vector_l1_ops"))
if case == "collision":
    EmbeddingProvider("clash", EmbeddingProviderArgs(**base, provider_id="clash", model_name="clash", dimension=8))
if case == "default":
    EmbeddingProvider("second", EmbeddingProviderArgs(**base, provider_id="second", model_name="m3", dimension=8,
                                                      default=True))
"""


def test_bad_input_is_refused_at_preview_naming_the_argument(pg_server, bare_db, tmp_path):
    project = h.write_project(tmp_path / "proj", BAD)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name)
    stack.up(on_output=lambda _: None)
    bare_db.sql("CREATE TABLE llmemory.chunk_embeddings_clash_8 (id int, embedding vector(768))")

    def preview(case, **config):
        stack.set_config("test:case", auto.ConfigValue(case))
        for key, value in config.items():
            stack.set_config(f"test:{key}", auto.ConfigValue(value))
        lines = []
        try:
            stack.preview(on_output=lines.append)
        except auto.CommandError as exc:
            return "\n".join(lines) + str(exc)
        raise AssertionError(f"the preview of {case} passed:\n" + "\n".join(lines))

    text = preview("dimension")
    assert "Invalid value 3072 for dimension: over hnsw's limit of 2,000 dimensions for vector columns" in text
    assert "vector_type='halfvec'" in text
    text = preview("opclass")
    assert "Invalid value 'vector_l1_ops' for operator_class: ivfflat has no such operator class for vector " \
           "columns (this server has vector_cosine_ops, vector_ip_ops, vector_l2_ops)" in text
    text = preview("collision")
    assert "table llmemory.chunk_embeddings_clash_8 exists and is not this provider's shape (no chunk_id column; " \
           "embedding is vector(768), not vector(8))" in text and "table_name='chunk_embeddings_clash_8_v2'" in text
    text = preview("default", twodefaults="true")
    assert "are both default=True in schema llmemory: llmemory has one default provider" in text
    for text in (preview("dimension"), preview("opclass"), preview("collision")):
        assert "Traceback" not in text
    # nothing of it was created
    assert bare_db.sql("SELECT provider_id FROM llmemory.embedding_providers ORDER BY 1") == \
        [("ok",), ("openai-text-embedding-3-small",)]
