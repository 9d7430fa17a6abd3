"""Embedding providers against the real server, on llmemory 0.5.0's own schema (issue 22): the table and its
registry row in one transaction under a short lock_timeout, the vector index built concurrently (an INVALID leftover
rebuilt, a rebuild swapped in, a killed swap finished, the session's settings put back), the backfill in short
batches, the coverage and the default switch, drift at refresh, removal, and what the bad inputs say."""
import threading
import time

import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings, embedding_ops, embedding_steps, ops
from llmemory_db.migrate.embedding_errors import (CoverageError, DefaultProviderError, EmbeddingConflictError,
                                                  EmbeddingError, EmbeddingLockError)
from llmemory_db.migrate.embeddings import EmbeddingSettings
from llmemory_db.migrate.events import Collected
from llmemory_db.migrate.objects import managed_objects
from llmemory_db.migrate.render import render_files

LLMEMORY = Settings(migrations_package="llmemory", schema="llmemory")
TINY = EmbeddingSettings(schema="llmemory", provider_id="tiny", provider_type="local", model_name="org/Tiny-Model.v2",
                         dimension=8)
TABLE = "llmemory.chunk_embeddings_tiny_model_v2_8"
INDEX = "idx_chunk_embeddings_tiny_model_v2_8_embedding"


@pytest.fixture
def llm(db):
    """llmemory 0.5.0's schema (its own files, applied by the engine) with one document of 3,000 chunks."""
    db.sql("CREATE SCHEMA llmemory")
    with db.connect() as conn:
        migrate.apply(conn, LLMEMORY)
    db.sql("INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name) "
           "VALUES ('o', 'd', 'text', 'n')")
    db.sql("INSERT INTO llmemory.document_chunks (document_id, chunk_index, content, content_hash, token_count) "
           "SELECT document_id, g, 'chunk ' || g, md5(g::text), 2 FROM llmemory.documents, generate_series(1, 3000) g")
    return db


def fill(db, table=TABLE, dimension=8, share=1.0):
    """Vectors for ``share`` of the chunks (random, one per chunk)."""
    db.sql(f"INSERT INTO {table} (chunk_id, embedding) SELECT chunk_id, (SELECT array_agg(random()) FROM "
           f"generate_series(1, {dimension}) WHERE c.chunk_index > -1)::vector FROM llmemory.document_chunks c "
           f"WHERE c.chunk_index <= {int(3000 * share)}")


def apply(db, settings=TINY, known=False, **changes):
    events = Collected()
    with db.connect() as conn:
        result = embedding_ops.apply(conn, settings.replace(**changes), known=known, on_event=events)
    return result, events.texts()


def preflight(db, settings=TINY, known=False, **changes):
    events = Collected()
    with db.connect() as conn:
        result = embedding_ops.preflight(settings.replace(**changes), conn, known=known, on_event=events)
    return result, "\n".join(events.texts())


def registry(db):
    return db.sql("SELECT provider_id, table_name, dimension, is_active, is_default FROM llmemory.embedding_providers "
                  "ORDER BY 1")


def index_of(db, name=INDEX):
    return db.sql("SELECT c.relname, i.indisvalid, pg_get_indexdef(c.oid) FROM pg_index i JOIN pg_class c ON "
                  "c.oid = i.indexrelid WHERE i.indrelid = %s::regclass AND c.relname LIKE 'idx_%%' ORDER BY 1",
                  TABLE)


# --------------------------------------------------------------------------- create
def test_the_table_and_its_registry_row_then_its_index_in_llmemorys_shape(llm):
    result, said = apply(llm)
    assert (result.table, result.index, result.coverage, result.chunks, result.vectors) == \
        ("chunk_embeddings_tiny_model_v2_8", INDEX, 0.0, 3000, 0)
    assert ("tiny", "chunk_embeddings_tiny_model_v2_8", 8, True, False) in registry(llm)
    columns = llm.sql("SELECT column_name, data_type, udt_name, is_nullable, column_default FROM "
                      "information_schema.columns WHERE table_schema = 'llmemory' AND table_name = %s ORDER BY "
                      "ordinal_position", "chunk_embeddings_tiny_model_v2_8")
    theirs = llm.sql("SELECT column_name, data_type, udt_name, is_nullable FROM information_schema.columns WHERE "
                     "table_schema = 'llmemory' AND table_name = 'embeddings_openai_3_small' ORDER BY ordinal_position")
    assert [c[:4] for c in columns] == theirs  # llmemory's own provider table's shape
    assert columns[2][4] == "'org/Tiny-Model.v2'::text"  # model_version defaults to the model
    assert llm.sql("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND "
                   "contype = 'f'", TABLE) == [("FOREIGN KEY (chunk_id) REFERENCES llmemory.document_chunks(chunk_id) "
                                                "ON DELETE CASCADE",)]
    assert index_of(llm) == [(INDEX, True, f"CREATE INDEX {INDEX} ON {TABLE} USING hnsw (embedding "
                                            "vector_cosine_ops) WITH (m='16', ef_construction='200')")]
    # idempotent: a second run changes nothing
    again, said = apply(llm, known=True)
    assert again.changes == [] and not [t for t in said if "created" in t or "built" in t]


