-- Test fixture: the production schema of the chat app at commit 7c23e21 (2025-07-25), the
-- state its four setup scripts (database/01..04-complete-*.sql of teamcmcbot/openrouter-chatbot)
-- leave a Supabase project in. Written for pgchat's tests from the facts of those scripts
-- (tables and every column with its type and default, policy names and rules, function
-- signatures, what each function reads and writes, triggers, the view's 16 columns, the seed
-- rows of model_access); the function bodies are pgchat's own, shorter, with the same effects.
--
-- NOT part of pgchat. It reproduces production's behaviour on purpose, bugs included: usage
-- counted again on every re-sync, failed replies counted, usage booked on CURRENT_DATE,
-- SECURITY DEFINER functions that trust their uuid argument, no pinned search_path.
-- Run it as the migration role (Supabase's `postgres`) in a database that has Supabase's
-- `auth` schema; the functions resolve names through the caller's search_path, as in production.

-- ------------------------------------------------------------------ 01 user management
CREATE TABLE public.profiles (
    id UUID REFERENCES auth.users(id) ON DELETE CASCADE PRIMARY KEY,
    email VARCHAR(255) NOT NULL,
    full_name VARCHAR(255),
    avatar_url TEXT,
    default_model VARCHAR(100) DEFAULT 'deepseek/deepseek-r1-0528:free',
    temperature DECIMAL(3,2) DEFAULT 0.7 CHECK (temperature >= 0.0 AND temperature <= 2.0),
    system_prompt TEXT DEFAULT 'You are a helpful AI assistant.',
    subscription_tier VARCHAR(20) DEFAULT 'free' CHECK (subscription_tier IN ('free', 'pro', 'enterprise')),
    credits INTEGER DEFAULT 0 NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    last_active TIMESTAMPTZ DEFAULT NOW(),
    usage_stats JSONB DEFAULT '{"total_messages": 0, "total_tokens": 0, "sessions_created": 0}'::jsonb
);

CREATE TABLE public.user_activity_log (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id UUID REFERENCES public.profiles(id) ON DELETE CASCADE NOT NULL,
    action VARCHAR(50) NOT NULL,
    resource_type VARCHAR(50),
    resource_id TEXT,
    details JSONB DEFAULT '{}'::jsonb,
    timestamp TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    ip_address INET,
    user_agent TEXT
);

CREATE INDEX idx_profiles_email ON public.profiles(email);
CREATE INDEX idx_profiles_last_active ON public.profiles(last_active);
CREATE INDEX idx_profiles_subscription_tier ON public.profiles(subscription_tier);
CREATE INDEX idx_activity_log_user_id ON public.user_activity_log(user_id);
CREATE INDEX idx_activity_log_timestamp ON public.user_activity_log(timestamp);
CREATE INDEX idx_activity_log_action ON public.user_activity_log(action);

ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_activity_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own profile" ON public.profiles FOR SELECT USING (auth.uid() = id);
CREATE POLICY "Users can update their own profile" ON public.profiles FOR UPDATE USING (auth.uid() = id);
CREATE POLICY "Users can insert their own profile" ON public.profiles FOR INSERT WITH CHECK (auth.uid() = id);
CREATE POLICY "Users can view their own activity" ON public.user_activity_log FOR SELECT USING (auth.uid() = user_id);

-- Stamps updated_at; a new profile's usage_stats gets a last_reset key.
CREATE FUNCTION public.update_updated_at_column() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF TG_OP = 'INSERT' THEN
        NEW.usage_stats := NEW.usage_stats || jsonb_build_object('last_reset', now()::text);
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.log_user_activity(p_user_id UUID, p_action VARCHAR(50),
    p_resource_type VARCHAR(50) DEFAULT NULL, p_resource_id TEXT DEFAULT NULL,
    p_details JSONB DEFAULT '{}'::jsonb)
RETURNS UUID LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_id UUID;
BEGIN
    INSERT INTO public.user_activity_log (user_id, action, resource_type, resource_id, details)
    VALUES (p_user_id, p_action, p_resource_type, p_resource_id, p_details) RETURNING id INTO v_id;
    RETURN v_id;
END $$;

-- Creates the profile of a new auth user, refreshes it on later auth updates (activity logged,
-- a repeated sync within a minute not logged again unless the email changed).
CREATE FUNCTION public.handle_user_profile_sync() RETURNS TRIGGER LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_old_email VARCHAR(255);
BEGIN
    SELECT email INTO v_old_email FROM public.profiles WHERE id = NEW.id;
    IF NOT FOUND THEN
        INSERT INTO public.profiles (id, email, full_name, avatar_url, last_active)
        VALUES (NEW.id, NEW.email,
                coalesce(NEW.raw_user_meta_data ->> 'full_name', NEW.raw_user_meta_data ->> 'name',
                         split_part(NEW.email, '@', 1)),
                NEW.raw_user_meta_data ->> 'avatar_url', now());
        PERFORM public.log_user_activity(NEW.id, 'profile_created', 'profile', NEW.id::text,
            jsonb_build_object('sync_source', 'google_oauth', 'created_from_oauth', true));
        RETURN NEW;
    END IF;
    UPDATE public.profiles SET
        email = NEW.email,
        full_name = coalesce(NEW.raw_user_meta_data ->> 'full_name', NEW.raw_user_meta_data ->> 'name',
                             full_name, split_part(NEW.email, '@', 1)),
        avatar_url = coalesce(NEW.raw_user_meta_data ->> 'avatar_url', avatar_url),
        last_active = now(), updated_at = now()
    WHERE id = NEW.id;
    IF v_old_email IS DISTINCT FROM NEW.email OR NOT EXISTS (
        SELECT 1 FROM public.user_activity_log
        WHERE user_id = NEW.id AND action = 'profile_synced' AND timestamp > now() - interval '1 minute') THEN
        PERFORM public.log_user_activity(NEW.id, 'profile_synced', 'profile', NEW.id::text,
            jsonb_build_object('email_updated', v_old_email IS DISTINCT FROM NEW.email,
                               'sync_source', 'google_oauth'));
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER update_profiles_updated_at BEFORE INSERT OR UPDATE ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
CREATE TRIGGER on_auth_user_profile_sync AFTER INSERT OR UPDATE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION public.handle_user_profile_sync();

-- Copies auth.users data into the profile (creating it if missing); a jsonb report.
CREATE FUNCTION public.sync_profile_from_auth(user_uuid UUID) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    u auth.users%ROWTYPE;
BEGIN
    SELECT * INTO u FROM auth.users WHERE id = user_uuid;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', false, 'error', 'User not found in auth.users');
    END IF;
    INSERT INTO public.profiles (id, email, full_name, avatar_url, last_active)
    VALUES (u.id, u.email, coalesce(u.raw_user_meta_data ->> 'full_name', split_part(u.email, '@', 1)),
            u.raw_user_meta_data ->> 'avatar_url', now())
    ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, last_active = now(), updated_at = now();
    PERFORM public.log_user_activity(user_uuid, 'profile_manual_sync', 'profile', user_uuid::text, '{}');
    RETURN jsonb_build_object('success', true, 'updated', true);
END $$;

-- ------------------------------------------------------------------ 02 chat history
CREATE TABLE public.chat_sessions (
    id TEXT PRIMARY KEY,
    user_id UUID REFERENCES public.profiles(id) ON DELETE CASCADE NOT NULL,
    title VARCHAR(255) NOT NULL DEFAULT 'New Chat',
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    last_activity TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    message_count INTEGER DEFAULT 0 NOT NULL,
    total_tokens INTEGER DEFAULT 0 NOT NULL,
    last_model VARCHAR(100),
    is_active BOOLEAN DEFAULT true NOT NULL,
    last_message_preview TEXT,
    last_message_timestamp TIMESTAMPTZ
);

CREATE TABLE public.chat_messages (
    id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES public.chat_sessions(id) ON DELETE CASCADE NOT NULL,
    role VARCHAR(20) NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content TEXT NOT NULL,
    model VARCHAR(100),
    total_tokens INTEGER DEFAULT 0,
    input_tokens INTEGER DEFAULT 0,
    output_tokens INTEGER DEFAULT 0,
    user_message_id TEXT,
    content_type VARCHAR(20) DEFAULT 'text' CHECK (content_type IN ('text', 'markdown')),
    elapsed_time INTEGER DEFAULT 0,
    completion_id VARCHAR(255),
    message_timestamp TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    error_message TEXT,
    is_streaming BOOLEAN DEFAULT false,
    metadata JSONB DEFAULT '{}'::jsonb
);

CREATE INDEX idx_chat_sessions_user_id ON public.chat_sessions(user_id);
CREATE INDEX idx_chat_sessions_updated_at ON public.chat_sessions(updated_at DESC);
CREATE INDEX idx_chat_sessions_user_updated ON public.chat_sessions(user_id, updated_at DESC);
CREATE INDEX idx_chat_messages_session_id ON public.chat_messages(session_id);
CREATE INDEX idx_chat_messages_timestamp ON public.chat_messages(message_timestamp);
CREATE INDEX idx_chat_messages_session_timestamp ON public.chat_messages(session_id, message_timestamp);
CREATE INDEX idx_chat_messages_completion_id ON public.chat_messages(completion_id);
CREATE INDEX idx_chat_messages_user_message_id ON public.chat_messages(user_message_id)
    WHERE user_message_id IS NOT NULL;
CREATE INDEX idx_chat_messages_tokens_role ON public.chat_messages(role, input_tokens, output_tokens)
    WHERE input_tokens > 0 OR output_tokens > 0;

ALTER TABLE public.chat_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own chat sessions" ON public.chat_sessions
    FOR SELECT USING (user_id = auth.uid());
CREATE POLICY "Users can create their own chat sessions" ON public.chat_sessions
    FOR INSERT WITH CHECK (user_id = auth.uid());
CREATE POLICY "Users can update their own chat sessions" ON public.chat_sessions
    FOR UPDATE USING (user_id = auth.uid());
CREATE POLICY "Users can delete their own chat sessions" ON public.chat_sessions
    FOR DELETE USING (user_id = auth.uid());
CREATE POLICY "Users can view messages from their sessions" ON public.chat_messages
    FOR SELECT USING (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = auth.uid()));
