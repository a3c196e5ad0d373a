-- The last change of each watched session (checked after pub/sub comes back).
SELECT session_id, last_change
  FROM rowcast.sessions
 WHERE session_id = ANY (%(sessions)s)