def test_table_and_registry_row_are_one_transaction(llm):
    """A registry insert that fails leaves no table behind: nothing half-registered."""
    llm.sql("CREATE FUNCTION llmemory.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'registry closed'; END $$")
    llm.sql("CREATE TRIGGER refuse BEFORE INSERT ON llmemory.embedding_providers FOR EACH ROW "
            "EXECUTE FUNCTION llmemory.refuse()")
    with pytest.raises(EmbeddingError, match="registry closed"):
        apply(llm)
    assert llm.sql("SELECT to_regclass(%s)", TABLE) == [(None,)]
    assert [r[0] for r in registry(llm)] == ["openai-text-embedding-3-small"]


def test_short_transactions_give_up_their_lock_wait_and_retry(llm, monkeypatch):
    """A session holding document_chunks (which the new table's foreign key locks): each attempt waits lock_timeout
    at most (the application is never queued behind a long wait), and the work goes through once the lock is free;
    past the retry budget, the error names the holder."""
    holder = llm.connect()
    lock = "LOCK TABLE llmemory.document_chunks IN SHARE ROW EXCLUSIVE MODE"
    holder.execute(f"BEGIN; {lock}")
    timer = threading.Timer(2.5, lambda: holder.execute("ROLLBACK"))
    timer.start()
    started = time.monotonic()
    apply(llm, lock_timeout=0.5)
    assert 2.4 < time.monotonic() - started < 15
    assert ("tiny", "chunk_embeddings_tiny_model_v2_8", 8, True, False) in registry(llm)

    holder.execute(f"BEGIN; {lock}")
    monkeypatch.setattr(embedding_steps, "RETRY_BUDGET", 1.0)
    with pytest.raises(EmbeddingLockError) as caught:
        apply(llm, TINY.replace(provider_id="tiny2", table_name="tiny2"), lock_timeout=0.2)
    assert f"pid {holder.info.backend_pid}" in str(caught.value) and "ShareRowExclusiveLock" in str(caught.value)
    assert caught.value.setting == "lock_timeout"
    holder.close()


# --------------------------------------------------------------------------- the index
def test_an_invalid_index_left_by_an_earlier_build_is_dropped_and_rebuilt(llm):
    apply(llm)
    fill(llm)
    llm.sql("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", f"llmemory.{INDEX}")
    refreshed = embedding_ops.refresh(llm.connect(), TINY)
    assert f"index llmemory.{INDEX} is INVALID (never used by the planner)" in refreshed.drift
    _, said = apply(llm, known=True)
    assert any(f"dropped the INVALID index llmemory.{INDEX}" in t for t in said), said
    assert [(n, v) for n, v, _ in index_of(llm)] == [(INDEX, True)]


def test_other_options_rebuild_beside_the_old_index_then_swap(llm):
    apply(llm)
    fill(llm)
    result, said = apply(llm, known=True, m=8, ef_construction=32)
    assert any("building its replacement" in t for t in said) and any("swapped in" in t for t in said)
    assert index_of(llm) == [(INDEX, True, f"CREATE INDEX {INDEX} ON {TABLE} USING hnsw (embedding "
                                            "vector_cosine_ops) WITH (m='8', ef_construction='32')")]
    # a run killed between the swap's steps (old dropped, new not renamed yet): the next one renames it
    llm.sql(f"CREATE INDEX {INDEX[:54]}_rebuild ON {TABLE} USING hnsw (embedding vector_l2_ops)")
    llm.sql(f"DROP INDEX llmemory.{INDEX}")
    _, said = apply(llm, known=True, operator_class="vector_l2_ops", m=16, ef_construction=64)
    assert any("an earlier run stopped between the swap's two steps" in t for t in said), said
    assert [(n, v) for n, v, _ in index_of(llm)] == [(INDEX, True)]


