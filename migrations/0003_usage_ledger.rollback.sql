-- Return to the baseline's legacy chat functions and per-row triggers.
-- Refuses while the usage ledger holds rows: dropping it would lose the record of what was
-- counted (and on an adopted database it always holds rows).

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
DROP INDEX public.idx_chat_messages_session_latest;

DROP FUNCTION public.track_user_usage(uuid, text, date, integer, integer, integer, integer, text, boolean, integer);
DROP FUNCTION public.update_session_stats();
DROP FUNCTION public.update_session_timestamp();

UPDATE public.user_usage_daily SET active_minutes = active_seconds WHERE active_seconds <> 0 OR active_minutes <> 0;
ALTER TABLE public.user_usage_daily DROP COLUMN active_seconds;

DROP SCHEMA pgchat CASCADE;

CREATE OR REPLACE FUNCTION public.track_user_usage(
    p_user_id uuid,
    p_messages_sent integer DEFAULT 0,
    p_messages_received integer DEFAULT 0,
    p_input_tokens integer DEFAULT 0,
    p_output_tokens integer DEFAULT 0,
    p_model_used varchar(100) DEFAULT NULL,
    p_session_created boolean DEFAULT false,
    p_active_minutes integer DEFAULT 0
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    today_date date := CURRENT_DATE;
    model_usage jsonb;
BEGIN
    SELECT models_used INTO model_usage
    FROM public.user_usage_daily
    WHERE user_id = p_user_id AND usage_date = today_date;

    IF p_model_used IS NOT NULL THEN
        IF model_usage IS NULL THEN
            model_usage := jsonb_build_object(p_model_used, 1);
        ELSE
            model_usage := jsonb_set(model_usage, ARRAY[p_model_used::text],
                (coalesce((model_usage ->> p_model_used)::integer, 0) + 1)::text::jsonb);
        END IF;
    END IF;

    INSERT INTO public.user_usage_daily (
        user_id, usage_date, messages_sent, messages_received, input_tokens, output_tokens,
        total_tokens, models_used, sessions_created, active_minutes
    ) VALUES (
        p_user_id, today_date, p_messages_sent, p_messages_received, p_input_tokens,
        p_output_tokens, p_input_tokens + p_output_tokens, coalesce(model_usage, '{}'::jsonb),
        CASE WHEN p_session_created THEN 1 ELSE 0 END, p_active_minutes
    )
    ON CONFLICT (user_id, usage_date) DO UPDATE SET
        messages_sent = public.user_usage_daily.messages_sent + EXCLUDED.messages_sent,
        messages_received = public.user_usage_daily.messages_received + EXCLUDED.messages_received,
        input_tokens = public.user_usage_daily.input_tokens + EXCLUDED.input_tokens,
        output_tokens = public.user_usage_daily.output_tokens + EXCLUDED.output_tokens,
        total_tokens = public.user_usage_daily.total_tokens + EXCLUDED.total_tokens,
        models_used = coalesce(EXCLUDED.models_used, public.user_usage_daily.models_used),
        sessions_created = public.user_usage_daily.sessions_created + EXCLUDED.sessions_created,
        active_minutes = public.user_usage_daily.active_minutes + EXCLUDED.active_minutes,
        updated_at = now();

    UPDATE public.profiles SET
        usage_stats = jsonb_set(jsonb_set(jsonb_set(usage_stats,
            '{total_messages}', (coalesce((usage_stats ->> 'total_messages')::integer, 0)
                                 + p_messages_sent + p_messages_received)::text::jsonb),
            '{total_tokens}', (coalesce((usage_stats ->> 'total_tokens')::integer, 0)
                               + p_input_tokens + p_output_tokens)::text::jsonb),
            '{sessions_created}', (coalesce((usage_stats ->> 'sessions_created')::integer, 0)
                                   + CASE WHEN p_session_created THEN 1 ELSE 0 END)::text::jsonb),
        last_active = now()
    WHERE id = p_user_id;
END
$fn$;

CREATE OR REPLACE FUNCTION public.update_session_stats()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $fn$
DECLARE
    v_session text := CASE WHEN TG_OP = 'DELETE' THEN OLD.session_id ELSE NEW.session_id END;
BEGIN
    UPDATE public.chat_sessions s SET
        message_count = st.msg_count,
        total_tokens = st.token_sum,
        last_message_timestamp = st.last_msg_time,
        last_message_preview = left(st.last_preview, 200),
        last_model = st.last_model_used,
        last_activity = now(),
        updated_at = now()
    FROM (
        SELECT count(*) AS msg_count,
               coalesce(sum(m.total_tokens), 0) AS token_sum,
               max(m.message_timestamp) AS last_msg_time,
               (SELECT content FROM public.chat_messages WHERE session_id = v_session
                ORDER BY message_timestamp DESC LIMIT 1) AS last_preview,
               (SELECT model FROM public.chat_messages WHERE session_id = v_session
                ORDER BY message_timestamp DESC LIMIT 1) AS last_model_used
        FROM public.chat_messages m WHERE m.session_id = v_session
    ) st
    WHERE s.id = v_session;

    IF TG_OP <> 'DELETE' AND NEW.role IN ('user', 'assistant') THEN
        PERFORM public.track_user_usage(
            (SELECT user_id FROM public.chat_sessions WHERE id = NEW.session_id),
            CASE WHEN NEW.role = 'user' THEN 1 ELSE 0 END,
            CASE WHEN NEW.role = 'assistant' THEN 1 ELSE 0 END,
            CASE WHEN NEW.role = 'user' THEN coalesce(NEW.input_tokens, 0) ELSE 0 END,
            CASE WHEN NEW.role = 'assistant' THEN coalesce(NEW.output_tokens, 0) ELSE 0 END,
            NEW.model,
            false,
            CASE WHEN NEW.role = 'assistant' THEN coalesce(NEW.elapsed_time, 0) ELSE 0 END
        );
    END IF;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION public.update_session_timestamp()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    NEW.updated_at := now();
    NEW.last_activity := now();
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE TRIGGER on_message_change
    AFTER INSERT OR UPDATE OR DELETE ON public.chat_messages
    FOR EACH ROW EXECUTE FUNCTION public.update_session_stats();

CREATE OR REPLACE TRIGGER on_session_updated
    BEFORE UPDATE ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION public.update_session_timestamp();

