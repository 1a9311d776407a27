-- Every claim and every outcome updates a message's status, attempts and times. Postgres can
-- make such an update HOT (a new row version on the same page, no index touched) only when no
-- column an index covers changes, nor one a partial index's WHERE reads. The frequency cap's
-- two indexes read `sent_at` and `status`, so since they came every update of every message,
-- bulk or not, wrote an entry into each of the table's indexes. One index on what never
-- changes serves the cap: a recipient's bulk messages, whose `sent_at` and `status` the cap
-- reads from the rows themselves (one per bulk message the recipient was sent within the
-- tenant's retention).
DROP INDEX messages_bulk_by_recipient;
DROP INDEX messages_bulk_sending;
CREATE INDEX messages_bulk_recipient ON messages (tenant_id, to_addr) WHERE priority = 'bulk';
ALTER TABLE messages SET (fillfactor = 50);
