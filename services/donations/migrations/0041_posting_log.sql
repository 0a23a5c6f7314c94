-- Postings join the donations log: every posting inserted gets a pending row in the same
-- transaction (one statement per inserting statement, as for ledger_entry in 0040); the
-- record key is the posting's seq. Its leaf is the "posting" leaf of docs/LOG.md.
CREATE TRIGGER posting_log AFTER INSERT ON posting
    REFERENCING NEW TABLE AS new FOR EACH STATEMENT
    EXECUTE FUNCTION log_enqueue('seq');

-- Postings made before this migration are logged next, in their order.
INSERT INTO log_pending (record_table, record_key)
SELECT 'posting', seq::text FROM posting ORDER BY seq;
