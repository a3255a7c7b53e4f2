"""App functions shaped like the production app's (teamcmcbot/openrouter-chatbot, database/ at
7c23e21): written here from their facts, not copied. In production each is SECURITY DEFINER,
has no pinned search_path and keeps Supabase's default EXECUTE (PUBLIC, anon, authenticated,
service_role); none compares its user id argument with auth.uid().

- update_user_tier(uuid, varchar): sets profiles.subscription_tier of the user named;
- export_user_data(uuid): returns the profile, conversations and usage of the user named;
- get_session_with_messages(text, uuid): a conversation, "checked" against the uuid it is given;
- cleanup_old_data(integer): deletes usage and activity older than N days, for everyone;
- update_user_preferences(uuid, varchar, jsonb): edits profile preferences, through an
  unqualified helper (jsonb_deep_merge) that pinning search_path to '' would break;
- analyze_database_health(): counts users, sessions and messages.

Two more that must NOT be reported: a SECURITY INVOKER reader with a pinned search_path, and a
SECURITY DEFINER function that touches no chat data.
"""

from __future__ import annotations

import psycopg

PRODUCTION_SHAPED = """
CREATE FUNCTION public.jsonb_deep_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT coalesce(a, '{}'::jsonb) || coalesce(b, '{}'::jsonb) $$;

CREATE FUNCTION public.update_user_tier(user_uuid uuid, new_tier varchar(20)) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE n integer;
BEGIN
    IF new_tier NOT IN ('free', 'pro', 'enterprise', 'admin') THEN
        RETURN jsonb_build_object('success', false);
    END IF;
    UPDATE public.profiles SET subscription_tier = new_tier, updated_at = now()
    WHERE id = user_uuid;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN jsonb_build_object('success', n > 0, 'new_tier', new_tier);
END $$;

CREATE FUNCTION public.export_user_data(user_uuid uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN jsonb_build_object(
        'profile', (SELECT to_jsonb(p) FROM public.profiles p WHERE p.id = user_uuid),
        'conversations', (SELECT jsonb_agg(jsonb_build_object('session', to_jsonb(s),
                              'messages', (SELECT jsonb_agg(to_jsonb(m)) FROM public.chat_messages m
                                           WHERE m.session_id = s.id)))
                          FROM public.chat_sessions s WHERE s.user_id = user_uuid),
        'usage', (SELECT jsonb_agg(to_jsonb(u)) FROM public.user_usage_daily u
                  WHERE u.user_id = user_uuid));
END $$;

CREATE FUNCTION public.get_session_with_messages(session_text_id text, requesting_user_uuid uuid)
RETURNS TABLE (message_id text, message_content text)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.chat_sessions
                   WHERE id = session_text_id AND user_id = requesting_user_uuid) THEN
        RAISE EXCEPTION 'Session not found or access denied';
    END IF;
    RETURN QUERY SELECT m.id, m.content FROM public.chat_messages m
                 WHERE m.session_id = session_text_id ORDER BY m.message_timestamp;
END $$;

CREATE FUNCTION public.cleanup_old_data(days_to_keep integer DEFAULT 90) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE usage_rows integer; activity_rows integer;
BEGIN
    DELETE FROM public.user_activity_log
    WHERE "timestamp" < now() - make_interval(days => days_to_keep);
    GET DIAGNOSTICS activity_rows = ROW_COUNT;
    DELETE FROM public.user_usage_daily WHERE usage_date < current_date - days_to_keep;
    GET DIAGNOSTICS usage_rows = ROW_COUNT;
    RETURN jsonb_build_object('usage', usage_rows, 'activity', activity_rows);
END $$;

CREATE FUNCTION public.update_user_preferences(user_uuid uuid, preference_type varchar(50),
                                               preferences jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF preference_type = 'ui' THEN
        UPDATE public.profiles
        SET ui_preferences = jsonb_deep_merge(ui_preferences, preferences), updated_at = now()
        WHERE id = user_uuid;
    ELSE
        UPDATE public.profiles
        SET default_model = coalesce(preferences ->> 'default_model', default_model),
            updated_at = now()
        WHERE id = user_uuid;
    END IF;
    RETURN jsonb_build_object('success', FOUND);
END $$;

CREATE FUNCTION public.analyze_database_health() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN jsonb_build_object(
        'total_users', (SELECT count(*) FROM public.profiles),
        'total_conversations', (SELECT count(*) FROM public.chat_sessions),
        'total_messages', (SELECT count(*) FROM public.chat_messages));
END $$;

-- Not reported: runs as the caller with a pinned search_path; touches no chat data.
CREATE FUNCTION public.my_session_titles() RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = '' AS $$ SELECT title FROM public.chat_sessions $$;
CREATE FUNCTION public.model_names() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER AS $$ SELECT model_id FROM public.model_access $$;
"""

REPORTED = [
    "public.analyze_database_health()",
    "public.cleanup_old_data(integer)",
    "public.export_user_data(uuid)",
    "public.get_session_with_messages(text, uuid)",
    "public.update_user_preferences(uuid, character varying, jsonb)",
    "public.update_user_tier(uuid, character varying)",
]


def install(conn: psycopg.Connection) -> None:
    """Create the functions (Supabase's default grants apply: the stand-in sets them) and commit."""
    conn.execute(PRODUCTION_SHAPED)
    conn.commit()
