-- Chronos schema, version 2: idempotency keys of ingested bodies.
--
-- A retried POST /ingest (same decoded body) must get the first answer and
-- store nothing twice. The key is SHA-256 of the decoded body; it is
-- written in the same transaction as its batch, so a committed batch always
-- has its key, and keys older than the configured window are deleted by
-- the vault writer (ingest_keys is bookkeeping, not part of the ledger:
-- deleting rows here never affects verification).
CREATE TABLE ingest_keys (
    key          bytea       PRIMARY KEY CHECK (octet_length(key) = 32),
    seq          bigint      NOT NULL CHECK (seq >= 1),
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_keys_received_at ON ingest_keys (received_at);
