-- pgdbm:no-transaction
-- The HNSW index on a large embeddings table: CONCURRENTLY as well (it can take long: writes go on meanwhile).
DROP INDEX CONCURRENTLY IF EXISTS {{schema}}.idx_documents_embedding;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_embedding
    ON {{tables.documents}} USING hnsw (embedding vector_cosine_ops);
