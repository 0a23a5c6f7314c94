-- The donations transparency log: the kit's tables (pending queue, leaves, stored hashes,
-- tree size, checkpoints and the log_enqueue trigger function), as shared.tlog.store
-- defines them.
-- include: shared.tlog.store

-- One random salt per order for the order commitments in the leaves (created by the
-- sequencer with an order's first leaf, never changed).
CREATE TABLE order_salt (
    order_id text  PRIMARY KEY,
    salt     bytea NOT NULL CHECK (length(salt) = 16)
);

-- Every ledger entry inserted gets a pending row in the same transaction, one statement
-- per inserting statement; the record key is the entry's seq (the ledger's primary key).
CREATE TRIGGER ledger_entry_log AFTER INSERT ON ledger_entry
    REFERENCING NEW TABLE AS new FOR EACH STATEMENT
    EXECUTE FUNCTION log_enqueue('seq');

-- Entries recorded before the log existed are logged first, in their order.
INSERT INTO log_pending (record_table, record_key)
SELECT 'ledger_entry', seq::text FROM ledger_entry ORDER BY seq;
