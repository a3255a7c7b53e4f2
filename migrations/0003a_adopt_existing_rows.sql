-- Adoption, after the switch (0003): what is already in the database was counted by the
-- legacy code (inflated or not), and the stored rows are their own record of it (0003): there
-- is nothing to book. Session statistics are recomputed from the messages (the legacy trigger
-- counted failed messages too). `pgchat usage verify` then shows what the legacy code counted
-- differently from what is stored, and `pgchat usage rebuild` repairs it.
--
-- Online: batches of sessions keyed by id ranges, each committed on its own, so the app's
-- writes never wait behind more than one batch. A batch locks its sessions' profiles, then the
-- sessions, by id: the one lock order of the write paths. Resumable: statistics are recomputed
-- from scratch, so a run interrupted anywhere is simply run again, from the start.
-- In a one-transaction script (`pgchat sql`, Supabase files) pgchat.one_transaction is on and
-- the batches share the script's transaction.
-- transactional: false
-- depends: 0003_usage_ledger

DO $adopt$
DECLARE
    c_stats_batch CONSTANT integer := 200;   -- sessions recomputed per transaction
    v_commit CONSTANT boolean := coalesce(current_setting('pgchat.one_transaction', true), '') <> 'on';
    v_last text := '';        -- keyset position: the last id done (none yet while NOT v_done)
    v_done boolean := false;
    v_ids text[];
BEGIN
    -- The statistics written below are pgchat's own writes (the guards of 0005 let them through).
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', false);
    -- A ledger kept by `pgchat rollback --all` may hold users deleted while pgchat was away
    -- (their forget_usage trigger was gone): forget them now, as the trigger would have.
    DELETE FROM pgchat.usage_ledger l
    WHERE NOT EXISTS (SELECT FROM public.profiles p WHERE p.id = l.user_id);
    IF v_commit THEN COMMIT; END IF;

    LOOP  -- session statistics, from scratch (what pgchat.session_stats_expected shows)
        SELECT array_agg(s.id ORDER BY s.id) INTO v_ids
        FROM (SELECT c.id FROM public.chat_sessions c WHERE c.id >= v_last AND NOT (v_done AND c.id = v_last) ORDER BY c.id LIMIT c_stats_batch) s;
        EXIT WHEN v_ids IS NULL;
        -- A statement of its own: the recomputation below then sees every write it waited for,
        -- and a writer that comes later applies its delta on top of it.
        PERFORM pgchat.lock_in_order(
            ARRAY(SELECT DISTINCT s.user_id FROM public.chat_sessions s WHERE s.id = ANY (v_ids)), v_ids);
        UPDATE public.chat_sessions s SET
            message_count = e.message_count,
            total_tokens = e.total_tokens,
            last_message_timestamp = e.last_message_timestamp,
            last_message_preview = e.last_message_preview,
            last_model = e.last_model
        FROM (SELECT x.id, agg.messages::integer AS message_count, agg.tokens::integer AS total_tokens,
                     last.message_timestamp AS last_message_timestamp,
                     left(last.content, 200) AS last_message_preview, last.model AS last_model
              FROM unnest(v_ids) AS x(id)
              CROSS JOIN LATERAL (
                  SELECT count(*) AS messages, coalesce(sum(coalesce(m.total_tokens, 0)), 0) AS tokens
                  FROM public.chat_messages m
                  WHERE m.session_id = x.id AND coalesce(m.error_message, '') = '') agg
              LEFT JOIN LATERAL pgchat.session_latest(x.id) last ON true) e
        WHERE s.id = e.id
          AND (s.message_count, s.total_tokens, s.last_message_timestamp, s.last_message_preview, s.last_model)
              IS DISTINCT FROM
              (e.message_count, e.total_tokens, e.last_message_timestamp, e.last_message_preview, e.last_model);
        v_last := v_ids[cardinality(v_ids)];
        v_done := true;
        IF v_commit THEN COMMIT; END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('pgchat.writer', '', false);
END
$adopt$;
