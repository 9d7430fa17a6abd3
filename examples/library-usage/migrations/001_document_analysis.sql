CREATE TABLE IF NOT EXISTS {{tables.document_analysis}} (
    document_id UUID PRIMARY KEY REFERENCES {{tables.documents}}(document_id) ON DELETE CASCADE,
    language TEXT,
    summary TEXT,
    analysed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