def test_the_build_session_waits_for_old_transactions_and_gets_its_settings_back(llm):
    """No lock_timeout or statement_timeout for the build (it would leave it INVALID): a transaction older than the
    build keeps it in its last phase, and it ends valid once that transaction ends; the session's own values are
    put back after."""
    apply(llm)
    fill(llm)
    llm.sql(f"DROP INDEX llmemory.{INDEX}")
    old = llm.connect()
    old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    old.execute("SELECT count(*) FROM llmemory.documents")
    threading.Timer(3.0, lambda: old.execute("ROLLBACK")).start()
    with llm.connect() as conn:
        conn.execute("SET statement_timeout = '1s'; SET lock_timeout = '500ms'; SET maintenance_work_mem = '10MB'")
        embedding_ops.apply(conn, TINY.replace(maintenance_work_mem="32MB", max_parallel_maintenance_workers=0),
                            known=True)
        assert conn.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                            "current_setting('maintenance_work_mem'), current_setting("
                            "'max_parallel_maintenance_workers')").fetchone() == ("1s", "500ms", "10MB", "2")
    old.close()
    assert [(n, v) for n, v, _ in index_of(llm)] == [(INDEX, True)]


# --------------------------------------------------------------------------- backfill, coverage, default
def test_the_backfill_queues_chunks_without_a_vector_in_short_batches(llm):
    apply(llm)
    fill(llm, share=0.5)
    llm.sql("INSERT INTO llmemory.embedding_queue (chunk_id, provider_id, status) SELECT chunk_id, 'tiny', 'failed' "
            "FROM llmemory.document_chunks WHERE chunk_index = 2999")
    statements = []
    with llm.connect() as conn:
        conn.add_notice_handler(lambda d: None)
        events = Collected()
        queued = embedding_steps.backfill(conn, TINY.replace(backfill_batch_size=400), events)
        statements.append(queued)
    assert queued == 1500  # 1,499 new, the failed one set pending again
    assert "1 failed or completed entries set pending again" in events.texts()[-1]
    assert "in batches of 400" in events.texts()[-1]
    assert llm.sql("SELECT status, count(*) FROM llmemory.embedding_queue WHERE provider_id = 'tiny' GROUP BY 1") == \
        [("pending", 1500)]
    assert llm.sql("SELECT count(*) FROM llmemory.embedding_queue q JOIN "
                   f"{TABLE} e USING (chunk_id) WHERE q.provider_id = 'tiny'") == [(0,)]
    result, said = apply(llm, known=True, backfill=True)
    assert result.queued == 1500 and "backfill: queued 0 of 3,000 chunks" in said[-1]


def test_the_default_switch_waits_for_the_coverage_then_is_one_transaction(llm):
    apply(llm)
    fill(llm, share=0.5)
    found, said = preflight(llm, known=True, default=True)
    assert [type(e) for e in found.failures] == [CoverageError]
    message = str(found.failures[0])
    assert "tiny cannot become llmemory's default provider yet: 1,500 of 3,000 chunks have a vector" in message
    assert "(coverage 50.00%), below min_coverage 100%" in message and found.failures[0].setting == "default"
    with pytest.raises(CoverageError):
        apply(llm, known=True, default=True)
    assert [r[0] for r in registry(llm) if r[4]] == ["openai-text-embedding-3-small"]

    found, said = preflight(llm, known=True, default=True, min_coverage=50)
    assert found.failures == [] and "default provider: openai-text-embedding-3-small -> tiny" in said
    result, said = apply(llm, known=True, default=True, min_coverage=50)
    assert result.is_default and [r[0] for r in registry(llm) if r[4]] == ["tiny"]
    assert "default provider: openai-text-embedding-3-small -> tiny (one transaction" in said[-1]
    # the old one, told default=False, is left as it is: it lost the default to the new one
    assert embedding_ops.refresh(llm.connect(), TINY.replace(default=True, min_coverage=50)).drift == []


