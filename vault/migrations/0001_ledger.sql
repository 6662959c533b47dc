-- Chronos ledger schema, version 1 (spec/ledger.md, "Storage").
--
-- Logged tables (chronos_log, batches, tiles, checkpoints, audit_events) hold
-- everything needed to verify the ledger and to rebuild the logs table. The
-- logs table is UNLOGGED: fast to COPY into and to query, but PostgreSQL
-- truncates it after a crash; the vault writer rebuilds it from batches.
-- Integers that the ledger defines as u64 are stored as bigint; writers
-- refuse values above 2^63-1 (the year 2262 for nanosecond times).

-- The log's identity. Exactly one row.
CREATE TABLE chronos_log (
    id            smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    origin        text        NOT NULL CHECK (origin <> ''),
    hash_alg      text        NOT NULL CHECK (hash_alg IN ('blake3', 'sha256', 'blake3-keyed', 'hmac-sha256')),
    -- 8-byte fingerprint of the hash key of keyed logs (NULL otherwise).
    key_check     bytea       CHECK ((key_check IS NULL) = (hash_alg IN ('blake3', 'sha256'))
                                     AND (key_check IS NULL OR octet_length(key_check) = 8)),
    -- The checkpoint verifier key string, name+keyid+base64.
    verifier_key  text        NOT NULL,
    genesis       bytea       NOT NULL CHECK (octet_length(genesis) = 32),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per batch: the chained header and the canonical payload.
CREATE TABLE batches (
    seq             bigint      PRIMARY KEY CHECK (seq >= 1),
    first_leaf      bigint      NOT NULL UNIQUE CHECK (first_leaf >= 0),
    leaf_count      bigint      NOT NULL CHECK (leaf_count >= 1),
    root            bytea       NOT NULL CHECK (octet_length(root) = 32),
    chain           bytea       NOT NULL CHECK (octet_length(chain) = 32),
    time_ns         bigint      NOT NULL CHECK (time_ns >= 0),
    uncertainty_ns  bigint      NOT NULL CHECK (uncertainty_ns >= 0),
    time_source     text        NOT NULL CHECK (octet_length(time_source) BETWEEN 1 AND 64),
    -- How payload is encoded (spec/ledger.md, "Batch payload").
    payload_codec   smallint    NOT NULL,
    payload         bytea       NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per event. Rebuildable from batches.payload.
CREATE UNLOGGED TABLE logs (
    leaf_index    bigint      NOT NULL CHECK (leaf_index >= 0),
    batch_seq     bigint      NOT NULL,
    -- The event's own RFC 3339 `timestamp` field, if any: claimed, never trusted.
    claimed_time  timestamptz,
    leaf_hash     bytea       NOT NULL,
    event         bytea       NOT NULL,
    PRIMARY KEY (leaf_index)
) PARTITION BY RANGE (leaf_index);

-- Partitions cover 2^26 leaves each; the vault writer creates the next ones
-- ahead of need, UNLOGGED like this first one.
CREATE UNLOGGED TABLE logs_p0 PARTITION OF logs FOR VALUES FROM (0) TO (67108864);

-- Interior hashes of the global tree as C2SP tlog-tiles: tile (level, idx)
-- holds up to 256 consecutive hashes of tree level 8*level; width < 256
-- while the tile is partial.
CREATE TABLE tiles (
    level   smallint NOT NULL CHECK (level BETWEEN 0 AND 7),
    idx     bigint   NOT NULL CHECK (idx >= 0),
    width   smallint NOT NULL CHECK (width BETWEEN 1 AND 256),
    hashes  bytea    NOT NULL CHECK (octet_length(hashes) = 32 * width),
    PRIMARY KEY (level, idx)
);

-- Every signed checkpoint, as the exact signed note text.
CREATE TABLE checkpoints (
    id         bigserial   PRIMARY KEY,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    chain_seq  bigint      NOT NULL CHECK (chain_seq >= 0),
    note       text        NOT NULL,
    signed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkpoints_tree_size ON checkpoints (tree_size);

-- Security-relevant events: rejected input, failed signatures, recoveries.
CREATE TABLE audit_events (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    source  text        NOT NULL,
    kind    text        NOT NULL,
    detail  jsonb       NOT NULL DEFAULT '{}'
);
