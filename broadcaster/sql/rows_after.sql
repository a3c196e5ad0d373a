-- The rows just above sequence %(after)s (one extra to learn whether newer
-- ones exist), whether any row sits at or below it, and the head: one snapshot.
WITH head AS (
    SELECT next_sequence, last_change
      FROM rowcast.sessions
     WHERE session_id = %(session)s
), page AS (
    SELECT row_id, sequence, revision, change, kind, body::text AS body
      FROM rowcast.rows
     WHERE session_id = %(session)s AND sequence > %(after)s
     ORDER BY sequence
     LIMIT %(limit)s + 1
)
SELECT h.next_sequence, h.last_change,
       EXISTS (SELECT 1 FROM rowcast.rows r
                WHERE r.session_id = %(session)s AND r.sequence <= %(after)s) AS more_before,
       p.row_id, p.sequence, p.revision, p.change, p.kind, p.body
  FROM head h
  LEFT JOIN page p ON true
 ORDER BY p.sequence
