-- The writer's tracking records of these input streams: the last applied
-- entry id, the fencing number, and how long ago the record last moved.
SELECT o.stream, o.last_ms, o.last_seq, o.fence,
       (extract(epoch FROM now() - o.updated_at) * 1000)::bigint
  FROM rowcast.offsets o
 WHERE o.stream = ANY (%(streams)s::text[])
