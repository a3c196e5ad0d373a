-- The write path's functions. Every number a row carries is chosen here, by
-- PostgreSQL, under the session's row lock; Python never picks one.

-- Claim a stream for a new lease holder: from now on no transaction with a
-- lower fencing number can commit on it. Returns the last applied entry id.
CREATE OR REPLACE FUNCTION rowcast.claim(p_stream text, p_fence bigint)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    cur rowcast.offsets;
BEGIN
    INSERT INTO rowcast.offsets (stream) VALUES (p_stream) ON CONFLICT (stream) DO NOTHING;
    SELECT * INTO cur FROM rowcast.offsets WHERE stream = p_stream FOR UPDATE;
    IF cur.fence > p_fence THEN
        RAISE EXCEPTION 'fenced: % is held by fencing number %, not %', p_stream, cur.fence, p_fence
            USING ERRCODE = 'RC001', DETAIL = cur.fence::text;
    END IF;
    UPDATE rowcast.offsets SET fence = p_fence, updated_at = now() WHERE stream = p_stream;
    RETURN cur.last_ms || '-' || cur.last_seq;
END
$$;

-- Move a stream's offset forward over the entries first..last, refusing a
-- stale fencing number and entries that are already applied.
CREATE OR REPLACE FUNCTION rowcast.advance(
    p_stream text, p_fence bigint,
    p_first_ms bigint, p_first_seq bigint, p_last_ms bigint, p_last_seq bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cur rowcast.offsets;
BEGIN
    SELECT * INTO cur FROM rowcast.offsets WHERE stream = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rowcast.offsets (stream) VALUES (p_stream) ON CONFLICT (stream) DO NOTHING;
        SELECT * INTO cur FROM rowcast.offsets WHERE stream = p_stream FOR UPDATE;
    END IF;
    IF cur.fence > p_fence THEN
        RAISE EXCEPTION 'fenced: % is held by fencing number %, not %', p_stream, cur.fence, p_fence
            USING ERRCODE = 'RC001', DETAIL = cur.fence::text;
    END IF;
    IF (cur.last_ms, cur.last_seq) >= (p_first_ms, p_first_seq) THEN
        RAISE EXCEPTION 'entries from %-% of % are already applied (up to %-%)',
            p_first_ms, p_first_seq, p_stream, cur.last_ms, cur.last_seq
            USING ERRCODE = 'RC002';
    END IF;
    UPDATE rowcast.offsets
       SET last_ms = p_last_ms, last_seq = p_last_seq, fence = p_fence, updated_at = now()
     WHERE stream = p_stream;
END
$$;

-- Apply one batch of merged entries (one element per (session, row), in
-- first-seen stream order). p_upserts counts all upserts of the row in the
-- batch, p_later those after its first entry; kind/body are the row's final
-- ones; p_entry_* is the id of the last entry merged (the original id for a
-- replayed entry). A replayed upsert applies only to a row last written by
-- an older entry, so replaying what is stored changes nothing.
-- p_overwritten holds the bodies merged away (an upsert replaced them within
-- the batch): PostgreSQL judges them too, so whether a bad body is refused
-- never depends on how entries happened to be batched. Returns one line per element: its sequence, the revision before
-- (NULL when the row is new) and after, and its change number (NULL when
-- nothing changed: duplicate appends).
CREATE OR REPLACE FUNCTION rowcast.apply_batch(
    p_stream text, p_fence bigint,
    p_first_ms bigint, p_first_seq bigint, p_last_ms bigint, p_last_seq bigint,
    p_sessions text[], p_rows text[], p_kinds text[], p_bodies text[],
    p_upserts int[], p_later int[],
    p_entry_ms bigint[], p_entry_seq bigint[], p_replayed boolean[],
    p_overwritten text[])
RETURNS TABLE (o_pos bigint, o_sequence bigint, o_old_revision bigint,
               o_revision bigint, o_change bigint, o_old_change bigint)
LANGUAGE plpgsql
-- The best plan depends on the batch and the table size: never cache one.
SET plan_cache_mode = force_custom_plan
-- A batch touches a few hundred rows of a table that may hold millions: look
-- each up through its index. A hash or merge join would read the whole table
-- (the planner picks one while the table is small, and that cost grows with it).
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    IF p_stream IS NOT NULL THEN
        PERFORM rowcast.advance(p_stream, p_fence, p_first_ms, p_first_seq, p_last_ms, p_last_seq);
    END IF;

    PERFORM b::jsonb FROM unnest(p_overwritten) AS b;

    -- Heads of new sessions, then every head of the batch locked in sorted
    -- order, so two transactions never wait on each other in a cycle.
    INSERT INTO rowcast.sessions (session_id)
    SELECT DISTINCT s FROM unnest(p_sessions) AS s ORDER BY s
    ON CONFLICT (session_id) DO NOTHING;
    PERFORM 1 FROM rowcast.sessions h
     WHERE h.session_id = ANY (p_sessions)
     ORDER BY h.session_id
       FOR UPDATE;

    -- A new statement, so a new snapshot: it sees everything committed
    -- before the locks above were granted.
    RETURN QUERY
    WITH input AS (
        SELECT t.*
          FROM unnest(p_sessions, p_rows, p_kinds, p_bodies, p_upserts, p_later,
                      p_entry_ms, p_entry_seq, p_replayed)
               WITH ORDINALITY AS t (session_id, row_id, kind, body, upserts, later,
                                     entry_ms, entry_seq, replayed, pos)
    ), looked AS (
        SELECT i.*, r.sequence AS old_seq, r.revision AS old_rev, r.change AS old_chg,
               (r.row_id IS NULL) AS is_new,
               (r.row_id IS NOT NULL AND i.upserts > 0
                AND (NOT i.replayed OR (r.entry_ms, r.entry_seq) < (i.entry_ms, i.entry_seq)))
                   AS replaces
          FROM input i
          LEFT JOIN rowcast.rows r ON r.session_id = i.session_id AND r.row_id = i.row_id
    ), plan AS (
        SELECT l.*, (l.is_new OR l.replaces) AS changed FROM looked l
    ), numbered AS (
        SELECT p.*,
               CASE WHEN p.is_new
                    THEN h.next_sequence - 1 + count(*) FILTER (WHERE p.is_new) OVER w
                    ELSE p.old_seq END AS n_seq,
               CASE WHEN p.changed
                    THEN h.last_change + count(*) FILTER (WHERE p.changed) OVER w END AS n_chg,
               CASE WHEN p.is_new THEN p.later::bigint
                    WHEN p.replaces THEN p.old_rev + p.upserts
                    ELSE p.old_rev END AS n_rev
          FROM plan p
          JOIN rowcast.sessions h ON h.session_id = p.session_id
        WINDOW w AS (PARTITION BY p.session_id ORDER BY p.pos)
    ), inserted AS (
        INSERT INTO rowcast.rows (session_id, row_id, sequence, revision, change, kind, body,
                                  entry_ms, entry_seq)
        SELECT n.session_id, n.row_id, n.n_seq, n.n_rev, n.n_chg, n.kind, n.body::jsonb,
               n.entry_ms, n.entry_seq
          FROM numbered n
         WHERE n.is_new
         ORDER BY n.pos
    ), updated AS (
        UPDATE rowcast.rows r
           SET kind = n.kind, body = n.body::jsonb, revision = n.n_rev, change = n.n_chg,
               entry_ms = n.entry_ms, entry_seq = n.entry_seq, updated_at = now()
          FROM numbered n
         WHERE n.replaces
           AND r.session_id = n.session_id AND r.row_id = n.row_id
    ), heads AS (
        UPDATE rowcast.sessions h
           SET next_sequence = h.next_sequence + a.new_rows,
               last_change = h.last_change + a.changes,
               updated_at = now()
          FROM (SELECT n.session_id,
                       count(*) FILTER (WHERE n.is_new) AS new_rows,
                       count(*) FILTER (WHERE n.changed) AS changes
                  FROM numbered n GROUP BY n.session_id) a
         WHERE h.session_id = a.session_id AND a.changes > 0
    )
    SELECT n.pos, n.n_seq, n.old_rev, n.n_rev, n.n_chg, n.old_chg
      FROM numbered n
     ORDER BY n.pos;
END
$$;