CREATE POLICY "Users can create messages in their sessions" ON public.chat_messages
    FOR INSERT WITH CHECK (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = auth.uid()));
CREATE POLICY "Users can update messages in their sessions" ON public.chat_messages
    FOR UPDATE USING (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = auth.uid()));
CREATE POLICY "Users can delete messages in their sessions" ON public.chat_messages
    FOR DELETE USING (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = auth.uid()));

-- Per row: recount the whole session, then (inserts and updates alike) count the message as
-- usage of today through track_user_usage. Every re-sync of a message counts it again.
CREATE FUNCTION public.update_session_stats() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    v_row public.chat_messages%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN v_row := OLD; ELSE v_row := NEW; END IF;
    UPDATE public.chat_sessions s SET
        message_count = x.n, total_tokens = x.tokens, last_message_timestamp = x.last_at,
        last_message_preview = left(x.preview, 200), last_model = x.model,
        last_activity = now(), updated_at = now()
    FROM (SELECT count(*) AS n, coalesce(sum(m.total_tokens), 0) AS tokens,
                 max(m.message_timestamp) AS last_at,
                 (SELECT content FROM public.chat_messages WHERE session_id = v_row.session_id
                  ORDER BY message_timestamp DESC LIMIT 1) AS preview,
                 (SELECT model FROM public.chat_messages WHERE session_id = v_row.session_id
                  ORDER BY message_timestamp DESC LIMIT 1) AS model
          FROM public.chat_messages m WHERE m.session_id = v_row.session_id) x
    WHERE s.id = v_row.session_id;
    IF TG_OP <> 'DELETE' AND NEW.role IN ('user', 'assistant') THEN
        PERFORM public.track_user_usage(
            (SELECT user_id FROM public.chat_sessions WHERE id = NEW.session_id),
            (NEW.role = 'user')::int, (NEW.role = 'assistant')::int,
            CASE WHEN NEW.role = 'user' THEN coalesce(NEW.input_tokens, 0) ELSE 0 END,
            CASE WHEN NEW.role = 'assistant' THEN coalesce(NEW.output_tokens, 0) ELSE 0 END,
            NEW.model, false,
            CASE WHEN NEW.role = 'assistant' THEN coalesce(NEW.elapsed_time, 0) ELSE 0 END);
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.update_session_timestamp() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    NEW.last_activity := now();
    RETURN NEW;
