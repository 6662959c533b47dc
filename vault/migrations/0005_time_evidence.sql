-- Chronos schema, version 5: trusted time's evidence and floor.
--
-- time_rounds: one row per round of the time service. `evidence` is the
-- exact canonical text (JSON) of the round: every configured source's
-- interval, verdict, offset, delay and raw answer (or why it did not
-- answer), the selection's rules and the agreed interval. `digest` is
-- SHA-256("chronos/time-evidence@v1\n" || evidence); a batch stamped with
-- quorum time names it in its time source (`quorum:K/N:<digest>`), so the
-- chain and the signed checkpoints cover the evidence of every round that
-- stamped a batch. Rows are only inserted.
CREATE TABLE time_rounds (
    round        bigint      PRIMARY KEY CHECK (round > 0),
    digest       bytea       NOT NULL UNIQUE CHECK (length(digest) = 32),
    -- The agreed interval (Unix ns), NULL when the sources did not agree.
    agreed_from  bigint,
    agreed_to    bigint,
    evidence     text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- time_floor: the greatest earliest end of an interval the time service
-- served (Unix ns): true time has passed it, so after a restart no
-- interval ending before it is accepted. Exactly one row.
CREATE TABLE time_floor (
    id        smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    floor_ns  bigint   NOT NULL CHECK (floor_ns >= 0)
);
INSERT INTO time_floor (floor_ns) VALUES (0);
