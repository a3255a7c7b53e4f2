-- Baseline: the app's chat schema as production has it (profiles, chat_sessions, chat_messages,
-- user_usage_daily, model_access, user_activity_log, api_user_summary) so that a fresh database
-- and a database created by the app's old SQL scripts end up in the same place.
--
-- Adoption: every statement is written to be a no-op on the production schema (IF NOT EXISTS,
-- CREATE OR REPLACE); a final check names any column production is missing instead of failing
-- half-way later. No existing row is touched.
--
-- The chat trigger functions are the legacy ones on purpose: this migration describes what
-- exists; 0003 replaces them, and rolling 0003 back returns exactly here.
-- depends: 0001_supabase_standin

CREATE TABLE IF NOT EXISTS public.profiles (
    id uuid REFERENCES auth.users(id) ON DELETE CASCADE PRIMARY KEY,
    email varchar(255) NOT NULL,
    full_name varchar(255),
    avatar_url text,
    default_model varchar(100) DEFAULT 'deepseek/deepseek-r1-0528:free',
    temperature decimal(3,2) DEFAULT 0.7 CHECK (temperature >= 0.0 AND temperature <= 2.0),
    system_prompt text DEFAULT 'You are a helpful AI assistant.',
    subscription_tier varchar(20) DEFAULT 'free' CHECK (subscription_tier IN ('free', 'pro', 'enterprise')),
    credits integer DEFAULT 0 NOT NULL,
    ui_preferences jsonb DEFAULT '{"theme": "dark", "sidebar_width": 280}'::jsonb,
    session_preferences jsonb DEFAULT '{"auto_title": true, "max_history": 10}'::jsonb,
    usage_stats jsonb DEFAULT '{"total_messages": 0, "total_tokens": 0, "sessions_created": 0}'::jsonb,
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    last_active timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.user_activity_log (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid REFERENCES public.profiles(id) ON DELETE CASCADE,
    action varchar(50) NOT NULL,
    resource_type varchar(50),
    resource_id text,
    details jsonb DEFAULT '{}'::jsonb,
    timestamp timestamptz DEFAULT now() NOT NULL,
    ip_address inet,
    user_agent text
);

CREATE TABLE IF NOT EXISTS public.chat_sessions (
    id text PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    title varchar(255) NOT NULL DEFAULT 'New Chat',
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    last_activity timestamptz DEFAULT now() NOT NULL,
    message_count integer DEFAULT 0 NOT NULL,
    total_tokens integer DEFAULT 0 NOT NULL,
    last_model varchar(100),
    last_message_preview text,
    last_message_timestamp timestamptz,
    is_active boolean DEFAULT true NOT NULL
);

CREATE TABLE IF NOT EXISTS public.chat_messages (
    id text PRIMARY KEY,
    session_id text NOT NULL REFERENCES public.chat_sessions(id) ON DELETE CASCADE,
    role varchar(20) NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content text NOT NULL,
    model varchar(100),
    total_tokens integer DEFAULT 0 NOT NULL,
    input_tokens integer DEFAULT 0 NOT NULL,
    output_tokens integer DEFAULT 0 NOT NULL,
    user_message_id text,
    content_type varchar(20) DEFAULT 'text' CHECK (content_type IN ('text', 'markdown')),
    elapsed_time integer DEFAULT 0,
    completion_id varchar(255),
    message_timestamp timestamptz DEFAULT now() NOT NULL,
    error_message text,
    is_streaming boolean DEFAULT false,
    metadata jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS public.user_usage_daily (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    usage_date date NOT NULL DEFAULT CURRENT_DATE,
    messages_sent integer DEFAULT 0 NOT NULL,
    messages_received integer DEFAULT 0 NOT NULL,
    input_tokens integer DEFAULT 0 NOT NULL,
    output_tokens integer DEFAULT 0 NOT NULL,
    total_tokens integer DEFAULT 0 NOT NULL,
    models_used jsonb DEFAULT '{}'::jsonb NOT NULL,
    sessions_created integer DEFAULT 0 NOT NULL,
    active_minutes integer DEFAULT 0 NOT NULL,
    estimated_cost decimal(10,6) DEFAULT 0.00 NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    UNIQUE (user_id, usage_date)
);

CREATE TABLE IF NOT EXISTS public.model_access (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    model_id varchar(100) NOT NULL,
    model_name varchar(255),
    model_description text,
    tier varchar(20) NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'pro', 'enterprise')),
    is_active boolean DEFAULT true NOT NULL,
    daily_limit integer,
    monthly_limit integer,
    cost_per_1k_tokens decimal(10,6) DEFAULT 0.00 NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    UNIQUE (model_id, tier)
);

