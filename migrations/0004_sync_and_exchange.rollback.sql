-- Remove the write paths added by 0004. The baseline has no sync_user_conversations (the app
-- had dropped it as unused), so none is restored. EXECUTE on the baseline's functions goes back
-- to what Supabase's defaults give (PUBLIC and the three API roles).

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

GRANT EXECUTE ON FUNCTION
    public.log_user_activity(uuid, varchar, varchar, text, jsonb),
    public.handle_user_profile_sync(),
    public.update_updated_at_column()
TO PUBLIC, anon, authenticated, service_role;