END $$;

CREATE FUNCTION public.get_user_recent_sessions(user_uuid UUID, session_limit INTEGER DEFAULT 10)
RETURNS TABLE (id TEXT, title VARCHAR(255), created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ,
               last_activity TIMESTAMPTZ, message_count INTEGER, total_tokens INTEGER,
               last_model VARCHAR(100), is_active BOOLEAN, last_message_preview TEXT,
               last_message_timestamp TIMESTAMPTZ)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN QUERY SELECT s.id, s.title, s.created_at, s.updated_at, s.last_activity, s.message_count,
        s.total_tokens, s.last_model, s.is_active, s.last_message_preview, s.last_message_timestamp
    FROM public.chat_sessions s WHERE s.user_id = user_uuid ORDER BY s.updated_at DESC LIMIT session_limit;
END $$;

CREATE FUNCTION public.get_session_with_messages(session_text_id TEXT, requesting_user_uuid UUID)
RETURNS TABLE (session_id TEXT, session_title VARCHAR(255), session_created_at TIMESTAMPTZ,
               session_updated_at TIMESTAMPTZ, message_id TEXT, message_role VARCHAR(20),
               message_content TEXT, message_model VARCHAR(100), message_tokens INTEGER,
               message_timestamp TIMESTAMPTZ, message_metadata JSONB)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.chat_sessions s
                   WHERE s.id = session_text_id AND s.user_id = requesting_user_uuid) THEN
        RAISE EXCEPTION 'Session not found or access denied';
    END IF;
    RETURN QUERY SELECT s.id, s.title, s.created_at, s.updated_at, m.id, m.role, m.content, m.model,
        m.total_tokens, m.message_timestamp, m.metadata
    FROM public.chat_sessions s LEFT JOIN public.chat_messages m ON m.session_id = s.id
    WHERE s.id = session_text_id ORDER BY m.message_timestamp;
