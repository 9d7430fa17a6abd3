CREATE TABLE IF NOT EXISTS {{tables.notes}} (
    id BIGSERIAL PRIMARY KEY,
    body TEXT NOT NULL,
    embedding vector(3),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