# --------------------------------------------------------------------------- refresh, destroy
def test_refresh_names_what_was_changed_by_hand(llm):
    apply(llm)
    fill(llm)
    assert embedding_ops.refresh(llm.connect(), TINY).drift == []
    llm.sql("UPDATE llmemory.embedding_providers SET model_name = 'other' WHERE provider_id = 'tiny'")
    llm.sql(f"DROP INDEX llmemory.{INDEX}")
    llm.sql("UPDATE llmemory.embedding_providers SET is_default = true WHERE provider_id = 'tiny'")
    drift = embedding_ops.refresh(llm.connect(), TINY).drift
    assert drift == [
        "registry row of tiny changed by hand: model_name 'other' (deployed: 'org/Tiny-Model.v2')",
        "llmemory.embedding_providers marks 2 defaults (openai-text-embedding-3-small, tiny): llmemory picks one of "
        "them at random",
        f"index llmemory.{INDEX} is missing (searches scan the whole table)"]
    llm.sql(f"TRUNCATE {TABLE}; ALTER TABLE {TABLE} ALTER COLUMN embedding TYPE vector(16)")
    assert "dimension differs: llmemory.chunk_embeddings_tiny_model_v2_8.embedding is vector(16), the provider's " \
           "vectors are vector(8)" in embedding_ops.refresh(llm.connect(), TINY).drift
    # the update repairs the row and the index; a table of another dimension it refuses, naming the argument
    with pytest.raises(EmbeddingConflictError, match="embedding is vector.16., not vector.8."):
        apply(llm, known=True)


def test_removal_unregisters_and_keeps_the_table_and_refuses_the_default(llm):
    apply(llm)
    fill(llm)
    llm.sql("INSERT INTO llmemory.embedding_queue (chunk_id, provider_id) SELECT chunk_id, 'tiny' "
            "FROM llmemory.document_chunks LIMIT 10")
    with llm.connect() as conn:
        event = embedding_ops.destroy(conn, TINY)
    assert "deleted its 10 queue entries, unregistered it and kept table" in event.text
    assert "tiny" not in [r[0] for r in registry(llm)] and llm.sql(f"SELECT count(*) FROM {TABLE}") == [(3000,)]

    apply(llm, default=True)  # registered again, made the default (full coverage)
    with pytest.raises(DefaultProviderError, match="tiny is llmemory's default provider in llmemory") as refused:
        embedding_ops.destroy(llm.connect(), TINY)
    assert "drop_on_destroy=True on it first" in str(refused.value)  # the teardown's way
    with llm.connect() as conn:  # the old provider gives the default back; the search history refers to tiny
        embedding_ops.apply(conn, TINY.replace(provider_id="openai-text-embedding-3-small", provider_type="openai",
                                               model_name="text-embedding-3-small", dimension=1536,
                                               table_name="embeddings_openai_3_small", default=True, min_coverage=0),
                            known=True)
    llm.sql("INSERT INTO llmemory.search_history (owner_id, id_at_origin, query_text, provider_id, search_type) "
            "VALUES ('o', 'd', 'q', 'tiny', 'vector')")
    event = embedding_ops.destroy(llm.connect(), TINY)
    assert "kept its registry row inactive (is_active false: 1 search_history rows refer to it)" in event.text
    assert ("tiny", "chunk_embeddings_tiny_model_v2_8", 8, False, False) in registry(llm)
    event = embedding_ops.destroy(llm.connect(), TINY.replace(drop_on_destroy=True))
    assert "cleared it from 1 search_history rows" in event.text and "dropped table" in event.text
    assert llm.sql("SELECT to_regclass(%s)", TABLE) == [(None,)]
    assert llm.sql("SELECT provider_id FROM llmemory.search_history") == [(None,)]
    # a teardown (drop_on_destroy) removes even the default provider, and says what that leaves
    apply(llm, default=True, min_coverage=0)  # (its table was dropped: a new, empty one)
    events = Collected()
    event = embedding_ops.destroy(llm.connect(), TINY.replace(drop_on_destroy=True), events)
    assert "dropped table" in event.text and "llmemory has no default provider now" in events.texts()[0]
    assert [r for r in registry(llm) if r[4]] == []


