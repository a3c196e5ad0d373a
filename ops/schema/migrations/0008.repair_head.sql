-- repair_session also fixes a head whose last_change is above every row's
-- change, which verify reports: before, it renumbered nothing and left the
-- head as it was. Otherwise as in 0003.
CREATE OR REPLACE FUNCTION rowcast.repair_session(p_session text)
RETURNS TABLE (o_row_id text, o_sequence bigint, o_revision bigint, o_change bigint,
               o_kind text, o_body text)
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    INSERT INTO rowcast.sessions (session_id) VALUES (p_session) ON CONFLICT DO NOTHING;
    SELECT h.last_change INTO v_last FROM rowcast.sessions h
     WHERE h.session_id = p_session FOR UPDATE;
    SELECT greatest(v_last, coalesce(max(r.change), 0)) INTO v_last
      FROM rowcast.rows r WHERE r.session_id = p_session;

    CREATE TEMP TABLE IF NOT EXISTS _repair (row_id text PRIMARY KEY, new_seq bigint, new_chg bigint)
        ON COMMIT DROP;
    TRUNCATE _repair;
    -- Insertion order: the commit time of the row's batch, then its sequence
    -- within the batch.
    INSERT INTO _repair (row_id, new_seq, new_chg)
    SELECT m.row_id, m.rn, v_last + row_number() OVER (ORDER BY m.rn)
      FROM (SELECT r.row_id, r.sequence,
                   row_number() OVER (ORDER BY r.created_at, r.sequence, r.row_id) - 1 AS rn
              FROM rowcast.rows r WHERE r.session_id = p_session) m
     WHERE m.sequence IS DISTINCT FROM m.rn;

    -- A head ahead of every row (the counter moved without a row to show for
    -- it): the newest row is announced again above it. The counter never goes
    -- back, so no client's cursor is left past a change it has not seen.
    IF NOT EXISTS (SELECT 1 FROM _repair) THEN
        INSERT INTO _repair (row_id, new_seq, new_chg)
        SELECT r.row_id, r.sequence, v_last + 1
          FROM rowcast.rows r
         WHERE r.session_id = p_session AND v_last > (
               SELECT max(x.change) FROM rowcast.rows x WHERE x.session_id = p_session)
         ORDER BY r.change DESC, r.row_id
         LIMIT 1;
    END IF;

    -- Two steps through negative numbers: the unique (session, sequence)
    -- constraint holds after each statement.
    UPDATE rowcast.rows r SET sequence = -1 - f.new_seq
      FROM _repair f WHERE r.session_id = p_session AND r.row_id = f.row_id;
    UPDATE rowcast.rows r SET sequence = f.new_seq, change = f.new_chg, updated_at = now()
      FROM _repair f WHERE r.session_id = p_session AND r.row_id = f.row_id;

    UPDATE rowcast.sessions h
       SET next_sequence = (SELECT count(*) FROM rowcast.rows r WHERE r.session_id = p_session),
           last_change = greatest(v_last, coalesce((SELECT max(f.new_chg) FROM _repair f), 0)),
           updated_at = now()
     WHERE h.session_id = p_session;

    RETURN QUERY
    SELECT r.row_id, r.sequence, r.revision, r.change, r.kind, r.body::text
      FROM rowcast.rows r JOIN _repair f ON f.row_id = r.row_id
     WHERE r.session_id = p_session
     ORDER BY r.change;
    DROP TABLE _repair;
END
$$;
