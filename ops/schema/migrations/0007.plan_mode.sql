-- apply_batch's plan mode moves from the function to the writer's session.
-- Planning the batch's big statement afresh at every call (force_custom_plan,
-- 0002/0005) costs about 1.3 ms, half the commit of a one-entry batch, which
-- is what every entry at an idle shard pays. The writer now keeps one cached
-- (generic) plan for small batches, whose best plan is the same index lookups
-- at any table size (hash and merge joins stay off), and still plans each
-- large batch for its own size (writer/store.py). Anyone else calling the
-- function gets the server's default, as for any query. A cached plan is
-- made again whenever ANALYZE (autovacuum) updates the tables' statistics.
ALTER FUNCTION rowcast.apply_batch(text, bigint, bigint, bigint, bigint, bigint,
    text[], text[], text[], text[], int[], int[], bigint[], bigint[], boolean[],
    text[], text[], smallint[], bigint)
    RESET plan_cache_mode;
