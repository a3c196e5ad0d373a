-- The sessions a caller may see, newest activity first (index sessions_updated_at).
SELECT session_id, next_sequence, last_change, updated_at
  FROM rowcast.sessions
 WHERE %(all)s OR session_id = ANY (%(sessions)s)
 ORDER BY updated_at DESC, session_id
 LIMIT %(limit)s
