-- Legacy fixture: the chat schema as the app's old SQL scripts (database/01..04-complete-*.sql)
-- created it in production, reconstructed from the design documents in shared/seeds/.
--
-- This file is test and demo material, NOT part of pgchat: it reproduces the bugs on purpose
-- (re-counted usage on every upsert, failed messages counted, usage booked on CURRENT_DATE,
-- read-then-write of models_used, per-row re-aggregation, a sync function that trusts its caller).
-- It expects Supabase's `auth` schema (or pgchat's stand-in, migration 0001) to exist.
-- Do not "fix" anything here: it is the "before" that pgchat is measured against.

-- ---------------------------------------------------------------- 01-complete-user-management
CREATE TABLE IF NOT EXISTS public.profiles (
    id UUID REFERENCES auth.users(id) ON DELETE CASCADE PRIMARY KEY,
    email VARCHAR(255) NOT NULL,
    full_name VARCHAR(255),
    avatar_url TEXT,
    default_model VARCHAR(100) DEFAULT 'deepseek/deepseek-r1-0528:free',
    temperature DECIMAL(3,2) DEFAULT 0.7 CHECK (temperature >= 0.0 AND temperature <= 2.0),
    system_prompt TEXT DEFAULT 'You are a helpful AI assistant.',
    subscription_tier VARCHAR(20) DEFAULT 'free' CHECK (subscription_tier IN ('free', 'pro', 'enterprise')),
    credits INTEGER DEFAULT 0 NOT NULL,
    ui_preferences JSONB DEFAULT '{"theme": "dark", "sidebar_width": 280}'::jsonb,
    session_preferences JSONB DEFAULT '{"auto_title": true, "max_history": 10}'::jsonb,
    usage_stats JSONB DEFAULT '{"total_messages": 0, "total_tokens": 0, "sessions_created": 0}'::jsonb,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    last_active TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS public.user_activity_log (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id UUID REFERENCES public.profiles(id) ON DELETE CASCADE,
    action VARCHAR(50) NOT NULL,
    resource_type VARCHAR(50),
    resource_id TEXT,
    details JSONB DEFAULT '{}'::jsonb,
    timestamp TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    ip_address INET,
    user_agent TEXT
);

CREATE INDEX IF NOT EXISTS idx_profiles_email ON public.profiles(email);
CREATE INDEX IF NOT EXISTS idx_profiles_last_active ON public.profiles(last_active);
CREATE INDEX IF NOT EXISTS idx_profiles_subscription_tier ON public.profiles(subscription_tier);
CREATE INDEX IF NOT EXISTS idx_activity_log_user_id ON public.user_activity_log(user_id);
CREATE INDEX IF NOT EXISTS idx_activity_log_timestamp ON public.user_activity_log(timestamp);
CREATE INDEX IF NOT EXISTS idx_activity_log_action ON public.user_activity_log(action);

ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_activity_log ENABLE ROW LEVEL SECURITY;

CREATE POLICY "Users can view their own profile" ON public.profiles
    FOR SELECT USING (auth.uid() = id);
CREATE POLICY "Users can update their own profile" ON public.profiles
    FOR UPDATE USING (auth.uid() = id);
CREATE POLICY "Users can insert their own profile" ON public.profiles
    FOR INSERT WITH CHECK (auth.uid() = id);
CREATE POLICY "Users can view their own activity" ON public.user_activity_log
    FOR SELECT USING (auth.uid() = user_id);

CREATE OR REPLACE FUNCTION public.update_updated_at_column()
RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = NOW();
    IF TG_OP = 'INSERT' AND NEW.usage_stats IS NULL THEN
        NEW.usage_stats = '{"total_messages": 0, "total_tokens": 0, "sessions_created": 0}'::jsonb;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION public.log_user_activity(
    p_user_id UUID,
    p_action VARCHAR(50),
    p_resource_type VARCHAR(50) DEFAULT NULL,
    p_resource_id TEXT DEFAULT NULL,
    p_details JSONB DEFAULT '{}'::jsonb
)
RETURNS UUID AS $$
DECLARE
    log_id UUID;
BEGIN
    INSERT INTO public.user_activity_log (user_id, action, resource_type, resource_id, details)
    VALUES (p_user_id, p_action, p_resource_type, p_resource_id, p_details)
    RETURNING id INTO log_id;
    RETURN log_id;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;

CREATE OR REPLACE FUNCTION public.handle_user_profile_sync()
RETURNS TRIGGER AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.profiles WHERE id = NEW.id) THEN
        INSERT INTO public.profiles (id, email, full_name, avatar_url, last_active)
        VALUES (
            NEW.id,
            NEW.email,
            COALESCE(NEW.raw_user_meta_data->>'full_name', NEW.raw_user_meta_data->>'name'),
            NEW.raw_user_meta_data->>'avatar_url',
            NOW()
        );
        PERFORM public.log_user_activity(NEW.id, 'profile_created', 'profile', NEW.id::text,
                                         jsonb_build_object('email', NEW.email));
    ELSE
        UPDATE public.profiles SET
            email = NEW.email,
            full_name = COALESCE(NEW.raw_user_meta_data->>'full_name', NEW.raw_user_meta_data->>'name', full_name),
            avatar_url = COALESCE(NEW.raw_user_meta_data->>'avatar_url', avatar_url),
            last_active = NOW()
        WHERE id = NEW.id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;

