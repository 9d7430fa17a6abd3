-- llmemory-db:allow adding-not-nullable-field, ban-drop-constraint: 008 validated the CHECK (title IS NOT NULL), so PostgreSQL 12+ sets NOT NULL without a scan; the CHECK is redundant afterwards
-- ... then SET NOT NULL finds the validated CHECK and skips the scan (PostgreSQL 12+); the CHECK can go.
ALTER TABLE {{tables.documents}} ALTER COLUMN title SET NOT NULL;
ALTER TABLE {{tables.documents}} DROP CONSTRAINT documents_title_not_null;
