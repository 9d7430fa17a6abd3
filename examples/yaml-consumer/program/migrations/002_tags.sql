CREATE TABLE IF NOT EXISTS {{tables.tags}} (
    note_id BIGINT NOT NULL REFERENCES {{tables.notes}}(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (note_id, tag)
);