CREATE OR REPLACE TRIGGER update_profiles_updated_at
    BEFORE INSERT OR UPDATE ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();

CREATE OR REPLACE TRIGGER on_auth_user_profile_sync
    AFTER INSERT OR UPDATE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION public.handle_user_profile_sync();

-- ---------------------------------------------------------------- 02-complete-chat-history
CREATE TABLE IF NOT EXISTS public.chat_sessions (
    id TEXT PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    title VARCHAR(255) NOT NULL DEFAULT 'New Chat',
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    last_activity TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    message_count INTEGER DEFAULT 0 NOT NULL,
    total_tokens INTEGER DEFAULT 0 NOT NULL,
    last_model VARCHAR(100),
    last_message_preview TEXT,
    last_message_timestamp TIMESTAMPTZ,
    is_active BOOLEAN DEFAULT true NOT NULL
);

CREATE TABLE IF NOT EXISTS public.chat_messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES public.chat_sessions(id) ON DELETE CASCADE,
    role VARCHAR(20) NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content TEXT NOT NULL,
    model VARCHAR(100),
    total_tokens INTEGER DEFAULT 0 NOT NULL,
    input_tokens INTEGER DEFAULT 0 NOT NULL,
    output_tokens INTEGER DEFAULT 0 NOT NULL,
    user_message_id TEXT,
    content_type VARCHAR(20) DEFAULT 'text' CHECK (content_type IN ('text', 'markdown')),
    elapsed_time INTEGER DEFAULT 0,
    completion_id VARCHAR(255),
    message_timestamp TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    error_message TEXT,
    is_streaming BOOLEAN DEFAULT false,
    metadata JSONB DEFAULT '{}'::jsonb
);

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

ALTER TABLE public.chat_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_messages ENABLE ROW LEVEL SECURITY;

CREATE POLICY "Users can view their own chat sessions" ON public.chat_sessions
    FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Users can create their own chat sessions" ON public.chat_sessions
    FOR INSERT WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can update their own chat sessions" ON public.chat_sessions
    FOR UPDATE USING (auth.uid() = user_id);
CREATE POLICY "Users can delete their own chat sessions" ON public.chat_sessions
    FOR DELETE USING (auth.uid() = user_id);
CREATE POLICY "Users can view messages from their sessions" ON public.chat_messages
    FOR SELECT USING (EXISTS (SELECT 1 FROM public.chat_sessions
                              WHERE chat_sessions.id = chat_messages.session_id
                              AND chat_sessions.user_id = auth.uid()));
CREATE POLICY "Users can create messages in their sessions" ON public.chat_messages
    FOR INSERT WITH CHECK (EXISTS (SELECT 1 FROM public.chat_sessions
                                   WHERE chat_sessions.id = chat_messages.session_id
                                   AND chat_sessions.user_id = auth.uid()));
CREATE POLICY "Users can update messages in their sessions" ON public.chat_messages
    FOR UPDATE USING (EXISTS (SELECT 1 FROM public.chat_sessions
                              WHERE chat_sessions.id = chat_messages.session_id
                              AND chat_sessions.user_id = auth.uid()));
CREATE POLICY "Users can delete messages in their sessions" ON public.chat_messages
    FOR DELETE USING (EXISTS (SELECT 1 FROM public.chat_sessions
                              WHERE chat_sessions.id = chat_messages.session_id
                              AND chat_sessions.user_id = auth.uid()));

