SELECT o_sequence, o_old_revision, o_revision, o_change, o_old_change, o_body
  FROM rowcast.apply_batch(%(stream)s, %(fence)s, %(first_ms)s, %(first_seq)s, %(last_ms)s, %(last_seq)s,
                           %(sessions)b::text[], %(rows)b::text[], %(kinds)b::text[], %(bodies)b::text[],
                           %(bumps)b::int[], %(revision_if_new)b::int[],
                           %(entry_ms)b::int8[], %(entry_seq)b::int8[], %(replayed)b::bool[],
                           %(overwritten)b::text[], %(steps)b::text[], %(first_step)b::int2[],
                           %(max_body)s)
 ORDER BY o_pos
