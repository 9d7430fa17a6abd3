CREATE TABLE IF NOT EXISTS {{tables.notes}} (
    id bigserial PRIMARY KEY,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
