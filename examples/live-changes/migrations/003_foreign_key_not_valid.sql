-- A foreign key without the scan under lock: NOT VALID checks new rows only, at once.
ALTER TABLE {{tables.documents}}
    ADD CONSTRAINT documents_owner_fk FOREIGN KEY (owner_id) REFERENCES {{tables.owners}} (owner_id) NOT VALID;
