-- Undo 0003: give the app its own analytics back and keep pgchat's record of what it counted.
-- pgchat's triggers and functions go; the legacy functions and triggers saved in
-- pgchat_migrations.replaced_objects are re-created (on a database pgchat created there are
-- none). The usage ledger (what was counted and is no longer stored as it was counted) stays
-- in schema pgchat, with every row, so that adopting the database again counts nothing twice; dropping it is a separate, explicit step
-- (`DROP SCHEMA pgchat CASCADE`, after the rollback; docs/adoption.md).

DROP TRIGGER _900_forget_usage ON public.profiles;
DROP TRIGGER _400_follow_rename ON public.chat_messages;
DROP TRIGGER _500_session_stats_insert ON public.chat_messages;
DROP TRIGGER _500_session_stats_update ON public.chat_messages;
DROP TRIGGER _500_session_stats_delete ON public.chat_messages;
DROP TRIGGER _500_count_session_created ON public.chat_sessions;
DROP TRIGGER _100_keep_counted ON public.chat_sessions;
DROP TRIGGER _400_follow_move ON public.chat_sessions;
DROP TRIGGER _000_skip_noop_update ON public.chat_messages;
DROP TRIGGER _000_skip_noop_update ON public.chat_sessions;
DROP TRIGGER on_session_updated ON public.chat_sessions;

DROP FUNCTION public.track_user_usage(uuid, text, date, integer, integer, integer, integer, text, boolean, integer);
DROP FUNCTION public.update_session_stats();
DROP FUNCTION public.update_session_timestamp();


DO $minutes$
BEGIN
    IF pgchat_migrations.feature('active_minutes') AND pgchat_migrations.has_column('user_usage_daily', 'active_seconds') THEN
        UPDATE public.user_usage_daily SET active_minutes = active_seconds WHERE active_seconds <> 0 OR active_minutes <> 0;
    END IF;
END
$minutes$;

-- Everything of schema pgchat but the ledger (its table, index and primary key); an empty
-- ledger has nothing to keep, and goes with the schema.
DO $drop$
DECLARE
    r record;
BEGIN
    IF NOT EXISTS (SELECT FROM pgchat.usage_ledger) THEN
        DROP SCHEMA pgchat CASCADE;
        RETURN;
    END IF;
    FOR r IN SELECT c.oid::regclass::text AS name FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'pgchat'::regnamespace AND c.relkind = 'v' LOOP
        EXECUTE format('DROP VIEW IF EXISTS %s CASCADE', r.name);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure::text AS name FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'pgchat'::regnamespace LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.name);
    END LOOP;
    FOR r IN SELECT t.oid::regtype::text AS name FROM pg_catalog.pg_type t
             JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
             WHERE t.typnamespace = 'pgchat'::regnamespace AND t.typtype = 'c' AND c.relkind = 'c' LOOP
        EXECUTE format('DROP TYPE IF EXISTS %s CASCADE', r.name);
    END LOOP;
END
$drop$;

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