-- Quoted from shared/seeds/000 (legacy): per-row re-aggregation and usage on every write.
CREATE OR REPLACE FUNCTION public.update_session_stats()
RETURNS TRIGGER AS $$
DECLARE
    session_stats RECORD;
    total_input_tokens INTEGER := 0;
    total_output_tokens INTEGER := 0;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT
            COUNT(*) as msg_count,
            COALESCE(SUM(total_tokens), 0) as token_sum,
            COALESCE(SUM(input_tokens), 0) as input_sum,
            COALESCE(SUM(output_tokens), 0) as output_sum,
            MAX(message_timestamp) as last_msg_time,
            (SELECT content FROM public.chat_messages
             WHERE session_id = OLD.session_id
             ORDER BY message_timestamp DESC
             LIMIT 1) as last_preview,
            (SELECT model FROM public.chat_messages
             WHERE session_id = OLD.session_id
             ORDER BY message_timestamp DESC
             LIMIT 1) as last_model_used
        INTO session_stats
        FROM public.chat_messages
        WHERE session_id = OLD.session_id;

        total_input_tokens := session_stats.input_sum;
        total_output_tokens := session_stats.output_sum;

        UPDATE public.chat_sessions
        SET
            message_count = session_stats.msg_count,
            total_tokens = session_stats.token_sum,
            last_message_timestamp = session_stats.last_msg_time,
            last_message_preview = LEFT(session_stats.last_preview, 200),
            last_model = session_stats.last_model_used,
            last_activity = NOW(),
            updated_at = NOW()
        WHERE id = OLD.session_id;
    ELSE
        SELECT
            COUNT(*) as msg_count,
            COALESCE(SUM(total_tokens), 0) as token_sum,
            COALESCE(SUM(input_tokens), 0) as input_sum,
            COALESCE(SUM(output_tokens), 0) as output_sum,
            MAX(message_timestamp) as last_msg_time,
            (SELECT content FROM public.chat_messages
             WHERE session_id = NEW.session_id
             ORDER BY message_timestamp DESC
             LIMIT 1) as last_preview,
            (SELECT model FROM public.chat_messages
             WHERE session_id = NEW.session_id
             ORDER BY message_timestamp DESC
             LIMIT 1) as last_model_used
        INTO session_stats
        FROM public.chat_messages
        WHERE session_id = NEW.session_id;

        total_input_tokens := session_stats.input_sum;
        total_output_tokens := session_stats.output_sum;

        UPDATE public.chat_sessions
        SET
            message_count = session_stats.msg_count,
            total_tokens = session_stats.token_sum,
            last_message_timestamp = session_stats.last_msg_time,
            last_message_preview = LEFT(session_stats.last_preview, 200),
            last_model = session_stats.last_model_used,
            last_activity = NOW(),
            updated_at = NOW()
        WHERE id = NEW.session_id;

        IF NEW.role IN ('user', 'assistant') THEN
            PERFORM public.track_user_usage(
                (SELECT user_id FROM public.chat_sessions WHERE id = NEW.session_id),
                CASE WHEN NEW.role = 'user' THEN 1 ELSE 0 END,
                CASE WHEN NEW.role = 'assistant' THEN 1 ELSE 0 END,
                CASE WHEN NEW.role = 'user' THEN COALESCE(NEW.input_tokens, 0) ELSE 0 END,
                CASE WHEN NEW.role = 'assistant' THEN COALESCE(NEW.output_tokens, 0) ELSE 0 END,
                NEW.model,
                false,
                CASE WHEN NEW.role = 'assistant' THEN COALESCE(NEW.elapsed_time, 0) ELSE 0 END
            );
        END IF;
    END IF;

    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    ELSE
        RETURN NEW;
    END IF;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION public.update_session_timestamp()
RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = NOW();
    NEW.last_activity = NOW();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE TRIGGER on_message_change
    AFTER INSERT OR UPDATE OR DELETE ON public.chat_messages
    FOR EACH ROW EXECUTE FUNCTION public.update_session_stats();

CREATE OR REPLACE TRIGGER on_session_updated
    BEFORE UPDATE ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION public.update_session_timestamp();