END $$;

CREATE TRIGGER on_message_change AFTER INSERT OR UPDATE OR DELETE ON public.chat_messages
    FOR EACH ROW EXECUTE FUNCTION public.update_session_stats();
CREATE TRIGGER on_session_updated BEFORE UPDATE ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION public.update_session_timestamp();

-- The sync endpoint: for each conversation an upsert of the session, then an upsert of every
-- message (content, model, tokens, user_message_id, timestamp updated); one conversation's
-- error is reported, not raised. Trusts user_uuid.
CREATE FUNCTION public.sync_user_conversations(user_uuid UUID, conversations_data JSONB)
RETURNS JSONB LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    c JSONB;
    m JSONB;
    v_synced INTEGER := 0;
    v_errors INTEGER := 0;
    v_details JSONB := '[]'::jsonb;
BEGIN
    FOR c IN SELECT value FROM jsonb_array_elements(conversations_data) LOOP
        BEGIN
            INSERT INTO public.chat_sessions (id, user_id, title, message_count, total_tokens, last_model,
                last_message_preview, last_message_timestamp, created_at, updated_at)
            VALUES (c ->> 'id', user_uuid, c ->> 'title', (c ->> 'messageCount')::int,
                    (c ->> 'totalTokens')::int, c ->> 'lastModel', c ->> 'lastMessagePreview',
                    (c ->> 'lastMessageTimestamp')::timestamptz, (c ->> 'createdAt')::timestamptz,
                    (c ->> 'updatedAt')::timestamptz)
            ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, message_count = EXCLUDED.message_count,
                total_tokens = EXCLUDED.total_tokens, last_model = EXCLUDED.last_model,
                last_message_preview = EXCLUDED.last_message_preview,
                last_message_timestamp = EXCLUDED.last_message_timestamp, updated_at = EXCLUDED.updated_at;
            FOR m IN SELECT value FROM jsonb_array_elements(coalesce(c -> 'messages', '[]')) LOOP
                INSERT INTO public.chat_messages (id, session_id, role, content, model, total_tokens,
                    input_tokens, output_tokens, user_message_id, message_timestamp, error_message,
                    is_streaming)
                VALUES (m ->> 'id', c ->> 'id', m ->> 'role', m ->> 'content', m ->> 'model',
                        coalesce((m ->> 'total_tokens')::int, 0), coalesce((m ->> 'input_tokens')::int, 0),
                        coalesce((m ->> 'output_tokens')::int, 0), m ->> 'user_message_id',
                        (m ->> 'timestamp')::timestamptz,
                        CASE WHEN (m ->> 'error')::boolean THEN 'Message failed' END, false)
                ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content, model = EXCLUDED.model,
                    total_tokens = EXCLUDED.total_tokens, input_tokens = EXCLUDED.input_tokens,
                    output_tokens = EXCLUDED.output_tokens, user_message_id = EXCLUDED.user_message_id,
                    message_timestamp = EXCLUDED.message_timestamp;
            END LOOP;
            v_synced := v_synced + 1;
        EXCEPTION WHEN OTHERS THEN
            v_errors := v_errors + 1;
            v_details := v_details || jsonb_build_object('conversationId', c ->> 'id', 'error', SQLERRM);
        END;
    END LOOP;
    RETURN jsonb_build_object('synced', v_synced, 'errors', v_errors, 'details', v_details);
