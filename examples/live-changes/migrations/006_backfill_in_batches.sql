-- pgdbm:no-transaction
-- The backfill, in batches of 5,000 rows, each committed on its own: no long transaction, no long row locks.
DO $$
DECLARE updated integer;
BEGIN
    LOOP
        UPDATE {{tables.documents}} SET title = left(body, 40)
        WHERE id IN (SELECT id FROM {{tables.documents}} WHERE title IS NULL LIMIT 5000);
        GET DIAGNOSTICS updated = ROW_COUNT;
        EXIT WHEN updated = 0;
        COMMIT;
    END LOOP;
END
$$;