-- The legacy bulk sync: upserts everything and never checks who owns an existing row.
CREATE OR REPLACE FUNCTION public.sync_user_conversations(
    user_uuid UUID,
    conversations_data JSONB
)
RETURNS JSONB AS $$
DECLARE
    conversation JSONB;
    message JSONB;
    sync_count INTEGER := 0;
    message_count INTEGER := 0;
BEGIN
    FOR conversation IN SELECT * FROM jsonb_array_elements(conversations_data)
    LOOP
        INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at)
        VALUES (
            conversation->>'id',
            user_uuid,
            COALESCE(conversation->>'title', 'New Chat'),
            COALESCE((conversation->>'createdAt')::timestamptz, NOW()),
            COALESCE((conversation->>'updatedAt')::timestamptz, NOW())
        )
        ON CONFLICT (id) DO UPDATE SET
            title = EXCLUDED.title,
            updated_at = EXCLUDED.updated_at;

        FOR message IN SELECT * FROM jsonb_array_elements(conversation->'messages')
        LOOP
            INSERT INTO public.chat_messages (
                id, session_id, role, content, model, total_tokens, input_tokens, output_tokens,
                user_message_id, content_type, elapsed_time, completion_id, message_timestamp
            ) VALUES (
                message->>'id',
                conversation->>'id',
                message->>'role',
                message->>'content',
                message->>'model',
                COALESCE((message->>'total_tokens')::integer, 0),
                COALESCE((message->>'input_tokens')::integer, 0),
                COALESCE((message->>'output_tokens')::integer, 0),
                message->>'user_message_id',
                COALESCE(message->>'contentType', 'text'),
                COALESCE((message->>'elapsed_time')::integer, 0),
                message->>'completion_id',
                COALESCE((message->>'timestamp')::timestamptz, NOW())
            )
            ON CONFLICT (id) DO UPDATE SET
                content = EXCLUDED.content,
                model = EXCLUDED.model,
                total_tokens = EXCLUDED.total_tokens,
                input_tokens = EXCLUDED.input_tokens,
                output_tokens = EXCLUDED.output_tokens,
                elapsed_time = EXCLUDED.elapsed_time,
                completion_id = EXCLUDED.completion_id;
            message_count := message_count + 1;
        END LOOP;
        sync_count := sync_count + 1;
    END LOOP;

    RETURN jsonb_build_object(
        'success', true,
        'synced_conversations', sync_count,
        'synced_messages', message_count,
        'sync_timestamp', NOW()
    );
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;

-- ---------------------------------------------------------------- 03-complete-user-enhancements
CREATE TABLE IF NOT EXISTS public.user_usage_daily (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    usage_date DATE NOT NULL DEFAULT CURRENT_DATE,
    messages_sent INTEGER DEFAULT 0 NOT NULL,
    messages_received INTEGER DEFAULT 0 NOT NULL,
    input_tokens INTEGER DEFAULT 0 NOT NULL,
    output_tokens INTEGER DEFAULT 0 NOT NULL,
    total_tokens INTEGER DEFAULT 0 NOT NULL,
    models_used JSONB DEFAULT '{}'::jsonb NOT NULL,
    sessions_created INTEGER DEFAULT 0 NOT NULL,
    active_minutes INTEGER DEFAULT 0 NOT NULL,
    estimated_cost DECIMAL(10,6) DEFAULT 0.00 NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    UNIQUE (user_id, usage_date)
);

CREATE TABLE IF NOT EXISTS public.model_access (
    id UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    model_id VARCHAR(100) NOT NULL,
    model_name VARCHAR(255),
    model_description TEXT,
    tier VARCHAR(20) NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'pro', 'enterprise')),
    is_active BOOLEAN DEFAULT true NOT NULL,
    daily_limit INTEGER,
    monthly_limit INTEGER,
    cost_per_1k_tokens DECIMAL(10,6) DEFAULT 0.00 NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    updated_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
    UNIQUE (model_id, tier)
);

CREATE INDEX IF NOT EXISTS idx_usage_daily_user_date ON public.user_usage_daily(user_id, usage_date DESC);
CREATE INDEX IF NOT EXISTS idx_usage_daily_date ON public.user_usage_daily(usage_date DESC);
CREATE INDEX IF NOT EXISTS idx_model_access_tier ON public.model_access(tier, is_active);
CREATE INDEX IF NOT EXISTS idx_model_access_model_id ON public.model_access(model_id, is_active);