-- An adopted database must have every column this schema names; say which are missing.
DO $check$
DECLARE
    v_missing text;
BEGIN
    SELECT string_agg(format('%s.%s', e.tbl, e.col), ', ' ORDER BY e.tbl, e.col) INTO v_missing
    FROM (VALUES
        ('profiles', 'id'), ('profiles', 'email'), ('profiles', 'usage_stats'),
        ('profiles', 'last_active'), ('profiles', 'subscription_tier'), ('profiles', 'credits'),
        ('profiles', 'full_name'), ('profiles', 'avatar_url'), ('profiles', 'updated_at'),
        ('chat_sessions', 'id'), ('chat_sessions', 'user_id'), ('chat_sessions', 'title'),
        ('chat_sessions', 'created_at'), ('chat_sessions', 'updated_at'),
        ('chat_sessions', 'last_activity'), ('chat_sessions', 'message_count'),
        ('chat_sessions', 'total_tokens'), ('chat_sessions', 'last_model'),
        ('chat_sessions', 'last_message_preview'), ('chat_sessions', 'last_message_timestamp'),
        ('chat_messages', 'id'), ('chat_messages', 'session_id'), ('chat_messages', 'role'),
        ('chat_messages', 'content'), ('chat_messages', 'model'), ('chat_messages', 'total_tokens'),
        ('chat_messages', 'input_tokens'), ('chat_messages', 'output_tokens'),
        ('chat_messages', 'user_message_id'), ('chat_messages', 'content_type'),
        ('chat_messages', 'elapsed_time'), ('chat_messages', 'completion_id'),
        ('chat_messages', 'message_timestamp'), ('chat_messages', 'error_message'),
        ('user_usage_daily', 'user_id'), ('user_usage_daily', 'usage_date'),
        ('user_usage_daily', 'messages_sent'), ('user_usage_daily', 'messages_received'),
        ('user_usage_daily', 'input_tokens'), ('user_usage_daily', 'output_tokens'),
        ('user_usage_daily', 'total_tokens'), ('user_usage_daily', 'models_used'),
        ('user_usage_daily', 'sessions_created'), ('user_usage_daily', 'active_minutes'),
        ('user_activity_log', 'user_id'), ('user_activity_log', 'action'),
        ('model_access', 'model_id'), ('model_access', 'tier')
    ) AS e(tbl, col)
    WHERE NOT EXISTS (
        SELECT 1 FROM information_schema.columns c
        WHERE c.table_schema = 'public' AND c.table_name = e.tbl AND c.column_name = e.col
    );
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'cannot adopt this database: missing columns %', v_missing
            USING ERRCODE = 'undefined_column';
    END IF;
END
$check$;

