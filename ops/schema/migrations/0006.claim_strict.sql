-- A new leader's claim must carry a fencing number above every one seen so
-- far, not merely equal to the last. After a Redis restart without
-- persistence its fencing counter starts again, so a new leader can draw the
-- number the old one held; accepting it would let two holders of one number
-- commit side by side. Refused, the new leader raises Redis's counter past
-- PostgreSQL's (writer.py) and claims again. (Commits, rowcast.advance, still
-- accept the claimed number itself.) The check wraps 0004's claim, renamed.
ALTER FUNCTION rowcast.claim(text, bigint, text) RENAME TO claim_unchecked;

CREATE FUNCTION rowcast.claim(p_stream text, p_fence bigint, p_epoch text DEFAULT NULL)
RETURNS TABLE (o_last text, o_rebased boolean)
LANGUAGE plpgsql AS $$
DECLARE
    held bigint;
BEGIN
    INSERT INTO rowcast.offsets (stream) VALUES (p_stream) ON CONFLICT (stream) DO NOTHING;
    SELECT fence INTO held FROM rowcast.offsets WHERE stream = p_stream FOR UPDATE;
    IF held >= p_fence THEN
        RAISE EXCEPTION 'fenced: % is held by fencing number %, not above it: %',
            p_stream, held, p_fence
            USING ERRCODE = 'RC001', DETAIL = held::text;
    END IF;
    RETURN QUERY SELECT * FROM rowcast.claim_unchecked(p_stream, p_fence, p_epoch);
END
$$;
