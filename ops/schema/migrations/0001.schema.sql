-- rowcast's schema: rows, session heads, and the writer's per-stream offsets.
CREATE SCHEMA IF NOT EXISTS rowcast;

CREATE TABLE rowcast.sessions (
    session_id    text PRIMARY KEY,
    next_sequence bigint NOT NULL DEFAULT 0,
    last_change   bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sessions_updated_at ON rowcast.sessions (updated_at DESC);

CREATE TABLE rowcast.rows (
    session_id text NOT NULL,
    row_id     text NOT NULL,
    sequence   bigint NOT NULL,
    revision   bigint NOT NULL DEFAULT 0,
    change     bigint NOT NULL,
    kind       text NOT NULL,
    body       jsonb NOT NULL,
    -- The input entry that last wrote the row (its original id for a
    -- replayed entry): lets a replay skip what a row already reflects.
    entry_ms   bigint NOT NULL DEFAULT 0,
    entry_seq  bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rows_pkey PRIMARY KEY (session_id, row_id),
    CONSTRAINT rows_session_sequence_key UNIQUE (session_id, sequence)
);

-- Catch-up reads "changes after C" of one session.
CREATE INDEX rows_session_change ON rowcast.rows (session_id, change);

-- The tracking record: the last entry id applied from each input stream,
-- written in the same transaction as the rows it produced, and the fencing
-- number of the writer that wrote it. Keyed by the stream's full Redis key so
-- two prefixes sharing a database never mistake each other's offsets.
CREATE TABLE rowcast.offsets (
    stream     text PRIMARY KEY,
    last_ms    bigint NOT NULL DEFAULT 0,
    last_seq   bigint NOT NULL DEFAULT 0,
    fence      bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Entries PostgreSQL refused, recorded in the transaction that skipped them,
-- so a writer restarted between COMMIT and its Redis side effects dead-letters
-- them again with the same reason instead of guessing.
CREATE TABLE rowcast.rejects (
    stream     text NOT NULL,
    entry_id   text NOT NULL,
    error      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, entry_id)
);
