SELECT r.session_id, r.row_id, r.sequence, r.revision, r.change, r.kind, r.body::text,
       r.entry_ms, r.entry_seq
  FROM rowcast.rows r
  JOIN unnest(%(sessions)b::text[], %(rows)b::text[]) AS k (session_id, row_id)
    ON r.session_id = k.session_id AND r.row_id = k.row_id
 ORDER BY r.session_id, r.change
