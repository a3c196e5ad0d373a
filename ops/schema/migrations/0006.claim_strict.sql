-- A new leader's claim must carry a fencing number above every one seen so
-- far, not merely equal to the last. After a Redis restart without
-- persistence its fencing counter starts again, so a new leader can draw the
-- number the old one held; accepting it would let two holders of one number
-- commit side by side. Refused, the new leader raises Redis's counter past
-- PostgreSQL's (writer.py) and claims again. (Commits, rowcast.advance, still
-- accept the claimed number itself.)
DROP FUNCTION rowcast.claim(text, bigint, text);

CREATE FUNCTION rowcast.claim(p_stream text, p_fence bigint, p_epoch text DEFAULT NULL)
RETURNS TABLE (o_last text, o_rebased boolean)
LANGUAGE plpgsql AS $$
DECLARE
    cur rowcast.offsets;
    v_rebased boolean := false;
BEGIN
    INSERT INTO rowcast.offsets (stream) VALUES (p_stream) ON CONFLICT (stream) DO NOTHING;
    SELECT * INTO cur FROM rowcast.offsets WHERE stream = p_stream FOR UPDATE;
    IF cur.fence >= p_fence THEN
        RAISE EXCEPTION 'fenced: % is held by fencing number %, not above it: %',
            p_stream, cur.fence, p_fence
            USING ERRCODE = 'RC001', DETAIL = cur.fence::text;
    END IF;
    IF p_epoch IS NOT NULL AND cur.epoch IS DISTINCT FROM p_epoch THEN
        v_rebased := (cur.last_ms, cur.last_seq) > (0, 0);
        cur.last_ms := 0;
        cur.last_seq := 0;
        UPDATE rowcast.offsets SET last_ms = 0, last_seq = 0, epoch = p_epoch
         WHERE stream = p_stream;
    END IF;
    UPDATE rowcast.offsets SET fence = p_fence, updated_at = now() WHERE stream = p_stream;
    RETURN QUERY SELECT cur.last_ms || '-' || cur.last_seq, v_rebased;
END
$$;
