-- The same figures as verify_chunk.sql for one session (repair --session).
SELECT s.session_id,
       h.session_id IS NOT NULL,
       h.next_sequence, h.last_change,
       count(r.session_id), count(DISTINCT r.sequence),
       min(r.sequence), max(r.sequence), max(r.change), min(r.revision)
  FROM (SELECT %(session)s::text AS session_id) s
  LEFT JOIN rowcast.sessions h ON h.session_id = s.session_id
  LEFT JOIN rowcast.rows r ON r.session_id = s.session_id
 GROUP BY s.session_id, h.session_id, h.next_sequence, h.last_change
