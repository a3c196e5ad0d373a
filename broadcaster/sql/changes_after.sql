-- Catch-up: the rows of one session that changed after a cursor, each once at
-- its latest revision, in change order (index rows_session_change).
SELECT row_id, sequence, revision, change, kind, body::text
  FROM rowcast.rows
 WHERE session_id = %(session)s AND change > %(after)s
 ORDER BY change
 LIMIT %(limit)s
