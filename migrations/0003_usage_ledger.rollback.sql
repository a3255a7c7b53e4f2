-- Undo 0003: drop pgchat's analytics and re-create what 0003 detached or replaced (the legacy
-- functions and triggers saved in pgchat_migrations.replaced_objects; on a database pgchat
-- created there are none). Refuses while the usage ledger holds rows: dropping it would lose
-- the record of what was counted (and on an adopted database it always holds rows).

DO $guard$
DECLARE
    v_rows bigint;
BEGIN
    SELECT count(*) INTO v_rows FROM pgchat.usage_ledger;
    IF v_rows > 0 THEN
        RAISE EXCEPTION 'refusing to drop pgchat.usage_ledger: it holds % rows', v_rows
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'the ledger is the record of what was counted; nothing was changed';
    END IF;
END
$guard$;

DROP TRIGGER _900_forget_usage ON public.profiles;
DROP TRIGGER _500_session_stats_insert ON public.chat_messages;
DROP TRIGGER _500_session_stats_update ON public.chat_messages;
DROP TRIGGER _500_session_stats_delete ON public.chat_messages;
DROP TRIGGER _500_book_session_created ON public.chat_sessions;
DROP TRIGGER _000_skip_noop_update ON public.chat_messages;
DROP TRIGGER _000_skip_noop_update ON public.chat_sessions;
DROP TRIGGER on_session_updated ON public.chat_sessions;

DROP FUNCTION public.track_user_usage(uuid, text, date, integer, integer, integer, integer, text, boolean, integer);
DROP FUNCTION public.update_session_stats();
DROP FUNCTION public.update_session_timestamp();

UPDATE public.user_usage_daily SET active_minutes = active_seconds WHERE active_seconds <> 0 OR active_minutes <> 0;

DROP SCHEMA pgchat CASCADE;

-- Functions first (the triggers need them), each in the order it was saved.
DO $restore$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT o.definition FROM pgchat_migrations.replaced_objects o
             WHERE o.migration_id = '0003_usage_ledger'
             ORDER BY o.kind <> 'function', o.position LOOP
        EXECUTE r.definition;
    END LOOP;
    DELETE FROM pgchat_migrations.replaced_objects WHERE migration_id = '0003_usage_ledger';
END
$restore$;
