-- Then, in a later file, the scan of the existing rows: VALIDATE takes a lock that lets reads and writes go on.
ALTER TABLE {{tables.documents}} VALIDATE CONSTRAINT documents_owner_fk;