# --------------------------------------------------------------------------- bad input, conflicts
def test_a_provider_id_whose_table_exists_in_another_shape_is_refused_naming_it(llm):
    llm.sql(f"CREATE TABLE {TABLE} (chunk_id uuid PRIMARY KEY, embedding vector(768))")
    found, _ = preflight(llm)
    assert [(type(e), e.setting) for e in found.failures] == [(EmbeddingConflictError, "provider_id")]
    assert f"table {TABLE} exists and is not this provider's shape (embedding is vector(768), not vector(8))" \
        in str(found.failures[0])
    assert "table_name='chunk_embeddings_tiny_model_v2_8_v2'" in str(found.failures[0])
    with pytest.raises(EmbeddingConflictError):
        apply(llm)
    assert [r[0] for r in registry(llm)] == ["openai-text-embedding-3-small"]  # nothing registered


def test_registry_conflicts_and_a_live_unknown_operator_class_are_named(llm):
    apply(llm)
    found, _ = preflight(llm, dimension=16)  # no in-place dimension change
    assert [e.setting for e in found.failures] == ["dimension"]
    assert "registered in llmemory.embedding_providers with table chunk_embeddings_tiny_model_v2_8 and dimension 8" \
        in str(found.failures[0]) and "second EmbeddingProvider with its own provider_id" in str(found.failures[0])
    found, _ = preflight(llm, table_name="chunk_embeddings_tiny_model_v2_8", dimension=16)
    assert [e.setting for e in found.failures] == ["table_name", "dimension"]  # and its table is vector(8)
    found, _ = preflight(llm, model_name="another")  # another model: another derived table than the row's
    assert [e.setting for e in found.failures] == ["table_name"]
    found, _ = preflight(llm, model_name="another", table_name="chunk_embeddings_tiny_model_v2_8")
    assert [e.setting for e in found.failures] == ["model_name"]  # a new deployment over another model's row
    found, said = preflight(llm, known=True, model_name="another", table_name="chunk_embeddings_tiny_model_v2_8")
    assert found.failures == []  # its own row, changed by hand: the update restores it
    found, _ = preflight(llm, provider_id="copy")  # two providers, one table
    assert [e.setting for e in found.failures] == ["provider_id"] and "registered for tiny already" in \
        str(found.failures[0])
    found, _ = preflight(llm, index_type="ivfflat", operator_class="vector_l1_ops")  # hnsw has it, ivfflat not
    assert [e.setting for e in found.failures] == ["operator_class"]
    assert "(this server has vector_cosine_ops, vector_ip_ops, vector_l2_ops)" in str(found.failures[0])


def test_the_preview_compares_the_graph_with_maintenance_work_mem(llm):
    found, said = preflight(llm, dimension=1536, provider_id="big")
    assert "at full coverage (3,000 chunks): 3,000 vectors x 1536 dimensions (vector) -> graph of about 20 MB: " \
           "fits in the server's maintenance_work_mem 64 MB" in said
    found, said = preflight(llm, dimension=1536, provider_id="big", maintenance_work_mem="8MB")
    assert "more than maintenance_work_mem 8MB (argument); the build spills to disk" in said
    assert "give maintenance_work_mem (e.g. 25MB)" in said


def test_halfvec_serves_llmemorys_vector_query_through_its_index(llm):
    """llmemory's search casts the query to vector; halfvec columns take it implicitly, and the index serves it."""
    halfvec = TINY.replace(provider_id="half", vector_type="halfvec", table_name="half")
    apply(llm, halfvec)
    fill(llm, "llmemory.half")
    llm.sql("ANALYZE llmemory.half")
    with llm.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT chunk_id FROM llmemory.half e ORDER BY e.embedding <=> %s::vector LIMIT 5",
            ("[" + ",".join(["0.5"] * 8) + "]",)).fetchall())
    assert "Index Scan using idx_half_embedding" in plan


def test_provider_tables_are_not_the_migrations_drift(llm):
    """The schema's drift fingerprint and the proofs of edited files leave out the tables providers made."""
    files = migrate.load(LLMEMORY.migrations_dir)
    managed = managed_objects(render_files(files, "llmemory").values(), "llmemory")
    with llm.connect() as conn:
        recorded = migrate.drift.inspect_target(conn, LLMEMORY, managed)
    apply(llm)
    fill(llm)
    with llm.connect() as conn:
        report = ops.check_drift(conn, LLMEMORY, managed, recorded, [m.filename for m in files], files)
    assert report.clean
