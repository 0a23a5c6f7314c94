-- The charities transparency log: the kit's tables (pending queue, leaves, stored hashes,
-- tree size, checkpoints and the log_enqueue trigger function), as shared.tlog.store
-- defines them.
-- include: shared.tlog.store

-- An allocation's record key in the log is '<disbursement_id>:<entry_id>' (its primary
-- key in one text), kept as a column so that the kit's trigger can queue it.
ALTER TABLE allocation
    ADD COLUMN log_key text GENERATED ALWAYS AS (disbursement_id::text || ':' || entry_id::text) STORED;

-- Every disbursement and allocation inserted gets a pending row in the same transaction,
-- one statement per inserting statement (a disbursement and its allocations are one
-- statement, so one transaction).
CREATE TRIGGER disbursement_log AFTER INSERT ON disbursement
    REFERENCING NEW TABLE AS new FOR EACH STATEMENT
    EXECUTE FUNCTION log_enqueue('disbursement_id');
CREATE TRIGGER allocation_log AFTER INSERT ON allocation
    REFERENCING NEW TABLE AS new FOR EACH STATEMENT
    EXECUTE FUNCTION log_enqueue('log_key');

-- Disbursements recorded before the log existed are logged first, in their order, each
-- followed by its allocations.
INSERT INTO log_pending (record_table, record_key)
SELECT record_table, record_key FROM (
    SELECT 'disbursement' AS record_table, disbursement_id::text AS record_key,
           recorded_at, disbursement_id, NULL::uuid AS entry_id
    FROM disbursement
    UNION ALL
    SELECT 'allocation', a.log_key, d.recorded_at, a.disbursement_id, a.entry_id
    FROM allocation AS a JOIN disbursement AS d USING (disbursement_id)
) AS r
ORDER BY recorded_at, disbursement_id, entry_id NULLS FIRST;
