-- What rowcast.repair_session would renumber (for --dry-run): the rows whose
-- sequence differs from their place in insertion order. The ORDER BY must
-- stay the one of rowcast.repair_session (migrations/0003.repair.sql).
SELECT m.row_id, m.sequence, m.rn
  FROM (SELECT r.row_id, r.sequence,
               row_number() OVER (ORDER BY r.created_at, r.sequence, r.row_id) - 1 AS rn
          FROM rowcast.rows r
         WHERE r.session_id = %(session)s) m
 WHERE m.sequence IS DISTINCT FROM m.rn
 ORDER BY m.rn
