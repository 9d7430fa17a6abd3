-- llmemory: documents, chunks, embeddings and search history.
-- Written in pgdbm's template syntax: {{tables.x}} becomes "<schema>".x in
-- schema-isolated mode and x in standalone mode; {{schema}} the schema itself.
-- Needs the pgvector extension (the MigratedSchema component creates it first).

CREATE TABLE IF NOT EXISTS {{tables.documents}} (
    document_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id TEXT NOT NULL,
    id_at_origin TEXT NOT NULL,
    document_type TEXT NOT NULL DEFAULT 'text',
    document_name TEXT NOT NULL,
    document_date TIMESTAMPTZ,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_documents_owner_id ON {{tables.documents}} (owner_id);
CREATE INDEX IF NOT EXISTS idx_documents_owner_origin ON {{tables.documents}} (owner_id, id_at_origin);
CREATE INDEX IF NOT EXISTS idx_documents_metadata ON {{tables.documents}} USING GIN (metadata);

CREATE TABLE IF NOT EXISTS {{tables.document_chunks}} (
    chunk_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id UUID NOT NULL REFERENCES {{tables.documents}}(document_id) ON DELETE CASCADE,
    parent_chunk_id UUID REFERENCES {{tables.document_chunks}}(chunk_id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    chunk_level INTEGER NOT NULL DEFAULT 0,
    content TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    token_count INTEGER,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    search_vector TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT document_chunks_unique_hash UNIQUE (document_id, content_hash)
);

CREATE INDEX IF NOT EXISTS idx_chunks_document_id ON {{tables.document_chunks}} (document_id);
CREATE INDEX IF NOT EXISTS idx_chunks_parent_id ON {{tables.document_chunks}} (parent_chunk_id);
CREATE INDEX IF NOT EXISTS idx_chunks_search_vector_gin ON {{tables.document_chunks}} USING GIN (search_vector);

CREATE TABLE IF NOT EXISTS {{tables.embedding_providers}} (
    provider_id TEXT PRIMARY KEY,
    provider_type TEXT NOT NULL,
    model_name TEXT NOT NULL,
    dimension INTEGER NOT NULL CHECK (dimension > 0),
    table_name TEXT NOT NULL,
    is_default BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS idx_embedding_providers_one_default
    ON {{tables.embedding_providers}} (is_default) WHERE is_default;

INSERT INTO {{tables.embedding_providers}} (provider_id, provider_type, model_name, dimension, table_name, is_default)
VALUES ('local-minilm', 'local', 'all-MiniLM-L6-v2', 384, 'chunk_embeddings_local_minilm', true)
ON CONFLICT (provider_id) DO NOTHING;

CREATE TABLE IF NOT EXISTS {{tables.chunk_embeddings_local_minilm}} (
    chunk_id UUID PRIMARY KEY REFERENCES {{tables.document_chunks}}(chunk_id) ON DELETE CASCADE,
    embedding vector(384) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_chunk_embeddings_local_minilm_hnsw
    ON {{tables.chunk_embeddings_local_minilm}} USING hnsw (embedding vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);

CREATE TABLE IF NOT EXISTS {{tables.embedding_queue}} (
    queue_id BIGSERIAL PRIMARY KEY,
    chunk_id UUID NOT NULL REFERENCES {{tables.document_chunks}}(chunk_id) ON DELETE CASCADE,
    provider_id TEXT NOT NULL REFERENCES {{tables.embedding_providers}}(provider_id),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS idx_embedding_queue_pending
    ON {{tables.embedding_queue}} (created_at) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS {{tables.search_history}} (
    search_id BIGSERIAL PRIMARY KEY,
    owner_id TEXT NOT NULL,
    query_text TEXT NOT NULL,
    search_type TEXT NOT NULL,
    result_count INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_search_history_owner_created ON {{tables.search_history}} (owner_id, created_at DESC);

CREATE OR REPLACE FUNCTION {{schema}}.update_updated_at_column()
RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS update_documents_updated_at ON {{tables.documents}};
CREATE TRIGGER update_documents_updated_at
    BEFORE UPDATE ON {{tables.documents}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.update_updated_at_column();