END $$;

-- ------------------------------------------------------------------ 03 user enhancements
ALTER TABLE public.profiles ADD COLUMN allowed_models TEXT[] DEFAULT ARRAY['deepseek/deepseek-r1-0528:free'];
ALTER TABLE public.profiles ADD COLUMN ui_preferences JSONB
    DEFAULT '{"theme": "dark", "sidebar_width": 280, "code_highlighting": true, "auto_save": true, "show_token_count": true}'::jsonb;
ALTER TABLE public.profiles ADD COLUMN session_preferences JSONB
    DEFAULT '{"max_history": 10, "auto_title": true, "save_anonymous": false}'::jsonb;

CREATE TABLE public.user_usage_daily (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id UUID REFERENCES public.profiles(id) ON DELETE CASCADE NOT NULL,
    usage_date DATE NOT NULL,
    messages_sent INTEGER DEFAULT 0,
    messages_received INTEGER DEFAULT 0,
    input_tokens INTEGER DEFAULT 0,
    output_tokens INTEGER DEFAULT 0,
    total_tokens INTEGER DEFAULT 0,
    models_used JSONB DEFAULT '{}'::jsonb,
    sessions_created INTEGER DEFAULT 0,
    active_minutes INTEGER DEFAULT 0,
    estimated_cost DECIMAL(10,4) DEFAULT 0.0000,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    UNIQUE (user_id, usage_date)
);

CREATE TABLE public.model_access (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    model_id VARCHAR(100) NOT NULL,
    tier VARCHAR(20) NOT NULL CHECK (tier IN ('free', 'pro', 'enterprise', 'admin')),
    is_active BOOLEAN DEFAULT true,
    input_cost_per_token DECIMAL(10,8) DEFAULT 0.0,
    output_cost_per_token DECIMAL(10,8) DEFAULT 0.0,
    daily_limit INTEGER DEFAULT NULL,
    monthly_limit INTEGER DEFAULT NULL,
    model_name VARCHAR(255),
    model_description TEXT,
    model_tags TEXT[],
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    UNIQUE (model_id, tier)
);

CREATE INDEX idx_usage_daily_user_date ON public.user_usage_daily(user_id, usage_date DESC);
CREATE INDEX idx_usage_daily_date ON public.user_usage_daily(usage_date DESC);
CREATE INDEX idx_model_access_tier ON public.model_access(tier, is_active);
CREATE INDEX idx_model_access_model_id ON public.model_access(model_id, is_active);

ALTER TABLE public.user_usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.model_access ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own usage" ON public.user_usage_daily
    FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Users can insert their own usage" ON public.user_usage_daily
    FOR INSERT WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can update their own usage" ON public.user_usage_daily
    FOR UPDATE USING (auth.uid() = user_id);
CREATE POLICY "All authenticated users can view model access" ON public.model_access
    FOR SELECT USING (auth.role() = 'authenticated');

-- Adds to today's counters (read-then-write of models_used, which the upsert then overwrites)
-- and to the profile totals. No key: every call counts.
CREATE FUNCTION public.track_user_usage(p_user_id UUID, p_messages_sent INTEGER DEFAULT 0,
    p_messages_received INTEGER DEFAULT 0, p_input_tokens INTEGER DEFAULT 0,
    p_output_tokens INTEGER DEFAULT 0, p_model_used VARCHAR(100) DEFAULT NULL,
    p_session_created BOOLEAN DEFAULT false, p_active_minutes INTEGER DEFAULT 0)
