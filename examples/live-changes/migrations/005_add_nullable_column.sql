-- A new column: nullable, and added without a default it is a catalog change only (no rewrite). The default
-- set afterwards covers the rows written from now on; the rows already there are backfilled by 006.
ALTER TABLE {{tables.documents}} ADD COLUMN IF NOT EXISTS title text;
ALTER TABLE {{tables.documents}} ALTER COLUMN title SET DEFAULT '';