CREATE INDEX IF NOT EXISTS idx_profiles_email ON public.profiles(email);
CREATE INDEX IF NOT EXISTS idx_profiles_last_active ON public.profiles(last_active);
CREATE INDEX IF NOT EXISTS idx_profiles_subscription_tier ON public.profiles(subscription_tier);
CREATE INDEX IF NOT EXISTS idx_activity_log_user_id ON public.user_activity_log(user_id);
CREATE INDEX IF NOT EXISTS idx_activity_log_timestamp ON public.user_activity_log(timestamp);
CREATE INDEX IF NOT EXISTS idx_activity_log_action ON public.user_activity_log(action);
CREATE INDEX IF NOT EXISTS idx_chat_sessions_user_id ON public.chat_sessions(user_id);
CREATE INDEX IF NOT EXISTS idx_chat_sessions_updated_at ON public.chat_sessions(updated_at DESC);
CREATE INDEX IF NOT EXISTS idx_chat_sessions_user_updated ON public.chat_sessions(user_id, updated_at DESC);
CREATE INDEX IF NOT EXISTS idx_chat_messages_session_id ON public.chat_messages(session_id);
CREATE INDEX IF NOT EXISTS idx_chat_messages_timestamp ON public.chat_messages(message_timestamp);
CREATE INDEX IF NOT EXISTS idx_chat_messages_session_timestamp ON public.chat_messages(session_id, message_timestamp);
CREATE INDEX IF NOT EXISTS idx_chat_messages_completion_id ON public.chat_messages(completion_id);
CREATE INDEX IF NOT EXISTS idx_chat_messages_user_message_id ON public.chat_messages(user_message_id)
    WHERE user_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_chat_messages_tokens_role ON public.chat_messages(role, input_tokens, output_tokens)
    WHERE input_tokens > 0 OR output_tokens > 0;
CREATE INDEX IF NOT EXISTS idx_usage_daily_user_date ON public.user_usage_daily(user_id, usage_date DESC);
CREATE INDEX IF NOT EXISTS idx_usage_daily_date ON public.user_usage_daily(usage_date DESC);
CREATE INDEX IF NOT EXISTS idx_model_access_tier ON public.model_access(tier, is_active);
CREATE INDEX IF NOT EXISTS idx_model_access_model_id ON public.model_access(model_id, is_active);

-- Row level security: owners only. The legacy policies evaluated auth.uid() once per row;
-- these wrap it in a sub-select so it runs once per statement (Supabase advisor: auth_rls_initplan).
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_activity_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.model_access ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS "Users can view their own profile" ON public.profiles;
DROP POLICY IF EXISTS "Users can update their own profile" ON public.profiles;
DROP POLICY IF EXISTS "Users can insert their own profile" ON public.profiles;
DROP POLICY IF EXISTS "Users can view their own activity" ON public.user_activity_log;
DROP POLICY IF EXISTS "Users can view their own chat sessions" ON public.chat_sessions;
DROP POLICY IF EXISTS "Users can create their own chat sessions" ON public.chat_sessions;
DROP POLICY IF EXISTS "Users can update their own chat sessions" ON public.chat_sessions;
DROP POLICY IF EXISTS "Users can delete their own chat sessions" ON public.chat_sessions;
DROP POLICY IF EXISTS "Users can view messages from their sessions" ON public.chat_messages;
DROP POLICY IF EXISTS "Users can create messages in their sessions" ON public.chat_messages;
DROP POLICY IF EXISTS "Users can update messages in their sessions" ON public.chat_messages;
DROP POLICY IF EXISTS "Users can delete messages in their sessions" ON public.chat_messages;
DROP POLICY IF EXISTS "Users can view their own usage" ON public.user_usage_daily;
DROP POLICY IF EXISTS "All users can view model access" ON public.model_access;

CREATE POLICY profiles_owner_select ON public.profiles FOR SELECT TO authenticated
    USING (id = (SELECT auth.uid()));
CREATE POLICY profiles_owner_update ON public.profiles FOR UPDATE TO authenticated
    USING (id = (SELECT auth.uid())) WITH CHECK (id = (SELECT auth.uid()));
CREATE POLICY activity_owner_select ON public.user_activity_log FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
CREATE POLICY sessions_owner_all ON public.chat_sessions FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY messages_owner_all ON public.chat_messages FOR ALL TO authenticated
    USING (EXISTS (SELECT 1 FROM public.chat_sessions s
                   WHERE s.id = chat_messages.session_id AND s.user_id = (SELECT auth.uid())))
    WITH CHECK (EXISTS (SELECT 1 FROM public.chat_sessions s
                        WHERE s.id = chat_messages.session_id AND s.user_id = (SELECT auth.uid())));
CREATE POLICY usage_owner_select ON public.user_usage_daily FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
CREATE POLICY model_access_read ON public.model_access FOR SELECT TO anon, authenticated
    USING (true);