RETURNS VOID LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_models JSONB;
BEGIN
    SELECT models_used INTO v_models FROM public.user_usage_daily
    WHERE user_id = p_user_id AND usage_date = CURRENT_DATE;
    IF p_model_used IS NOT NULL THEN
        v_models := coalesce(v_models, '{}'::jsonb)
            || jsonb_build_object(p_model_used, coalesce((v_models ->> p_model_used)::int, 0) + 1);
    END IF;
    INSERT INTO public.user_usage_daily AS u (user_id, usage_date, messages_sent, messages_received,
        input_tokens, output_tokens, total_tokens, models_used, sessions_created, active_minutes)
    VALUES (p_user_id, CURRENT_DATE, p_messages_sent, p_messages_received, p_input_tokens,
            p_output_tokens, p_input_tokens + p_output_tokens, coalesce(v_models, '{}'::jsonb),
            p_session_created::int, p_active_minutes)
    ON CONFLICT (user_id, usage_date) DO UPDATE SET
        messages_sent = u.messages_sent + EXCLUDED.messages_sent,
        messages_received = u.messages_received + EXCLUDED.messages_received,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        total_tokens = u.total_tokens + EXCLUDED.total_tokens,
        models_used = coalesce(EXCLUDED.models_used, u.models_used),
        sessions_created = u.sessions_created + EXCLUDED.sessions_created,
        active_minutes = u.active_minutes + EXCLUDED.active_minutes,
        updated_at = now();
    UPDATE public.profiles SET
        usage_stats = usage_stats || jsonb_build_object(
            'total_messages', coalesce((usage_stats ->> 'total_messages')::int, 0) + p_messages_sent + p_messages_received,
            'total_tokens', coalesce((usage_stats ->> 'total_tokens')::int, 0) + p_input_tokens + p_output_tokens,
            'sessions_created', coalesce((usage_stats ->> 'sessions_created')::int, 0) + p_session_created::int),
        last_active = now()
    WHERE id = p_user_id;
END $$;

-- The tiers' rank: a user may use the models of its tier and of every lower one.
CREATE FUNCTION public.get_user_allowed_models(user_uuid UUID)
RETURNS TABLE (model_id VARCHAR(100), model_name VARCHAR(255), model_description TEXT,
               model_tags TEXT[], input_cost_per_token DECIMAL(10,8),
               output_cost_per_token DECIMAL(10,8), daily_limit INTEGER, monthly_limit INTEGER)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_rank INTEGER;
BEGIN
    SELECT array_position(ARRAY['free', 'pro', 'enterprise', 'admin'], coalesce(p.subscription_tier, 'free'))
    INTO v_rank FROM public.profiles p WHERE p.id = user_uuid;
    RETURN QUERY SELECT ma.model_id, ma.model_name, ma.model_description, ma.model_tags,
        ma.input_cost_per_token, ma.output_cost_per_token, ma.daily_limit, ma.monthly_limit
    FROM public.model_access ma
    WHERE ma.is_active
      AND array_position(ARRAY['free', 'pro', 'enterprise', 'admin'], ma.tier::text) <= coalesce(v_rank, 1)
    ORDER BY array_position(ARRAY['free', 'pro', 'enterprise', 'admin'], ma.tier::text), ma.model_name;
END $$;

CREATE FUNCTION public.can_user_use_model(user_uuid UUID, model_to_check VARCHAR(100))
RETURNS BOOLEAN LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM public.get_user_allowed_models(user_uuid) a WHERE a.model_id = model_to_check);
END $$;

-- Sets any user's tier (no check of who asks) and logs it.
CREATE FUNCTION public.update_user_tier(user_uuid UUID, new_tier VARCHAR(20))
RETURNS JSONB LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_old VARCHAR(20);
BEGIN
    IF new_tier NOT IN ('free', 'pro', 'enterprise', 'admin') THEN
        RETURN jsonb_build_object('success', false, 'error', 'Invalid tier. Must be: free, pro, enterprise, or admin');
    END IF;
    SELECT subscription_tier INTO v_old FROM public.profiles WHERE id = user_uuid;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', false, 'error', 'User not found');
    END IF;
    UPDATE public.profiles SET subscription_tier = new_tier, updated_at = now() WHERE id = user_uuid;
    PERFORM public.log_user_activity(user_uuid, 'tier_updated', 'profile', user_uuid::text,
        jsonb_build_object('old_tier', v_old, 'new_tier', new_tier));
    RETURN jsonb_build_object('success', true, 'old_tier', v_old, 'new_tier', new_tier, 'updated_at', now());
END $$;

