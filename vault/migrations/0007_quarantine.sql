-- Chronos schema, version 7: the quarantine.
--
-- quarantine: bodies refused for a policy reason rather than their syntax
-- (a claimed time outside the configured window), kept with the reason,
-- the body's idempotency key (`digest`: SHA-256 of the client's identity
-- and the decoded body, as ingest computes it) and its events as a
-- canonical payload (codec 1, spec/ledger.md §10), before the client is
-- answered 422. A signed `quarantine-release` writes the events into the
-- log as a new batch; a signed `quarantine-drop` keeps them out; both are
-- control records in the log, which is where a row's fate is read from
-- (this table is not part of the ledger and rows are only inserted). The
-- same body quarantined twice is one row.
CREATE TABLE quarantine (
    id           bigserial   PRIMARY KEY,
    digest       bytea       NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    reason       text        NOT NULL,
    event_count  bigint      NOT NULL CHECK (event_count >= 1),
    payload      bytea       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE quarantine ALTER COLUMN payload SET STORAGE EXTERNAL;
