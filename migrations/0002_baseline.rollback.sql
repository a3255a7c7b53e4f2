-- Undo the baseline: restore the policies, grants and view options it replaced, drop what it
-- created, never lose a row. Tables pgchat created are dropped only while empty (it refuses,
-- changing nothing, while one holds rows); tables it adopted are kept, with everything saved
-- restored as it was (including what a DBA may consider a hole: TRUNCATE for the API roles,
-- a view running with its owner's rights; going back means going back).
--
-- Works as a role that does not own auth.users (Supabase's `postgres`): the sign-up trigger on
-- auth.users goes with its function (DROP FUNCTION ... CASCADE), never by DROP TRIGGER ON auth.users.

DO $guard$
DECLARE
    v_table text;
    v_rows bigint;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['chat_messages', 'chat_sessions', 'user_usage_daily',
                                   'user_activity_log', 'model_access', 'profiles'] LOOP
        IF pg_catalog.obj_description(pg_catalog.to_regclass('public.' || v_table), 'pg_class')
           = 'pgchat: created by 0002_baseline' THEN
            EXECUTE format('SELECT count(*) FROM public.%I', v_table) INTO v_rows;
            IF v_rows > 0 THEN
                RAISE EXCEPTION 'refusing to drop public.%: it holds % rows', v_table, v_rows
                    USING ERRCODE = 'dependent_objects_still_exist',
                          HINT = 'rolling back the baseline would delete data; nothing was changed';
            END IF;
        END IF;
    END LOOP;
END
$guard$;

DROP POLICY IF EXISTS sessions_owner_all ON public.chat_sessions;
DROP POLICY IF EXISTS messages_owner_all ON public.chat_messages;
DROP POLICY IF EXISTS usage_owner_select ON public.user_usage_daily;
DROP POLICY IF EXISTS usage_owner_insert ON public.user_usage_daily;
DROP POLICY IF EXISTS usage_owner_update ON public.user_usage_daily;

DO $restore$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT o.position, o.definition FROM pgchat_migrations.replaced_objects o
             WHERE o.migration_id = '0002_baseline' ORDER BY o.position LOOP
        EXECUTE r.definition;
    END LOOP;
    DELETE FROM pgchat_migrations.replaced_objects WHERE migration_id = '0002_baseline';
END
$restore$;

DO $created$
DECLARE
    c_created CONSTANT text := 'pgchat: created by 0002_baseline';
    v_name text;
BEGIN
    IF pg_catalog.obj_description(pg_catalog.to_regclass('public.api_user_summary'), 'pg_class') = c_created THEN
        DROP VIEW public.api_user_summary;
    END IF;
    FOREACH v_name IN ARRAY ARRAY['public.handle_user_profile_sync()', 'public.update_updated_at_column()',
                                  'public.log_user_activity(uuid, varchar, varchar, text, jsonb)'] LOOP
        IF pg_catalog.obj_description(pg_catalog.to_regprocedure(v_name), 'pg_proc') = c_created THEN
            EXECUTE format('DROP FUNCTION %s CASCADE', pg_catalog.to_regprocedure(v_name));
        END IF;
    END LOOP;
    FOREACH v_name IN ARRAY ARRAY['chat_messages', 'chat_sessions', 'user_usage_daily',
                                  'user_activity_log', 'model_access', 'profiles'] LOOP
        IF pg_catalog.obj_description(pg_catalog.to_regclass('public.' || v_name), 'pg_class') = c_created THEN
            EXECUTE format('DROP TABLE public.%I', v_name);
        END IF;
    END LOOP;
END
$created$;

DROP FUNCTION IF EXISTS pgchat_migrations.render(text);
DROP FUNCTION IF EXISTS pgchat_migrations.feature(text);
DROP FUNCTION IF EXISTS pgchat_migrations.has_column(text, text);

DO $bookkeeping$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgchat_migrations.replaced_objects) THEN
        DROP TABLE pgchat_migrations.replaced_objects;
    END IF;
END
$bookkeeping$;