-- Profiles follow auth.users (Supabase Auth inserts and updates users).
CREATE OR REPLACE FUNCTION public.update_updated_at_column()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    NEW.updated_at := now();
    IF TG_OP = 'INSERT' AND NEW.usage_stats IS NULL THEN
        NEW.usage_stats := '{"total_messages": 0, "total_tokens": 0, "sessions_created": 0}'::jsonb;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION public.log_user_activity(
    p_user_id uuid,
    p_action varchar(50),
    p_resource_type varchar(50) DEFAULT NULL,
    p_resource_id text DEFAULT NULL,
    p_details jsonb DEFAULT '{}'::jsonb
) RETURNS uuid LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $fn$
    INSERT INTO public.user_activity_log (user_id, action, resource_type, resource_id, details)
    VALUES (p_user_id, p_action, p_resource_type, p_resource_id, p_details)
    RETURNING id
$fn$;

CREATE OR REPLACE FUNCTION public.handle_user_profile_sync()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
BEGIN
    INSERT INTO public.profiles (id, email, full_name, avatar_url, last_active)
    VALUES (NEW.id, coalesce(NEW.email, ''),
            coalesce(NEW.raw_user_meta_data ->> 'full_name', NEW.raw_user_meta_data ->> 'name'),
            NEW.raw_user_meta_data ->> 'avatar_url', now())
    ON CONFLICT (id) DO UPDATE SET
        email = EXCLUDED.email,
        full_name = coalesce(EXCLUDED.full_name, public.profiles.full_name),
        avatar_url = coalesce(EXCLUDED.avatar_url, public.profiles.avatar_url),
        last_active = now();
    IF TG_OP = 'INSERT' THEN
        PERFORM public.log_user_activity(NEW.id, 'profile_created', 'profile', NEW.id::text,
                                         jsonb_build_object('email', NEW.email));
    END IF;
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE TRIGGER update_profiles_updated_at
    BEFORE INSERT OR UPDATE ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();

CREATE OR REPLACE TRIGGER on_auth_user_profile_sync
    AFTER INSERT OR UPDATE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION public.handle_user_profile_sync();

-- The legacy chat functions, as production runs them (shared/seeds/000). Replaced by 0003.
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

-- Security invoker: the view answers with the caller's rights, so RLS applies (PostgreSQL 15+).
CREATE OR REPLACE VIEW public.api_user_summary WITH (security_invoker = true) AS
SELECT
    p.id,
    p.email,
    p.full_name,
    p.subscription_tier,
    p.credits,
    p.usage_stats,
    p.last_active,
    coalesce(u.messages_sent + u.messages_received, 0) AS messages_today,
    coalesce(u.total_tokens, 0) AS tokens_today,
    (SELECT count(*) FROM public.chat_sessions s WHERE s.user_id = p.id) AS total_sessions
FROM public.profiles p
LEFT JOIN public.user_usage_daily u ON u.user_id = p.id AND u.usage_date = CURRENT_DATE;

-- Privileges: exactly what the app needs, whatever the defaults granted (Supabase's default
-- privileges, like the stand-in's, give the API roles ALL on new tables, TRUNCATE included,
-- and TRUNCATE ignores RLS). The API roles reach rows only through RLS; anon sees no user data.
-- A user may edit their own profile's settings, not their tier, credits or usage totals.
REVOKE ALL ON public.profiles, public.user_activity_log, public.chat_sessions, public.chat_messages,
    public.user_usage_daily, public.model_access, public.api_user_summary
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.model_access TO anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_sessions, public.chat_messages TO authenticated;
GRANT SELECT ON public.profiles, public.user_usage_daily, public.user_activity_log,
    public.api_user_summary TO authenticated;
GRANT UPDATE (full_name, avatar_url, default_model, temperature, system_prompt, ui_preferences,
    session_preferences) ON public.profiles TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.profiles, public.user_activity_log,
    public.chat_sessions, public.chat_messages, public.user_usage_daily, public.model_access
    TO service_role;
GRANT SELECT ON public.api_user_summary TO service_role;
