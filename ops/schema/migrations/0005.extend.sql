-- Streaming text: the op extend. PostgreSQL computes every body an extend
-- makes, in the batch's one statement; Python never reads a row to build one.

-- Fold steps into a body, in order: a JSON array of [code, value] where code
-- 1 replaces the body with value (an upsert) and 2 extends it (value is an
-- object: each string is appended to the body's string at that key, empty
-- when absent or not a string; any other value replaces; other keys stay).
-- Each extend is judged on its own: a body that is not an object, or one
-- that would grow past p_max bytes (as PostgreSQL prints it), is refused
-- (SQLSTATE classes 22 and 54, so the writer isolates the entry by
-- bisection), with the same outcome as if every entry had come alone.
CREATE FUNCTION rowcast.extended(p_body jsonb, p_steps jsonb, p_max bigint)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    cur jsonb := p_body;
    step jsonb;
    pairs jsonb;
    k text;
    v jsonb;
    only_strings boolean;
    grown boolean := false;
BEGIN
    -- Indexes and scalar functions only: a query per step (FOR ... IN SELECT)
    -- would cost an executor start-up, more than the step itself.
    FOR i IN 0 .. coalesce(jsonb_array_length(p_steps), 0) - 1 LOOP
        step := p_steps -> i;
        IF (step ->> 0) = '1' THEN
            IF grown THEN
                PERFORM rowcast.check_size(cur, p_max);
                grown := false;
            END IF;
            cur := step -> 1;
            CONTINUE;
        END IF;
        IF jsonb_typeof(cur) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'extend: the row''s body is %, not a JSON object', jsonb_typeof(cur)
                USING ERRCODE = '22023';
        END IF;
        pairs := jsonb_path_query_array(step -> 1, '$.keyvalue()');
        only_strings := true;
        FOR j IN 0 .. jsonb_array_length(pairs) - 1 LOOP
            k := pairs -> j ->> 'key';
            v := pairs -> j -> 'value';
            IF jsonb_typeof(v) = 'string' THEN
                v := to_jsonb(CASE WHEN jsonb_typeof(cur -> k) = 'string' THEN cur ->> k ELSE '' END
                              || (v #>> '{}'));
            ELSE
                only_strings := false;
            END IF;
            cur := cur || jsonb_build_object(k, v);
        END LOOP;
        grown := true;
        -- Appending strings only makes the body longer, so one check at the
        -- end of a run of such extends finds any step of it that is too large;
        -- other values may shrink it: check right away.
        IF NOT only_strings THEN
            PERFORM rowcast.check_size(cur, p_max);
            grown := false;
        END IF;
    END LOOP;
    IF grown THEN
        PERFORM rowcast.check_size(cur, p_max);
    END IF;
    RETURN cur;
END
$$;

CREATE FUNCTION rowcast.check_size(p_body jsonb, p_max bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    size bigint;
BEGIN
    IF p_max IS NOT NULL THEN
        size := octet_length(p_body::text);
        IF size > p_max THEN
            RAISE EXCEPTION 'extend: the body would be % bytes, over the limit of %', size, p_max
                USING ERRCODE = '54000';
        END IF;
    END IF;
END
$$;

DROP FUNCTION rowcast.apply_batch(text, bigint, bigint, bigint, bigint, bigint,
    text[], text[], text[], text[], int[], int[], bigint[], bigint[], boolean[], text[]);

-- Apply one batch of merged entries (one element per (session, row), in
-- first-seen stream order; writer/batch.py's Merged documents each array).
-- p_bumps: revisions an existing row gains (its upserts and extends);
-- p_revision_if_new: the revision a new row ends at. Without steps an
-- element's body is its final one; with steps (it has extends) a new row gets
-- rowcast.extended(body, steps) and an existing one rowcast.extended(its
-- body, [first entry's step] + steps), p_first_step being 0 when the first
-- entry is an append (it changes nothing on an existing row). p_entry_* is
-- the id of the last entry merged (the original id for a replayed entry). A
-- replayed upsert or extend applies only to a row last written by an older
-- entry, so replaying what is stored changes nothing. p_overwritten holds the
-- bodies merged away (an upsert replaced them within the batch): PostgreSQL
-- judges them too. Returns one line per element: its sequence, the revision
-- before (NULL when the row is new) and after, its change number (NULL when
-- nothing changed: duplicate appends), the change number before, and the
-- body PostgreSQL computed when the element had steps and changed the row.
CREATE FUNCTION rowcast.apply_batch(
    p_stream text, p_fence bigint,
    p_first_ms bigint, p_first_seq bigint, p_last_ms bigint, p_last_seq bigint,
    p_sessions text[], p_rows text[], p_kinds text[], p_bodies text[],
    p_bumps int[], p_revision_if_new int[],
    p_entry_ms bigint[], p_entry_seq bigint[], p_replayed boolean[],
    p_overwritten text[], p_steps text[], p_first_step smallint[], p_max_body bigint)
RETURNS TABLE (o_pos bigint, o_sequence bigint, o_old_revision bigint,
               o_revision bigint, o_change bigint, o_old_change bigint, o_body text)
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
          FROM unnest(p_sessions, p_rows, p_kinds, p_bodies, p_bumps, p_revision_if_new,
                      p_entry_ms, p_entry_seq, p_replayed, p_steps, p_first_step)
               WITH ORDINALITY AS t (session_id, row_id, kind, body, bumps, revision_if_new,
                                     entry_ms, entry_seq, replayed, steps, first_step, pos)
    ), looked AS (
        SELECT i.*, r.sequence AS old_seq, r.revision AS old_rev, r.change AS old_chg,
               r.body AS old_body,
               (r.row_id IS NULL) AS is_new,
               (r.row_id IS NOT NULL AND i.bumps > 0
                AND (NOT i.replayed OR (r.entry_ms, r.entry_seq) < (i.entry_ms, i.entry_seq)))
                   AS replaces
          FROM input i
          LEFT JOIN rowcast.rows r ON r.session_id = i.session_id AND r.row_id = i.row_id
    ), plan AS (
        SELECT l.*, (l.is_new OR l.replaces) AS changed,
               CASE WHEN l.steps IS NULL AND (l.is_new OR l.replaces) THEN l.body::jsonb
                    WHEN l.is_new THEN rowcast.extended(l.body::jsonb, l.steps::jsonb, p_max_body)
                    WHEN l.replaces THEN rowcast.extended(
                        l.old_body,
                        CASE WHEN l.first_step = 0 THEN l.steps::jsonb
                             ELSE jsonb_build_array(jsonb_build_array(l.first_step, l.body::jsonb))
                                  || l.steps::jsonb END,
                        p_max_body) END AS new_body
          FROM looked l
    ), numbered AS (
        SELECT p.*,
               CASE WHEN p.is_new
                    THEN h.next_sequence - 1 + count(*) FILTER (WHERE p.is_new) OVER w
                    ELSE p.old_seq END AS n_seq,
               CASE WHEN p.changed
                    THEN h.last_change + count(*) FILTER (WHERE p.changed) OVER w END AS n_chg,
               CASE WHEN p.is_new THEN p.revision_if_new::bigint
                    WHEN p.replaces THEN p.old_rev + p.bumps
                    ELSE p.old_rev END AS n_rev
          FROM plan p
          JOIN rowcast.sessions h ON h.session_id = p.session_id
        WINDOW w AS (PARTITION BY p.session_id ORDER BY p.pos)
    ), inserted AS (
        INSERT INTO rowcast.rows (session_id, row_id, sequence, revision, change, kind, body,
                                  entry_ms, entry_seq)
        SELECT n.session_id, n.row_id, n.n_seq, n.n_rev, n.n_chg, n.kind, n.new_body,
               n.entry_ms, n.entry_seq
          FROM numbered n
         WHERE n.is_new
         ORDER BY n.pos
    ), updated AS (
        UPDATE rowcast.rows r
           SET kind = n.kind, body = n.new_body, revision = n.n_rev, change = n.n_chg,
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
    SELECT n.pos, n.n_seq, n.old_rev, n.n_rev, n.n_chg, n.old_chg,
           CASE WHEN n.steps IS NOT NULL AND n.changed THEN n.new_body::text END
      FROM numbered n
     ORDER BY n.pos;
END
$$;