INSERT INTO public.model_access (model_id, tier, model_name, model_description, model_tags, is_active) VALUES
    ('deepseek/deepseek-r1-0528:free', 'free', 'DeepSeek R1 Free', 'reasoning, free tier', ARRAY['reasoning', 'free'], true),
    ('google/gemini-flash-1.5:free', 'free', 'Gemini Flash 1.5 Free', 'fast multimodal, free tier', ARRAY['multimodal', 'free'], true),
    ('openai/gpt-4o-mini', 'pro', 'GPT-4o Mini', 'efficient GPT-4', ARRAY['reasoning'], true),
    ('anthropic/claude-3-haiku', 'pro', 'Claude 3 Haiku', 'fast Claude', ARRAY['fast'], true),
    ('google/gemini-pro', 'pro', 'Gemini Pro', 'advanced Google model', ARRAY['multimodal'], true),
    ('openai/gpt-4o', 'enterprise', 'GPT-4o', 'most capable GPT-4', ARRAY['advanced'], true),
    ('anthropic/claude-3-opus', 'enterprise', 'Claude 3 Opus', 'most capable Claude', ARRAY['advanced'], true),
    ('openai/o1', 'enterprise', 'OpenAI o1', 'advanced reasoning', ARRAY['premium'], true);

-- ------------------------------------------------------------------ 04 system final
-- Objects merged key by key, recursively (created without a schema: lands in public).
CREATE FUNCTION jsonb_deep_merge(a JSONB, b JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    k TEXT;
    v JSONB;
    r JSONB := a;
BEGIN
    FOR k, v IN SELECT * FROM jsonb_each(b) LOOP
        IF jsonb_typeof(v) = 'object' AND jsonb_typeof(r -> k) = 'object' THEN
            r := jsonb_set(r, ARRAY[k], jsonb_deep_merge(r -> k, v));
        ELSE
            r := jsonb_set(r, ARRAY[k], v, true);
        END IF;
    END LOOP;
    RETURN r;
END $$;

CREATE TABLE public.system_cache (
    cache_key VARCHAR(255) PRIMARY KEY,
    cache_value JSONB NOT NULL,
    expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL
);

CREATE TABLE public.system_stats (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    stat_date DATE NOT NULL,
    total_users INTEGER DEFAULT 0,
    active_users_today INTEGER DEFAULT 0,
    new_users_today INTEGER DEFAULT 0,
    total_conversations INTEGER DEFAULT 0,
    total_messages INTEGER DEFAULT 0,
    total_tokens INTEGER DEFAULT 0,
    avg_response_time DECIMAL(10,3) DEFAULT 0,
    error_rate DECIMAL(5,4) DEFAULT 0,
    database_size_mb DECIMAL(15,2) DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    UNIQUE (stat_date)
);
CREATE INDEX idx_system_cache_expires ON public.system_cache(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX idx_system_stats_date ON public.system_stats(stat_date DESC);

-- Merges preferences of one kind ('ui', 'session', 'model') into any user's profile.
CREATE FUNCTION public.update_user_preferences(user_uuid UUID, preference_type VARCHAR(50), preferences JSONB)
RETURNS JSONB LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF preference_type = 'ui' THEN
        UPDATE public.profiles SET ui_preferences = jsonb_deep_merge(coalesce(ui_preferences, '{}'), preferences),
            updated_at = now() WHERE id = user_uuid;
    ELSIF preference_type = 'session' THEN
        UPDATE public.profiles SET session_preferences = jsonb_deep_merge(coalesce(session_preferences, '{}'), preferences),
            updated_at = now() WHERE id = user_uuid;
    ELSIF preference_type = 'model' THEN
        UPDATE public.profiles SET default_model = coalesce(preferences ->> 'default_model', default_model),
            temperature = coalesce((preferences ->> 'temperature')::decimal, temperature),
            system_prompt = coalesce(preferences ->> 'system_prompt', system_prompt),
            updated_at = now() WHERE id = user_uuid;
    ELSE
        RETURN jsonb_build_object('success', false, 'error', 'Invalid preference type');
    END IF;
    RETURN jsonb_build_object('success', FOUND, 'updated_at', now());
END $$;

-- Any user's profile, allowed models and last 7 days of usage, as one document.
CREATE FUNCTION public.get_user_complete_profile(user_uuid UUID) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'id', p.id, 'email', p.email, 'full_name', p.full_name, 'subscription_tier', p.subscription_tier,
        'credits', p.credits, 'allowed_models', (SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]')
                                                 FROM public.get_user_allowed_models(user_uuid) a),
        'usage_stats', jsonb_build_object(
            'today', (SELECT to_jsonb(u) FROM public.user_usage_daily u
                      WHERE u.user_id = user_uuid AND u.usage_date = CURRENT_DATE),
            'recent_days', (SELECT coalesce(jsonb_agg(to_jsonb(u) ORDER BY u.usage_date DESC), '[]')
                            FROM public.user_usage_daily u
                            WHERE u.user_id = user_uuid AND u.usage_date >= CURRENT_DATE - 7),
            'total', p.usage_stats))
    FROM public.profiles p WHERE p.id = user_uuid);
