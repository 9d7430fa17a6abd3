-- The tables as they are before the changes below (on a live database they hold millions of rows).
CREATE TABLE IF NOT EXISTS {{tables.owners}} (
    owner_id text PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS {{tables.documents}} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id text NOT NULL,
    body text NOT NULL,
    embedding vector(3)
);
