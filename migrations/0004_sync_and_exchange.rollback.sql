-- Remove the write paths added by 0004, and re-create the app's own functions of the same
-- names that 0004 replaced (saved in pgchat_migrations.replaced_objects; they come back with the
-- default privileges of the role that re-creates them). EXECUTE on the profile helpers that
-- 0002 created goes back to what Supabase's defaults give (PUBLIC and the three API roles).

DROP FUNCTION public.update_session_title(uuid, text, text);
DROP FUNCTION public.write_chat_exchange(uuid, text, jsonb, jsonb, text);
DROP FUNCTION public.sync_user_conversations(uuid, jsonb);
DROP FUNCTION pgchat_private.update_session_title(uuid, text, text);
DROP FUNCTION pgchat_private.write_chat_exchange(uuid, text, jsonb, jsonb, text);
DROP FUNCTION pgchat_private.sync_user_conversations(uuid, jsonb);
DROP SCHEMA pgchat_private;
DROP FUNCTION pgchat.conversation_list(jsonb);
DROP FUNCTION pgchat.parse_messages(jsonb);
DROP TYPE pgchat.parsed_message;
DROP FUNCTION pgchat.json_timestamptz(jsonb);
DROP FUNCTION pgchat.assert_acting_for(uuid);

DO $restore$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT o.definition FROM pgchat_migrations.replaced_objects o
             WHERE o.migration_id = '0004_sync_and_exchange' ORDER BY o.position
    LOOP
        EXECUTE r.definition;
    END LOOP;
    DELETE FROM pgchat_migrations.replaced_objects WHERE migration_id = '0004_sync_and_exchange';

    FOR r IN SELECT p.oid::regprocedure::text AS name
             FROM pg_catalog.pg_proc p
             WHERE p.oid IN (pg_catalog.to_regprocedure('public.log_user_activity(uuid, varchar, varchar, text, jsonb)'),
                             pg_catalog.to_regprocedure('public.handle_user_profile_sync()'),
                             pg_catalog.to_regprocedure('public.update_updated_at_column()'))
               AND pg_catalog.obj_description(p.oid, 'pg_proc') = 'pgchat: created by 0002_baseline'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC, anon, authenticated, service_role', r.name);
    END LOOP;
END
$restore$;
