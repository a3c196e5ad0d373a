-- The newest rows of a session (one extra to learn whether older ones exist),
-- with the session's head, in one statement: one snapshot.
WITH head AS (
    SELECT next_sequence, last_change
      FROM rowcast.sessions
     WHERE session_id = %(session)s
), page AS (
    SELECT row_id, sequence, revision, change, kind, body::text AS body
      FROM rowcast.rows
     WHERE session_id = %(session)s
     ORDER BY sequence DESC
     LIMIT %(limit)s + 1
)
SELECT h.next_sequence, h.last_change, false AS more_after,
       p.row_id, p.sequence, p.revision, p.change, p.kind, p.body
  FROM head h
  LEFT JOIN page p ON true
 ORDER BY p.sequence DESC
