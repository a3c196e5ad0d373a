-- A page of a session's rows beyond sequence %(cursor)s, walking {towards}
-- it in {order} order (one extra row to learn whether more lie that way),
-- whether any row lies the other way ({back} the cursor), and the session's
-- head: one statement, one snapshot. Composed by broadcaster/store.py with
-- psycopg.sql, so both directions keep a plain index range scan.
WITH head AS (
    SELECT next_sequence, last_change
      FROM rowcast.sessions
     WHERE session_id = %(session)s
), page AS (
    SELECT row_id, sequence, revision, change, kind, body::text AS body
      FROM rowcast.rows
     WHERE session_id = %(session)s AND sequence {towards} %(cursor)s
     ORDER BY sequence {order}
     LIMIT %(limit)s + 1
)
SELECT h.next_sequence, h.last_change,
       EXISTS (SELECT 1 FROM rowcast.rows r
                WHERE r.session_id = %(session)s AND r.sequence {back} %(cursor)s) AS more_back,
       p.row_id, p.sequence, p.revision, p.change, p.kind, p.body
  FROM head h
  LEFT JOIN page p ON true
 ORDER BY p.sequence {order}
