-- Chronos schema, version 6: the control plane's records.
--
-- control_log: every leaf of the log that is a control record (bytes
-- beginning "chronos/control-record@v1\n": a genesis of the operators'
-- keys, an accepted signed control event, a mode transition), copied in
-- the same transaction as its batch. The leaves themselves stay in
-- `batches` (the canonical payload) and `logs`, covered by the chain and
-- the signed checkpoints like every event; this table only lets the
-- orchestrator and `chronos control history` read the log's operation
-- without decoding every batch. The key registry is the replay of these
-- rows, in leaf order: it changes only through signed events. Rows are
-- only inserted.
CREATE TABLE control_log (
    leaf_index  bigint PRIMARY KEY CHECK (leaf_index >= 0),
    batch_seq   bigint NOT NULL REFERENCES batches (seq),
    kind        text   NOT NULL CHECK (kind IN ('genesis', 'event', 'transition')),
    record      bytea  NOT NULL
);
CREATE INDEX control_log_kind ON control_log (kind, leaf_index);