END $$;

-- Deletes activity and usage older than N days and expired cache entries; refreshes system_stats.
CREATE FUNCTION public.cleanup_old_data(days_to_keep INTEGER DEFAULT 90) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_activity INTEGER;
    v_usage INTEGER;
    v_cache INTEGER;
BEGIN
    DELETE FROM public.user_activity_log WHERE timestamp < now() - make_interval(days => days_to_keep);
    GET DIAGNOSTICS v_activity = ROW_COUNT;
    DELETE FROM public.user_usage_daily WHERE usage_date < CURRENT_DATE - days_to_keep;
    GET DIAGNOSTICS v_usage = ROW_COUNT;
    DELETE FROM public.system_cache WHERE expires_at < now();
    GET DIAGNOSTICS v_cache = ROW_COUNT;
    INSERT INTO public.system_stats (stat_date, total_users, total_conversations, total_messages)
    SELECT CURRENT_DATE, (SELECT count(*) FROM public.profiles), (SELECT count(*) FROM public.chat_sessions),
           (SELECT count(*) FROM public.chat_messages)
    ON CONFLICT (stat_date) DO UPDATE SET total_users = EXCLUDED.total_users,
        total_conversations = EXCLUDED.total_conversations, total_messages = EXCLUDED.total_messages;
    RETURN jsonb_build_object('success', true, 'deleted_records', jsonb_build_object(
        'activity_logs', v_activity, 'usage_records', v_usage, 'cache_entries', v_cache));
END $$;

-- Any user's profile, conversations with messages, activity and usage (GDPR export).
CREATE FUNCTION public.export_user_data(user_uuid UUID) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN jsonb_build_object(
        'export_date', now(), 'user_id', user_uuid,
        'profile', (SELECT to_jsonb(p) FROM public.profiles p WHERE p.id = user_uuid),
        'conversations', coalesce((SELECT jsonb_agg(jsonb_build_object('session', to_jsonb(s),
            'messages', (SELECT jsonb_agg(to_jsonb(m) ORDER BY m.message_timestamp)
                         FROM public.chat_messages m WHERE m.session_id = s.id)))
            FROM public.chat_sessions s WHERE s.user_id = user_uuid), '[]'),
        'activity_log', coalesce((SELECT jsonb_agg(to_jsonb(a)) FROM public.user_activity_log a
                                  WHERE a.user_id = user_uuid), '[]'),
        'usage_stats', coalesce((SELECT jsonb_agg(to_jsonb(u)) FROM public.user_usage_daily u
                                 WHERE u.user_id = user_uuid), '[]'));
END $$;

CREATE FUNCTION public.analyze_database_health() RETURNS JSONB LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN jsonb_build_object(
        'timestamp', now(), 'database_size', pg_size_pretty(pg_database_size(current_database())),
        'total_users', (SELECT count(*) FROM public.profiles),
        'total_conversations', (SELECT count(*) FROM public.chat_sessions),
        'total_messages', (SELECT count(*) FROM public.chat_messages));
END $$;

-- The API's user summary: 16 columns, today's usage summed per user.
CREATE VIEW public.api_user_summary AS
SELECT p.id, p.email, p.full_name, p.avatar_url, p.subscription_tier, p.credits, p.default_model,
       p.temperature, p.system_prompt, p.ui_preferences, p.session_preferences, p.allowed_models,
       p.last_active,
       coalesce(today.messages_today, 0) AS messages_today,
       coalesce(today.tokens_today, 0) AS tokens_today,
       coalesce(sessions.total_sessions, 0) AS total_sessions
FROM public.profiles p
LEFT JOIN (SELECT user_id, sum(messages_sent + messages_received) AS messages_today,
                  sum(total_tokens) AS tokens_today
           FROM public.user_usage_daily WHERE usage_date = CURRENT_DATE GROUP BY user_id) today
    ON today.user_id = p.id
LEFT JOIN (SELECT user_id, count(*) AS total_sessions FROM public.chat_sessions GROUP BY user_id) sessions
    ON sessions.user_id = p.id;