ALTER TABLE public.user_usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.model_access ENABLE ROW LEVEL SECURITY;

CREATE POLICY "Users can view their own usage" ON public.user_usage_daily
    FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "All users can view model access" ON public.model_access
    FOR SELECT USING (true);

-- Quoted from shared/seeds/000 (legacy): CURRENT_DATE, read-then-write models_used.
CREATE OR REPLACE FUNCTION public.track_user_usage(
    p_user_id UUID,
    p_messages_sent INTEGER DEFAULT 0,
    p_messages_received INTEGER DEFAULT 0,
    p_input_tokens INTEGER DEFAULT 0,
    p_output_tokens INTEGER DEFAULT 0,
    p_model_used VARCHAR(100) DEFAULT NULL,
    p_session_created BOOLEAN DEFAULT false,
    p_active_minutes INTEGER DEFAULT 0
)
RETURNS VOID AS $$
DECLARE
    today_date DATE := CURRENT_DATE;
    model_usage JSONB;
BEGIN
    SELECT models_used INTO model_usage
    FROM public.user_usage_daily
    WHERE user_id = p_user_id AND usage_date = today_date;

    IF p_model_used IS NOT NULL THEN
        IF model_usage IS NULL THEN
            model_usage := jsonb_build_object(p_model_used, 1);
        ELSE
            model_usage := jsonb_set(
                model_usage,
                ARRAY[p_model_used],
                (COALESCE((model_usage->>p_model_used)::integer, 0) + 1)::text::jsonb
            );
        END IF;
    END IF;

    INSERT INTO public.user_usage_daily (
        user_id, usage_date, messages_sent, messages_received,
        input_tokens, output_tokens, total_tokens, models_used,
        sessions_created, active_minutes
    ) VALUES (
        p_user_id, today_date, p_messages_sent, p_messages_received,
        p_input_tokens, p_output_tokens, p_input_tokens + p_output_tokens,
        COALESCE(model_usage, '{}'::jsonb),
        CASE WHEN p_session_created THEN 1 ELSE 0 END,
        p_active_minutes
    )
    ON CONFLICT (user_id, usage_date) DO UPDATE SET
        messages_sent = user_usage_daily.messages_sent + EXCLUDED.messages_sent,
        messages_received = user_usage_daily.messages_received + EXCLUDED.messages_received,
        input_tokens = user_usage_daily.input_tokens + EXCLUDED.input_tokens,
        output_tokens = user_usage_daily.output_tokens + EXCLUDED.output_tokens,
        total_tokens = user_usage_daily.total_tokens + EXCLUDED.total_tokens,
        models_used = COALESCE(EXCLUDED.models_used, user_usage_daily.models_used),
        sessions_created = user_usage_daily.sessions_created + EXCLUDED.sessions_created,
        active_minutes = user_usage_daily.active_minutes + EXCLUDED.active_minutes,
        updated_at = NOW();

    UPDATE public.profiles SET
        usage_stats = jsonb_set(
            jsonb_set(
                jsonb_set(
                    usage_stats,
                    '{total_messages}',
                    ((COALESCE((usage_stats->>'total_messages')::integer, 0) + p_messages_sent + p_messages_received))::text::jsonb
                ),
                '{total_tokens}',
                ((COALESCE((usage_stats->>'total_tokens')::integer, 0) + p_input_tokens + p_output_tokens))::text::jsonb
            ),
            '{sessions_created}',
            ((COALESCE((usage_stats->>'sessions_created')::integer, 0) + CASE WHEN p_session_created THEN 1 ELSE 0 END))::text::jsonb
        ),
        last_active = NOW()
    WHERE id = p_user_id;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;

-- ---------------------------------------------------------------- 04-complete-system-final
CREATE OR REPLACE VIEW public.api_user_summary AS
SELECT
    p.id,
    p.email,
    p.full_name,
    p.subscription_tier,
    p.credits,
    p.usage_stats,
    p.last_active,
    COALESCE(u.messages_sent + u.messages_received, 0) AS messages_today,
    COALESCE(u.total_tokens, 0) AS tokens_today,
    (SELECT COUNT(*) FROM public.chat_sessions s WHERE s.user_id = p.id) AS total_sessions
FROM public.profiles p
LEFT JOIN public.user_usage_daily u ON u.user_id = p.id AND u.usage_date = CURRENT_DATE;
