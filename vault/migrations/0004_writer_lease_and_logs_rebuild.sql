-- Chronos schema, version 4: one writer per log, and the logs rebuild made durable.
--
-- writer_lease: the fencing token of the one instance allowed to write this
-- log. An instance takes the log's session advisory lock (see
-- chronos_vault::lease), then increments `epoch` and names itself in
-- `holder`; every commit of batches and checkpoints re-reads the row
-- FOR SHARE in its own transaction and refuses to commit when the epoch is
-- not its own. A second instance therefore either cannot start (the lock is
-- held) or, if it took over, fences the first out of every later commit.
CREATE TABLE writer_lease (
    id           smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    epoch        bigint      NOT NULL CHECK (epoch >= 0),
    -- Who holds it: host, pid, data directory, as the holder wrote it.
    holder       text        NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO writer_lease (epoch, holder) VALUES (0, 'nobody yet');

-- logs_rebuild: leaves [from_leaf, to_leaf) whose `logs` rows are missing
-- because PostgreSQL crashed (UNLOGGED tables are emptied by crash
-- recovery) and are being restored from the batches' payloads while new
-- batches keep being committed above to_leaf. from_leaf advances in the
-- transaction that restores each chunk; the row is removed when done. The
-- batches table stays the truth: this row only tells readers (and
-- `chronos verify`) that the projection is incomplete, and where.
CREATE TABLE logs_rebuild (
    id          smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    from_leaf   bigint      NOT NULL CHECK (from_leaf >= 0),
    to_leaf     bigint      NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (from_leaf <= to_leaf)
);
