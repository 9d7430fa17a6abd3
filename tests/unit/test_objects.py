"""Which objects the migrations manage: parsed from the rendered SQL (used for grants and drift)."""
from llmemory_db.migrate import load, render
from llmemory_db.migrate.objects import managed_objects


def test_llmemory_migrations():
    files = load("migrations")
    for schema in ("llmemory", None):
        managed = managed_objects([render(f.sql, schema) for f in files], schema)
        assert managed.tables == ["documents", "document_chunks", "embedding_providers",
                                  "chunk_embeddings_local_minilm", "embedding_queue", "search_history"]
        assert managed.sequences == ["embedding_queue_queue_id_seq", "search_history_search_id_seq"]
        assert managed.functions == ["update_updated_at_column"]


def test_kinds_and_schemas():
    sql = ("CREATE TABLE x (id int GENERATED ALWAYS AS IDENTITY, n serial);\n"
           "CREATE TABLE other.y (id int);\nCREATE MATERIALIZED VIEW mv AS SELECT 1;\nCREATE VIEW v AS SELECT 1;\n"
           "CREATE SEQUENCE sq;\nCREATE FUNCTION other.f() RETURNS int LANGUAGE sql AS 'select 1';\n"
           "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'select 1';\n")
    managed = managed_objects([sql], None)
    assert managed.tables == ["x"]
    assert managed.sequences == ["x_id_seq", "x_n_seq", "sq"]
    assert managed.views == ["mv", "v"] and managed.functions == ["g"]
