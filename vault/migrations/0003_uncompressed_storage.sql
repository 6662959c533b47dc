-- Chronos schema, version 3: no TOAST compression for values that cannot shrink.
--
-- Batch payloads arrive compressed (zstd, spec/ledger.md) and tile hashes
-- are random bytes: PostgreSQL's default (pglz, tried on every value over
-- 2 kB) spends CPU on each and keeps nothing. EXTERNAL stores them out of
-- line, uncompressed. Existing rows are not rewritten.
ALTER TABLE batches ALTER COLUMN payload SET STORAGE EXTERNAL;
ALTER TABLE tiles ALTER COLUMN hashes SET STORAGE EXTERNAL;
