-- pgdbm:no-transaction
-- An index on a live table: CONCURRENTLY builds it without blocking writes. It cannot run in a transaction,
-- and an interrupted build leaves an INVALID index behind: drop it first, so that the file can run again.
DROP INDEX CONCURRENTLY IF EXISTS {{schema}}.idx_documents_owner;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_owner ON {{tables.documents}} (owner_id);
