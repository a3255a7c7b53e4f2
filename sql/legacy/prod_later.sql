-- Test fixture: the chat app's public schema at a LATER state (teamcmcbot/openrouter-chatbot at
-- its newest commit 8940456, 2026-04-13): database/schema/000_baseline.sql (a `supabase db dump`
-- of 2025-09-15) plus what was applied after it: 07-stripe-payments.sql (2025-09-21, Stripe
-- tables and profile columns) and patches/personality-feature (2025-10-03,
-- profiles.personality_preset). Facts and sources: docs/app-later-facts.md.
--
-- Written for pgchat's tests from those facts (tables and columns with their types and
-- defaults, constraints, policy names and rules, function signatures, what each function reads
-- and writes, triggers, grants); the function bodies are pgchat's own, shorter, with the same
-- effects. Only what chat, usage, profiles, pricing, Stripe and admin writes touch is here;
-- anonymous analytics, model sync, CTA events, storage and auth internals are left out.
--
-- NOT part of pgchat. It reproduces the app's behaviour on purpose, bugs included: usage booked
-- on CURRENT_DATE (not the message's day), a conversation deleted and re-uploaded counted again,
-- the sync route writing session statistics itself.
-- Run it as the migration role (Supabase's `postgres`) in a database with Supabase's platform
-- (tests/supabase.py: auth.users, auth.uid(), auth.role()).

-- ------------------------------------------------------------------ users
CREATE TABLE public.profiles (
    id uuid PRIMARY KEY REFERENCES auth.users(id) ON DELETE CASCADE,
    email varchar(255) NOT NULL,
    full_name varchar(255),
    avatar_url text,
    default_model varchar(100),
    temperature numeric(3,2) DEFAULT 0.7 CHECK (temperature >= 0.0 AND temperature <= 2.0),
    system_prompt text DEFAULT 'You are a helpful AI assistant.',
    subscription_tier varchar(20) DEFAULT 'free' CHECK (subscription_tier IN ('free', 'pro', 'enterprise')),
    credits integer DEFAULT 0 NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    last_active timestamptz DEFAULT now(),
    usage_stats jsonb DEFAULT '{"total_tokens": 0, "total_messages": 0, "sessions_created": 0}'::jsonb,
    ui_preferences jsonb DEFAULT '{"theme": "dark", "auto_save": true, "sidebar_width": 280, "show_token_count": true, "code_highlighting": true}'::jsonb,
    session_preferences jsonb DEFAULT '{"auto_title": true, "max_history": 10, "save_anonymous": false}'::jsonb,
    account_type text DEFAULT 'user' NOT NULL CHECK (account_type IN ('user', 'admin')),
    is_banned boolean DEFAULT false NOT NULL,
    banned_at timestamptz,
    banned_until timestamptz,
    ban_reason text,
    violation_strikes integer DEFAULT 0 NOT NULL CHECK (violation_strikes >= 0),
    -- 07-stripe-payments.sql
    stripe_customer_id text UNIQUE,
    subscription_status text DEFAULT 'inactive',
    subscription_updated_at timestamptz,
    trial_ends_at timestamptz,
    -- patches/personality-feature
    personality_preset text,
    CONSTRAINT chk_banned_until_after_banned_at
        CHECK (banned_until IS NULL OR banned_at IS NULL OR banned_until > banned_at)
);
CREATE INDEX idx_profiles_email ON public.profiles(email);
CREATE INDEX idx_profiles_last_active ON public.profiles(last_active);
CREATE INDEX idx_profiles_subscription_tier ON public.profiles(subscription_tier);
CREATE INDEX idx_profiles_account_type_admin ON public.profiles(account_type) WHERE account_type = 'admin';
CREATE INDEX idx_profiles_stripe_customer_id ON public.profiles(stripe_customer_id);

CREATE TABLE public.user_activity_log (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    action varchar(50) NOT NULL,
    resource_type varchar(50),
    resource_id text,
    details jsonb DEFAULT '{}'::jsonb,
    "timestamp" timestamptz DEFAULT now() NOT NULL,
    ip_address inet,
    user_agent text
);

CREATE TABLE public.admin_audit_log (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    actor_user_id uuid,
    action text NOT NULL,
    target text NOT NULL,
    payload jsonb,
    created_at timestamptz DEFAULT now() NOT NULL
);

-- True when the user's profile says account_type = 'admin'.
CREATE FUNCTION public.is_admin(p_user_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT EXISTS (SELECT 1 FROM public.profiles WHERE id = p_user_id AND account_type = 'admin')
$$;

-- Stamps updated_at; a new profile's usage_stats gets a last_reset key.
CREATE FUNCTION public.update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.updated_at := now();
    IF TG_OP = 'INSERT' THEN
        NEW.usage_stats := NEW.usage_stats || jsonb_build_object('last_reset', now()::text);
    END IF;
    RETURN NEW;
END $$;

-- Only the service role (no auth.uid()) or an admin may change the ban columns.
CREATE FUNCTION public.protect_ban_columns() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    IF auth.uid() IS NULL OR public.is_admin(auth.uid()) THEN
        RETURN NEW;
    END IF;
    IF coalesce(NEW.is_banned, false) IS DISTINCT FROM coalesce(OLD.is_banned, false)
       OR (NEW.banned_until, NEW.banned_at, NEW.ban_reason)
          IS DISTINCT FROM (OLD.banned_until, OLD.banned_at, OLD.ban_reason) THEN
        RAISE EXCEPTION 'Insufficient privileges to modify ban fields' USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.log_user_activity(p_user_id uuid, p_action varchar,
    p_resource_type varchar DEFAULT NULL, p_resource_id text DEFAULT NULL,
    p_details jsonb DEFAULT '{}'::jsonb)
RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_id uuid;
BEGIN
    INSERT INTO public.user_activity_log (user_id, action, resource_type, resource_id, details)
    VALUES (p_user_id, p_action, p_resource_type, p_resource_id, p_details) RETURNING id INTO v_id;
    RETURN v_id;
END $$;

-- Creates the profile of a new auth user (logged), refreshes it on later auth updates (a repeated
-- sync within a minute is not logged again unless the email changed).
CREATE FUNCTION public.handle_user_profile_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_old_email varchar(255);
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
        SELECT 1 FROM public.user_activity_log WHERE user_id = NEW.id AND action = 'profile_synced'
          AND "timestamp" > now() - interval '1 minute') THEN
        PERFORM public.log_user_activity(NEW.id, 'profile_synced', 'profile', NEW.id::text,
            jsonb_build_object('email_updated', v_old_email IS DISTINCT FROM NEW.email,
                               'sync_source', 'google_oauth'));
    END IF;
    RETURN NEW;
END $$;

-- Sets any user's tier (admin tier lives in account_type) and logs it.
CREATE FUNCTION public.update_user_tier(user_uuid uuid, new_tier varchar) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_old varchar(20);
BEGIN
    IF new_tier NOT IN ('free', 'pro', 'enterprise') THEN
        RETURN jsonb_build_object('success', false, 'error', 'Invalid tier. Must be: free, pro, or enterprise');
    END IF;
    SELECT subscription_tier INTO v_old FROM public.profiles WHERE id = user_uuid;
    UPDATE public.profiles SET subscription_tier = new_tier, updated_at = now() WHERE id = user_uuid;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', false, 'error', 'User not found');
    END IF;
    PERFORM public.log_user_activity(user_uuid, 'tier_updated', 'profile', user_uuid::text,
        jsonb_build_object('old_tier', v_old, 'new_tier', new_tier));
    RETURN jsonb_build_object('success', true, 'old_tier', v_old, 'new_tier', new_tier, 'updated_at', now());
END $$;

CREATE FUNCTION public.write_admin_audit(p_actor_user_id uuid, p_action text, p_target text,
    p_payload jsonb DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO public.admin_audit_log (actor_user_id, action, target, payload)
    VALUES (p_actor_user_id, p_action, p_target, p_payload);
END $$;

CREATE TRIGGER update_profiles_updated_at BEFORE INSERT OR UPDATE ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
CREATE TRIGGER trg_protect_ban_columns BEFORE UPDATE ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION public.protect_ban_columns();
CREATE TRIGGER on_auth_user_profile_sync AFTER INSERT OR UPDATE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION public.handle_user_profile_sync();

-- ------------------------------------------------------------------ chat
CREATE TABLE public.chat_sessions (
    id text PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    title varchar(255) DEFAULT 'New Chat' NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    last_activity timestamptz DEFAULT now() NOT NULL,
    message_count integer DEFAULT 0 NOT NULL,
    total_tokens integer DEFAULT 0 NOT NULL,
    last_model varchar(100),
    last_message_preview text,
    last_message_timestamp timestamptz
);
CREATE INDEX idx_chat_sessions_user_id ON public.chat_sessions(user_id);
CREATE INDEX idx_chat_sessions_updated_at ON public.chat_sessions(updated_at DESC);
CREATE INDEX idx_chat_sessions_user_updated ON public.chat_sessions(user_id, updated_at DESC);

CREATE TABLE public.chat_messages (
    id text PRIMARY KEY,
    session_id text NOT NULL REFERENCES public.chat_sessions(id) ON DELETE CASCADE,
    role varchar(20) NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content text NOT NULL,
    model varchar(100),
    total_tokens integer DEFAULT 0,
    message_timestamp timestamptz DEFAULT now() NOT NULL,
    error_message text,
    is_streaming boolean DEFAULT false,
    metadata jsonb DEFAULT '{}'::jsonb,
    content_type varchar(20) DEFAULT 'text' CHECK (content_type IN ('text', 'markdown')),
    completion_id varchar(255),
    input_tokens integer DEFAULT 0,
    output_tokens integer DEFAULT 0,
    user_message_id text,
    elapsed_ms integer DEFAULT 0,
    has_attachments boolean DEFAULT false NOT NULL,
    attachment_count integer DEFAULT 0 NOT NULL
        CONSTRAINT chat_messages_attachment_count_max3 CHECK (attachment_count >= 0 AND attachment_count <= 3),
    has_websearch boolean DEFAULT false NOT NULL,
    websearch_result_count integer DEFAULT 0 NOT NULL
        CHECK (websearch_result_count >= 0 AND websearch_result_count <= 50),
    reasoning text,
    reasoning_details jsonb,
    output_image_tokens integer DEFAULT 0
);
COMMENT ON COLUMN public.chat_messages.elapsed_ms IS 'Per-message assistant generation latency in milliseconds.';
CREATE INDEX idx_chat_messages_session_id ON public.chat_messages(session_id);
CREATE INDEX idx_chat_messages_timestamp ON public.chat_messages(message_timestamp);
CREATE INDEX idx_chat_messages_session_timestamp ON public.chat_messages(session_id, message_timestamp);
CREATE INDEX idx_chat_messages_completion_id ON public.chat_messages(completion_id);
CREATE INDEX idx_chat_messages_user_message_id ON public.chat_messages(user_message_id)
    WHERE user_message_id IS NOT NULL;

CREATE TABLE public.chat_attachments (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    session_id text REFERENCES public.chat_sessions(id) ON DELETE CASCADE,
    message_id text REFERENCES public.chat_messages(id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind = 'image'),
    mime text NOT NULL CHECK (mime IN ('image/png', 'image/jpeg', 'image/webp')),
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    storage_bucket text DEFAULT 'attachments-images' NOT NULL,
    storage_path text NOT NULL,
    draft_id text,
    width integer,
    height integer,
    checksum text,
    status text DEFAULT 'ready' NOT NULL CHECK (status IN ('ready', 'deleted')),
    created_at timestamptz DEFAULT now() NOT NULL,
    deleted_at timestamptz,
    metadata jsonb DEFAULT '{}'::jsonb,
    CONSTRAINT uq_chat_attachments_bucket_path UNIQUE (storage_bucket, storage_path)
);
CREATE INDEX idx_chat_attachments_message_id ON public.chat_attachments(message_id);

CREATE TABLE public.chat_message_annotations (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    session_id text NOT NULL,
    message_id text NOT NULL,
    annotation_type text NOT NULL CHECK (annotation_type = 'url_citation'),
    url text NOT NULL,
    title text,
    content text,
    start_index integer,
    end_index integer,
    created_at timestamptz DEFAULT now() NOT NULL,
    CHECK ((start_index IS NULL AND end_index IS NULL) OR (start_index >= 0 AND end_index >= start_index))
);

-- ------------------------------------------------------------------ usage and pricing
CREATE TABLE public.user_usage_daily (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    usage_date date NOT NULL,
    messages_sent integer DEFAULT 0,
    messages_received integer DEFAULT 0,
    input_tokens integer DEFAULT 0,
    output_tokens integer DEFAULT 0,
    total_tokens integer DEFAULT 0,
    models_used jsonb DEFAULT '{}'::jsonb,
    sessions_created integer DEFAULT 0,
    estimated_cost numeric(12,6) DEFAULT 0.000000,
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    generation_ms bigint DEFAULT 0,
    UNIQUE (user_id, usage_date)
);
COMMENT ON COLUMN public.user_usage_daily.generation_ms IS 'Aggregated assistant generation time in milliseconds for the day.';
CREATE INDEX idx_usage_daily_user_date ON public.user_usage_daily(user_id, usage_date DESC);
CREATE INDEX idx_usage_daily_date ON public.user_usage_daily(usage_date DESC);

CREATE TABLE public.model_access (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    model_id varchar(100) NOT NULL UNIQUE,
    model_name varchar(255) NOT NULL,
    model_description text,
    context_length integer DEFAULT 8192,
    prompt_price varchar(32) DEFAULT '0',
    completion_price varchar(32) DEFAULT '0',
    request_price varchar(32) DEFAULT '0',
    image_price varchar(32) DEFAULT '0',
    web_search_price varchar(32) DEFAULT '0',
    output_image_price varchar(32) DEFAULT '0',
    status varchar(20) DEFAULT 'new' CHECK (status IN ('active', 'inactive', 'disabled', 'new')),
    is_free boolean DEFAULT false,
    is_pro boolean DEFAULT false,
    is_enterprise boolean DEFAULT false,
    daily_limit integer,
    monthly_limit integer,
    created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL
);
ALTER TABLE public.model_access FORCE ROW LEVEL SECURITY;

CREATE TABLE public.message_token_costs (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.profiles(id),
    session_id text NOT NULL,
    assistant_message_id text NOT NULL UNIQUE,
    user_message_id text,
    completion_id varchar(255),
    model_id varchar(100),
    message_timestamp timestamptz NOT NULL,
    prompt_tokens integer DEFAULT 0 NOT NULL,
    completion_tokens integer DEFAULT 0 NOT NULL,
    prompt_unit_price numeric(12,8),
    completion_unit_price numeric(12,8),
    image_units integer DEFAULT 0 NOT NULL,
    image_unit_price numeric(12,8),
    prompt_cost numeric(12,6),
    completion_cost numeric(12,6),
    image_cost numeric(12,6),
    total_cost numeric(12,6),
    pricing_source jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    elapsed_ms integer DEFAULT 0,
    websearch_cost numeric(12,6),
    output_image_cost numeric(12,6) DEFAULT 0,
    output_image_tokens integer DEFAULT 0,
    output_image_units_price numeric(12,8) DEFAULT 0,
    total_tokens integer GENERATED ALWAYS AS (prompt_tokens + completion_tokens + coalesce(output_image_tokens, 0)) STORED
);
CREATE INDEX idx_message_token_costs_user_time ON public.message_token_costs(user_id, message_timestamp DESC);

CREATE VIEW public.user_model_costs_daily WITH (security_invoker = true) AS
SELECT user_id, (message_timestamp AT TIME ZONE 'UTC')::date AS usage_date, model_id,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(total_tokens) AS total_tokens, round(sum(total_cost), 6) AS total_cost,
       count(*) AS assistant_messages
FROM public.message_token_costs
GROUP BY user_id, (message_timestamp AT TIME ZONE 'UTC')::date, model_id;

-- Adds to TODAY's counters (models_used read, then overwritten by the upsert) and to the profile
-- totals. No key: every call counts.
CREATE FUNCTION public.track_user_usage(p_user_id uuid, p_messages_sent integer DEFAULT 0,
    p_messages_received integer DEFAULT 0, p_input_tokens integer DEFAULT 0,
    p_output_tokens integer DEFAULT 0, p_model_used varchar DEFAULT NULL,
    p_session_created boolean DEFAULT false, p_generation_ms bigint DEFAULT 0)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_models jsonb;
BEGIN
    SELECT models_used INTO v_models FROM public.user_usage_daily
    WHERE user_id = p_user_id AND usage_date = CURRENT_DATE;
    IF p_model_used IS NOT NULL THEN
        v_models := coalesce(v_models, '{}'::jsonb)
            || jsonb_build_object(p_model_used, coalesce((v_models ->> p_model_used)::int, 0) + 1);
    END IF;
    INSERT INTO public.user_usage_daily AS u (user_id, usage_date, messages_sent, messages_received,
        input_tokens, output_tokens, total_tokens, models_used, sessions_created, generation_ms)
    VALUES (p_user_id, CURRENT_DATE, p_messages_sent, p_messages_received, p_input_tokens,
            p_output_tokens, p_input_tokens + p_output_tokens, coalesce(v_models, '{}'::jsonb),
            p_session_created::int, p_generation_ms)
    ON CONFLICT (user_id, usage_date) DO UPDATE SET
        messages_sent = u.messages_sent + EXCLUDED.messages_sent,
        messages_received = u.messages_received + EXCLUDED.messages_received,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        total_tokens = u.total_tokens + EXCLUDED.total_tokens,
        models_used = coalesce(EXCLUDED.models_used, u.models_used),
        sessions_created = u.sessions_created + EXCLUDED.sessions_created,
        generation_ms = u.generation_ms + EXCLUDED.generation_ms,
        updated_at = now();
    UPDATE public.profiles SET
        usage_stats = usage_stats || jsonb_build_object(
            'total_messages', coalesce((usage_stats ->> 'total_messages')::int, 0) + p_messages_sent + p_messages_received,
            'total_tokens', coalesce((usage_stats ->> 'total_tokens')::int, 0) + p_input_tokens + p_output_tokens,
            'sessions_created', coalesce((usage_stats ->> 'sessions_created')::int, 0) + p_session_created::int),
        last_active = now()
    WHERE id = p_user_id;
END $$;

-- Per row: recount the session from its successful messages; on INSERT only, count a successful
-- user/assistant message as usage of today (generation_ms from an assistant's elapsed_ms).
-- A conversation deleted and uploaded again is counted again.
CREATE FUNCTION public.update_session_stats() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    v_session text;
BEGIN
    IF TG_OP = 'DELETE' THEN v_session := OLD.session_id; ELSE v_session := NEW.session_id; END IF;
    UPDATE public.chat_sessions s SET
        message_count = x.n, total_tokens = x.tokens, last_message_timestamp = x.last_at,
        last_message_preview = left(x.preview, 200), last_model = x.model,
        last_activity = now(), updated_at = now()
    FROM (SELECT count(*) AS n, coalesce(sum(m.total_tokens), 0) AS tokens,
                 max(m.message_timestamp) AS last_at,
                 (array_agg(m.content ORDER BY m.message_timestamp DESC))[1] AS preview,
                 (array_agg(m.model ORDER BY m.message_timestamp DESC))[1] AS model
          FROM public.chat_messages m
          WHERE m.session_id = v_session AND coalesce(m.error_message, '') = '') x
    WHERE s.id = v_session;
    IF TG_OP = 'INSERT' AND NEW.role IN ('user', 'assistant') AND coalesce(NEW.error_message, '') = '' THEN
        PERFORM public.track_user_usage(
            (SELECT user_id FROM public.chat_sessions WHERE id = NEW.session_id),
            (NEW.role = 'user')::int, (NEW.role = 'assistant')::int,
            CASE WHEN NEW.role = 'user' THEN coalesce(NEW.input_tokens, 0) ELSE 0 END,
            CASE WHEN NEW.role = 'assistant' THEN coalesce(NEW.output_tokens, 0) ELSE 0 END,
            NEW.model, false,
            CASE WHEN NEW.role = 'assistant' THEN coalesce(NEW.elapsed_ms, 0) ELSE 0 END);
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.update_session_timestamp() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.updated_at := now();
    NEW.last_activity := now();
    RETURN NEW;
END $$;

-- A new session counts as sessions_created of today.
CREATE FUNCTION public.track_session_creation() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM public.track_user_usage(NEW.user_id, 0, 0, 0, 0, NULL, true, 0);
    RETURN NEW;
END $$;

-- Prices the (successful) assistant reply to a user message, or the assistant message named:
-- tokens x the model's prices, plus input images (ready attachments of the user message, at most
-- 3) and web search results (at most 50; 0.004 each when the model has no price). Upserts its
-- message_token_costs row and adds the change of its total to TODAY's estimated_cost. Writes no
-- other column of user_usage_daily (a new row gets only user_id, usage_date, estimated_cost).
CREATE FUNCTION public.recompute_image_cost_for_user_message(p_user_message_id text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    m record;
    p record;
    v_images integer := 0;
    v_prompt numeric(12,6);
    v_completion numeric(12,6);
    v_image numeric(12,6);
    v_output_image numeric(12,6);
    v_web numeric(12,6) := 0;
    v_total numeric(12,6);
    v_before numeric(12,6);
    v_delta numeric(12,6);
BEGIN
    SELECT a.id, a.user_message_id, a.session_id, s.user_id, a.model, a.message_timestamp,
           coalesce(a.elapsed_ms, 0) AS elapsed_ms, coalesce(a.input_tokens, 0) AS prompt_tokens,
           coalesce(a.output_tokens, 0) AS completion_tokens, a.completion_id,
           coalesce(a.has_websearch, false) AS has_websearch,
           coalesce(a.websearch_result_count, 0) AS web_results,
           coalesce(a.output_image_tokens, 0) AS output_image_tokens
    INTO m
    FROM public.chat_messages a JOIN public.chat_sessions s ON s.id = a.session_id
    WHERE (a.user_message_id = p_user_message_id OR a.id = p_user_message_id)
      AND a.role = 'assistant' AND coalesce(a.error_message, '') = ''
    ORDER BY a.message_timestamp DESC LIMIT 1;
    IF m.id IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(prompt_price, '0')::numeric AS prompt, coalesce(completion_price, '0')::numeric AS completion,
           coalesce(image_price, '0')::numeric AS image, coalesce(output_image_price, '0')::numeric AS output_image,
           coalesce(nullif(web_search_price, '0'), '0.004')::numeric AS web
    INTO p FROM public.model_access WHERE model_id = m.model;
    IF m.user_message_id IS NOT NULL THEN
        SELECT least(count(*), 3) INTO v_images FROM public.chat_attachments
        WHERE message_id = m.user_message_id AND status = 'ready';
    END IF;
    v_prompt := round(m.prompt_tokens * coalesce(p.prompt, 0), 6);
    v_completion := round(m.completion_tokens * coalesce(p.completion, 0), 6);
    v_image := round(v_images * coalesce(p.image, 0), 6);
    v_output_image := round(m.output_image_tokens * coalesce(p.output_image, 0), 6);
    IF m.has_websearch THEN
        v_web := round(least(m.web_results, 50) * coalesce(p.web, 0.004), 6);
    END IF;
    v_total := v_prompt + v_completion + v_image + v_output_image + v_web;
    SELECT total_cost INTO v_before FROM public.message_token_costs WHERE assistant_message_id = m.id;
    INSERT INTO public.message_token_costs AS c (user_id, session_id, assistant_message_id,
        user_message_id, completion_id, model_id, message_timestamp, prompt_tokens,
        completion_tokens, elapsed_ms, prompt_unit_price, completion_unit_price, image_units,
        image_unit_price, prompt_cost, completion_cost, image_cost, websearch_cost,
        output_image_tokens, output_image_units_price, output_image_cost, total_cost, pricing_source)
    VALUES (m.user_id, m.session_id, m.id, m.user_message_id, m.completion_id, m.model,
        m.message_timestamp, m.prompt_tokens, m.completion_tokens, m.elapsed_ms, p.prompt,
        p.completion, v_images, p.image, v_prompt, v_completion, v_image, v_web,
        m.output_image_tokens, p.output_image, v_output_image, v_total,
        jsonb_build_object('model_id', m.model, 'image_units', v_images,
                           'websearch_results', m.web_results))
    ON CONFLICT (assistant_message_id) DO UPDATE SET
        prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
        prompt_unit_price = EXCLUDED.prompt_unit_price,
        completion_unit_price = EXCLUDED.completion_unit_price,
        image_units = EXCLUDED.image_units, image_unit_price = EXCLUDED.image_unit_price,
        prompt_cost = EXCLUDED.prompt_cost, completion_cost = EXCLUDED.completion_cost,
        image_cost = EXCLUDED.image_cost, websearch_cost = EXCLUDED.websearch_cost,
        output_image_tokens = EXCLUDED.output_image_tokens,
        output_image_units_price = EXCLUDED.output_image_units_price,
        output_image_cost = EXCLUDED.output_image_cost, total_cost = EXCLUDED.total_cost,
        pricing_source = EXCLUDED.pricing_source;
    v_delta := v_total - coalesce(v_before, 0);
    IF v_delta <> 0 THEN
        INSERT INTO public.user_usage_daily AS u (user_id, usage_date, estimated_cost)
        VALUES (m.user_id, CURRENT_DATE, v_delta)
        ON CONFLICT (user_id, usage_date) DO UPDATE SET
            estimated_cost = coalesce(u.estimated_cost, 0) + EXCLUDED.estimated_cost, updated_at = now();
    END IF;
END $$;

-- after_assistant_message_cost: price a successful assistant message when it is inserted.
CREATE FUNCTION public.calculate_and_record_message_cost() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.role = 'assistant' AND coalesce(NEW.error_message, '') = '' THEN
        PERFORM public.recompute_image_cost_for_user_message(NEW.user_message_id);
    END IF;
    RETURN NEW;
END $$;

-- after_attachment_link_recompute_cost: a ready attachment newly linked to a USER message
-- re-prices that message's reply.
CREATE FUNCTION public.on_chat_attachment_link_recompute() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.message_id IS NOT NULL AND NEW.message_id IS DISTINCT FROM OLD.message_id
       AND NEW.status = 'ready'
       AND EXISTS (SELECT 1 FROM public.chat_messages WHERE id = NEW.message_id AND role = 'user') THEN
        PERFORM public.recompute_image_cost_for_user_message(NEW.message_id);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER on_message_change AFTER INSERT OR DELETE OR UPDATE ON public.chat_messages
    FOR EACH ROW EXECUTE FUNCTION public.update_session_stats();
CREATE TRIGGER after_assistant_message_cost AFTER INSERT ON public.chat_messages
    FOR EACH ROW EXECUTE FUNCTION public.calculate_and_record_message_cost();
CREATE TRIGGER on_session_created AFTER INSERT ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION public.track_session_creation();
CREATE TRIGGER on_session_updated BEFORE UPDATE ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION public.update_session_timestamp();
CREATE TRIGGER after_attachment_link_recompute_cost AFTER UPDATE OF message_id ON public.chat_attachments
    FOR EACH ROW EXECUTE FUNCTION public.on_chat_attachment_link_recompute();

-- ------------------------------------------------------------------ Stripe (07-stripe-payments.sql)
CREATE TABLE public.subscriptions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    stripe_customer_id text,
    stripe_subscription_id text UNIQUE,
    stripe_price_id text,
    status text CHECK (status IN ('active', 'canceled', 'past_due', 'unpaid', 'trialing')),
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean DEFAULT false,
    canceled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.payment_history (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES public.profiles(id) ON DELETE CASCADE,
    stripe_payment_intent_id text UNIQUE,
    stripe_invoice_id text,
    amount numeric(10,2),
    currency text DEFAULT 'usd',
    status text,
    description text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.stripe_events (
    id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION public.set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER trg_subscriptions_updated_at BEFORE UPDATE ON public.subscriptions
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- ------------------------------------------------------------------ row level security
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_activity_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.admin_audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.admin_audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE public.chat_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_attachments ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_message_annotations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.model_access ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.message_token_costs ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.payment_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.stripe_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY "View profiles" ON public.profiles FOR SELECT
    USING (public.is_admin((select auth.uid())) OR (select auth.uid()) = id);
CREATE POLICY "Update profiles" ON public.profiles FOR UPDATE
    USING (public.is_admin((select auth.uid())) OR (select auth.uid()) = id)
    WITH CHECK (public.is_admin((select auth.uid())) OR (select auth.uid()) = id);
CREATE POLICY "Users can insert their own profile" ON public.profiles FOR INSERT
    WITH CHECK ((select auth.uid()) = id);
CREATE POLICY "Users can view their own activity" ON public.user_activity_log FOR SELECT
    USING ((select auth.uid()) = user_id);
CREATE POLICY "Only admins can read audit logs" ON public.admin_audit_log FOR SELECT
    USING (public.is_admin((select auth.uid())));
CREATE POLICY "Insert via definer only" ON public.admin_audit_log FOR INSERT WITH CHECK (false);

CREATE POLICY "Users can view their own chat sessions" ON public.chat_sessions FOR SELECT
    USING (user_id = (select auth.uid()));
CREATE POLICY "Users can create their own chat sessions" ON public.chat_sessions FOR INSERT
    WITH CHECK (user_id = (select auth.uid()));
CREATE POLICY "Users can update their own chat sessions" ON public.chat_sessions FOR UPDATE
    USING (user_id = (select auth.uid()));
CREATE POLICY "Users can delete their own chat sessions" ON public.chat_sessions FOR DELETE
    USING (user_id = (select auth.uid()));
CREATE POLICY "Users can view messages from their sessions" ON public.chat_messages FOR SELECT
    USING (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = (select auth.uid())));
CREATE POLICY "Users can create messages in their sessions" ON public.chat_messages FOR INSERT
    WITH CHECK (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = (select auth.uid())));
CREATE POLICY "Users can update messages in their sessions" ON public.chat_messages FOR UPDATE
    USING (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = (select auth.uid())));
CREATE POLICY "Users can delete messages in their sessions" ON public.chat_messages FOR DELETE
    USING (session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = (select auth.uid())));
CREATE POLICY "Users can view their own attachments" ON public.chat_attachments FOR SELECT
    USING (user_id = (select auth.uid()));
CREATE POLICY "Users can insert their own attachments" ON public.chat_attachments FOR INSERT
    WITH CHECK (user_id = (select auth.uid()));
CREATE POLICY "Users can update their own attachments" ON public.chat_attachments FOR UPDATE
    USING (user_id = (select auth.uid()))
    WITH CHECK (user_id = (select auth.uid())
        AND (session_id IS NULL OR session_id IN (SELECT id FROM public.chat_sessions WHERE user_id = (select auth.uid())))
        AND (message_id IS NULL OR EXISTS (
            SELECT 1 FROM public.chat_messages m JOIN public.chat_sessions s ON s.id = m.session_id
            WHERE m.id = chat_attachments.message_id AND s.user_id = (select auth.uid()))));
CREATE POLICY "Users can delete their own attachments" ON public.chat_attachments FOR DELETE
    USING (user_id = (select auth.uid()));
CREATE POLICY "Users can view their own message annotations" ON public.chat_message_annotations
    FOR SELECT USING ((select auth.uid()) = user_id);
CREATE POLICY "Users can insert their own message annotations" ON public.chat_message_annotations
    FOR INSERT WITH CHECK ((select auth.uid()) = user_id);
CREATE POLICY "Users can delete their own message annotations" ON public.chat_message_annotations
    FOR DELETE USING ((select auth.uid()) = user_id);

CREATE POLICY "Users can view their own usage" ON public.user_usage_daily FOR SELECT
    USING ((select auth.uid()) = user_id);
CREATE POLICY "Users can insert their own usage" ON public.user_usage_daily FOR INSERT
    WITH CHECK ((select auth.uid()) = user_id);
CREATE POLICY "Users can update their own usage" ON public.user_usage_daily FOR UPDATE
    USING ((select auth.uid()) = user_id);
CREATE POLICY "All users can view model access" ON public.model_access FOR SELECT USING (true);
CREATE POLICY "View message costs" ON public.message_token_costs FOR SELECT
    USING (public.is_admin((select auth.uid())) OR (select auth.uid()) = user_id);
CREATE POLICY "Insert message costs" ON public.message_token_costs FOR INSERT
    WITH CHECK (public.is_admin((select auth.uid())) OR (select auth.uid()) = user_id);

CREATE POLICY "Users select own subscriptions" ON public.subscriptions FOR SELECT
    USING ((select auth.uid()) = user_id);
CREATE POLICY "Users select own payments" ON public.payment_history FOR SELECT
    USING ((select auth.uid()) = user_id);

-- ------------------------------------------------------------------ grants (Supabase's defaults, as dumped)
GRANT ALL ON TABLE public.profiles, public.user_activity_log, public.admin_audit_log,
    public.chat_sessions, public.chat_messages, public.chat_attachments,
    public.chat_message_annotations, public.user_usage_daily, public.model_access,
    public.message_token_costs, public.user_model_costs_daily, public.subscriptions,
    public.payment_history, public.stripe_events
    TO anon, authenticated, service_role;
GRANT ALL ON FUNCTION public.is_admin(uuid), public.update_updated_at_column(),
    public.protect_ban_columns(), public.log_user_activity(uuid, varchar, varchar, text, jsonb),
    public.handle_user_profile_sync(), public.update_user_tier(uuid, varchar),
    public.write_admin_audit(uuid, text, text, jsonb),
    public.track_user_usage(uuid, integer, integer, integer, integer, varchar, boolean, bigint),
    public.update_session_stats(), public.update_session_timestamp(),
    public.track_session_creation(), public.recompute_image_cost_for_user_message(text),
    public.calculate_and_record_message_cost(), public.on_chat_attachment_link_recompute(),
    public.set_updated_at()
    TO anon, authenticated, service_role;
