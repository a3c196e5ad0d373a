-- One chunk of `rowcast verify` (keyset pagination over session ids): the
-- heads of up to %(limit)s sessions after %(after)s, and the aggregates of
-- every row in the same range of session ids, so rows without a head are
-- checked too. The last chunk (fewer heads than the limit) reaches up to the
-- largest session id of any row.
WITH heads AS MATERIALIZED (
    SELECT h.session_id, h.next_sequence, h.last_change
      FROM rowcast.sessions h
     WHERE h.session_id > %(after)s
     ORDER BY h.session_id
     LIMIT %(limit)s
), bound AS (
    SELECT CASE WHEN count(*) < %(limit)s
                THEN greatest(max(x.session_id), (SELECT max(r.session_id) FROM rowcast.rows r))
                ELSE max(x.session_id) END AS upper
      FROM heads x
), agg AS (
    SELECT r.session_id,
           count(*) AS n_rows,
           count(DISTINCT r.sequence) AS n_distinct,
           min(r.sequence) AS min_sequence,
           max(r.sequence) AS max_sequence,
           max(r.change) AS max_change,
           min(r.revision) AS min_revision
      FROM bound b
      JOIN rowcast.rows r ON r.session_id > %(after)s AND r.session_id <= b.upper
     GROUP BY r.session_id
)
SELECT coalesce(h.session_id, a.session_id),
       h.session_id IS NOT NULL,
       h.next_sequence, h.last_change,
       coalesce(a.n_rows, 0), coalesce(a.n_distinct, 0),
       a.min_sequence, a.max_sequence, a.max_change, a.min_revision
  FROM heads h
  FULL JOIN agg a ON a.session_id = h.session_id
 ORDER BY 1
