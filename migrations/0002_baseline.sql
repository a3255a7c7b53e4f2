-- Baseline: adopt the app's chat tables as they are, or create them on an empty database.
--
-- pgchat owns columns, not tables: the counters it maintains (in user_usage_daily and
-- profiles.usage_stats), the statistics columns of chat_sessions, the row level security
-- policies of chat_sessions, chat_messages and user_usage_daily, and its own schemas.
-- Everything else the database holds (other columns, tables, views, functions, triggers,
-- grants, and whatever the app's later releases add) is the app's and is left as it is. Here
-- that means: the policies of the three tables are replaced (each saved for the rollback); the
-- app's grants are kept, except TRUNCATE, TRIGGER and REFERENCES for the API roles on the three
-- tables (TRUNCATE ignores row level security; none is a write the app makes), each saved; the
-- view api_user_summary runs with its caller's rights (its old options saved).
--
-- Required: only what pgchat cannot count without (the list below). The optional counters
-- (user_usage_daily.models_used, sessions_created, active_minutes, generation_ms, updated_at)
-- and the message's duration (chat_messages.elapsed_time in seconds or elapsed_ms) are
-- maintained where the table has them and left alone where it does not. Anything missing, or
-- an owned object the migrating role may not change, is refused before anything changes, each
-- named with what to do.
--
-- On an empty database it creates the app tables (and profiles' sign-up trigger on auth.users),
-- each marked with a comment 'pgchat: created by 0002_baseline' so that the rollback removes
-- what pgchat created and nothing else. A table that exists is never re-created or altered.
-- depends: 0001_supabase_standin

-- 1. Refuse, before changing anything, what cannot be adopted.
DO $check$
DECLARE
    v_problems text[] := '{}';
    v_list text;
BEGIN
    SELECT string_agg(format('public.%s.%s', r.tbl, r.col), ', ' ORDER BY r.tbl, r.col) INTO v_list
    -- Why these: the keys and the owner (profiles.id, chat_sessions.user_id); what a message
    -- counts (role, success, tokens, date, model); what the statistics show; what the sync and
    -- the exchange write. Nothing else of the app is read or written by name.
    FROM (VALUES
        ('profiles', 'id'), ('profiles', 'usage_stats'), ('profiles', 'last_active'),
        ('chat_sessions', 'id'), ('chat_sessions', 'user_id'), ('chat_sessions', 'title'),
        ('chat_sessions', 'created_at'), ('chat_sessions', 'updated_at'),
        ('chat_sessions', 'last_activity'), ('chat_sessions', 'message_count'),
        ('chat_sessions', 'total_tokens'), ('chat_sessions', 'last_model'),
        ('chat_sessions', 'last_message_preview'), ('chat_sessions', 'last_message_timestamp'),
        ('chat_messages', 'id'), ('chat_messages', 'session_id'), ('chat_messages', 'role'),
        ('chat_messages', 'content'), ('chat_messages', 'model'), ('chat_messages', 'total_tokens'),
        ('chat_messages', 'input_tokens'), ('chat_messages', 'output_tokens'),
        ('chat_messages', 'user_message_id'), ('chat_messages', 'content_type'),
        ('chat_messages', 'completion_id'), ('chat_messages', 'message_timestamp'),
        ('chat_messages', 'error_message'),
        ('user_usage_daily', 'user_id'), ('user_usage_daily', 'usage_date'),
        ('user_usage_daily', 'messages_sent'), ('user_usage_daily', 'messages_received'),
        ('user_usage_daily', 'input_tokens'), ('user_usage_daily', 'output_tokens'),
        ('user_usage_daily', 'total_tokens')
    ) AS r(tbl, col)
    WHERE pg_catalog.to_regclass('public.' || r.tbl) IS NOT NULL  -- absent tables are created
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = pg_catalog.to_regclass('public.' || r.tbl)
                        AND a.attname = r.col AND a.attnum > 0 AND NOT a.attisdropped);
    IF v_list IS NOT NULL THEN
        v_problems := v_problems || format('missing columns %s (add them with ALTER TABLE ... ADD COLUMN;'
                                           ' types as in docs/adoption.md)', v_list);
    END IF;

    -- pgchat upserts on these keys (ON CONFLICT): a plain unique index or constraint on exactly them.
    SELECT string_agg(format('public.%s (%s)', k.tbl, array_to_string(k.cols, ', ')), ', ') INTO v_list
    FROM (VALUES ('profiles', ARRAY['id']), ('chat_sessions', ARRAY['id']),
                 ('chat_messages', ARRAY['id']), ('user_usage_daily', ARRAY['usage_date', 'user_id'])
    ) AS k(tbl, cols)
    WHERE pg_catalog.to_regclass('public.' || k.tbl) IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_index i
          WHERE i.indrelid = pg_catalog.to_regclass('public.' || k.tbl) AND i.indisunique
            AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = cardinality(k.cols)
            AND ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                      ORDER BY a.attname) = k.cols);
    IF v_list IS NOT NULL THEN
        v_problems := v_problems || format('no unique key on %s (create a unique index on those'
                                           ' columns)', v_list);
    END IF;

    -- What 0002 changes must belong to the migrating role (policies, grants, view options).
    SELECT string_agg(format('%s (owned by %s)', c.oid::regclass, c.relowner::regrole), ', ') INTO v_list
    FROM pg_catalog.pg_class c
    WHERE c.oid IN (pg_catalog.to_regclass('public.profiles'), pg_catalog.to_regclass('public.chat_sessions'),
                    pg_catalog.to_regclass('public.chat_messages'), pg_catalog.to_regclass('public.user_usage_daily'),
                    pg_catalog.to_regclass('public.api_user_summary'))
      AND NOT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE');
    IF v_list IS NOT NULL THEN
        v_problems := v_problems || format('not owned by %s: %s (run pgchat migrate as their owner)',
                                           current_user, v_list);
    END IF;

    SELECT string_agg(format('public.%s is a %s, not a %s', e.name,
                             CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                                            WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' ELSE 'relation' END,
                             e.want), ', ') INTO v_list
    FROM (VALUES ('profiles', 'table', '{r,p}'::"char"[]), ('chat_sessions', 'table', '{r,p}'),
                 ('chat_messages', 'table', '{r,p}'), ('user_usage_daily', 'table', '{r,p}'),
                 ('api_user_summary', 'view', '{v}')) AS e(name, want, kinds)
    JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass('public.' || e.name)
    WHERE c.relkind <> ALL (e.kinds);
    IF v_list IS NOT NULL THEN
        v_problems := v_problems || format('%s (rename it, or make it one)', v_list);
    END IF;

    IF cardinality(v_problems) > 0 THEN
        RAISE EXCEPTION 'cannot adopt this database: %', array_to_string(v_problems, '; ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'nothing was changed; fix the above and run pgchat migrate again';
    END IF;
END
$check$;

-- What pgchat replaced, to be restored by the rollbacks (policies here; triggers and functions
-- in 0003). It lives with pgchat's migration bookkeeping, which the API never exposes.
-- (The runner creates the schema and revokes PUBLIC's access; this is for scripts run by hand.)
CREATE SCHEMA IF NOT EXISTS pgchat_migrations;
CREATE TABLE IF NOT EXISTS pgchat_migrations.replaced_objects (
    position integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    definition text NOT NULL
);
COMMENT ON TABLE pgchat_migrations.replaced_objects IS
    'Definitions pgchat migrations dropped or replaced; their rollbacks re-create them';

-- What the app's tables have of pgchat's optional columns, and the templates that adapt to it.
-- The migrations that write those columns (0003, 0004, 0005) create their functions through
-- render(): a line of a template that ends in `--@feature` is kept only where the database has
-- that feature, one ending in `--@!feature` only where it has not. Features:
--   models_used, sessions_created, active_minutes, generation_ms, daily_updated_at: the
--     optional counters of user_usage_daily (active_minutes brings active_seconds, 0002b);
--   elapsed_ms, elapsed_time: the message's duration column (elapsed_ms in milliseconds, the
--     app's later name, wins where both exist; elapsed_time in seconds), no_elapsed: neither;
--     /*elapsed_ms:ALIAS*/ in a template becomes the duration in milliseconds of row ALIAS.
-- They run when a migration runs: a column the app adds later is maintained after the next
-- `pgchat migrate` that re-renders (docs/adoption.md).
CREATE OR REPLACE FUNCTION pgchat_migrations.has_column(p_table text, p_column text)
RETURNS boolean LANGUAGE sql STABLE SET search_path = '' AS $fn$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = pg_catalog.to_regclass('public.' || p_table)
                     AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped)
$fn$;

CREATE OR REPLACE FUNCTION pgchat_migrations.feature(p_name text)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = '' AS $fn$
BEGIN
    RETURN CASE p_name
        WHEN 'models_used' THEN pgchat_migrations.has_column('user_usage_daily', 'models_used')
        WHEN 'sessions_created' THEN pgchat_migrations.has_column('user_usage_daily', 'sessions_created')
        WHEN 'active_minutes' THEN pgchat_migrations.has_column('user_usage_daily', 'active_minutes')
        WHEN 'generation_ms' THEN pgchat_migrations.has_column('user_usage_daily', 'generation_ms')
        WHEN 'daily_updated_at' THEN pgchat_migrations.has_column('user_usage_daily', 'updated_at')
        WHEN 'elapsed_ms' THEN pgchat_migrations.has_column('chat_messages', 'elapsed_ms')
        WHEN 'elapsed_time' THEN pgchat_migrations.has_column('chat_messages', 'elapsed_time')
                                 AND NOT pgchat_migrations.has_column('chat_messages', 'elapsed_ms')
        WHEN 'no_elapsed' THEN NOT (pgchat_migrations.has_column('chat_messages', 'elapsed_ms')
                                    OR pgchat_migrations.has_column('chat_messages', 'elapsed_time'))
    END;
END
$fn$;

CREATE OR REPLACE FUNCTION pgchat_migrations.render(p_template text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = '' AS $fn$
DECLARE
    v_out text[] := '{}';
    v_line text;
    v_tag text[];
    v_has boolean;
BEGIN
    FOREACH v_line IN ARRAY pg_catalog.string_to_array(p_template, E'\n') LOOP
        v_tag := pg_catalog.regexp_match(v_line, '--@(!?)([a-z_]+)\s*$');
        IF v_tag IS NULL THEN
            v_out := v_out || v_line;
            CONTINUE;
        END IF;
        v_has := pgchat_migrations.feature(v_tag[2]);
        IF v_has IS NULL THEN
            RAISE EXCEPTION 'pgchat: unknown template feature %', v_tag[2];
        END IF;
        IF v_has = (v_tag[1] = '') THEN
            v_out := v_out || pg_catalog.regexp_replace(v_line, '\s*--@!?[a-z_]+\s*$', '');
        END IF;
    END LOOP;
    -- /*elapsed_ms:ALIAS*/ stands for the duration in milliseconds of the message row ALIAS.
    RETURN pg_catalog.regexp_replace(pg_catalog.array_to_string(v_out, E'\n'), '/\*elapsed_ms:(\w+)\*/',
        CASE WHEN pgchat_migrations.feature('elapsed_ms') THEN 'greatest(coalesce(\1.elapsed_ms, 0), 0)::bigint'
             WHEN pgchat_migrations.feature('elapsed_time') THEN '(greatest(coalesce(\1.elapsed_time, 0), 0)::bigint * 1000)'
             ELSE '0::bigint' END, 'g');
END
$fn$;

-- 2. On an empty database: the app tables (only those that are absent).
DO $tables$
BEGIN
    IF pg_catalog.to_regclass('public.profiles') IS NULL THEN
        CREATE TABLE public.profiles (
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
        CREATE INDEX idx_profiles_email ON public.profiles(email);
        CREATE INDEX idx_profiles_last_active ON public.profiles(last_active);
        CREATE INDEX idx_profiles_subscription_tier ON public.profiles(subscription_tier);
        COMMENT ON TABLE public.profiles IS 'pgchat: created by 0002_baseline';
        RAISE NOTICE 'pgchat: created table public.profiles';
    END IF;

    IF pg_catalog.to_regclass('public.user_activity_log') IS NULL THEN
        CREATE TABLE public.user_activity_log (
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
        CREATE INDEX idx_activity_log_user_id ON public.user_activity_log(user_id);
        CREATE INDEX idx_activity_log_timestamp ON public.user_activity_log(timestamp);
        CREATE INDEX idx_activity_log_action ON public.user_activity_log(action);
        COMMENT ON TABLE public.user_activity_log IS 'pgchat: created by 0002_baseline';
        RAISE NOTICE 'pgchat: created table public.user_activity_log';
    END IF;

    IF pg_catalog.to_regclass('public.chat_sessions') IS NULL THEN
        CREATE TABLE public.chat_sessions (
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
        CREATE INDEX idx_chat_sessions_user_id ON public.chat_sessions(user_id);
        CREATE INDEX idx_chat_sessions_updated_at ON public.chat_sessions(updated_at DESC);
        CREATE INDEX idx_chat_sessions_user_updated ON public.chat_sessions(user_id, updated_at DESC);
        COMMENT ON TABLE public.chat_sessions IS 'pgchat: created by 0002_baseline';
        RAISE NOTICE 'pgchat: created table public.chat_sessions';
    END IF;

    IF pg_catalog.to_regclass('public.chat_messages') IS NULL THEN
        CREATE TABLE public.chat_messages (
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
        CREATE INDEX idx_chat_messages_session_id ON public.chat_messages(session_id);
        CREATE INDEX idx_chat_messages_timestamp ON public.chat_messages(message_timestamp);
        CREATE INDEX idx_chat_messages_session_timestamp ON public.chat_messages(session_id, message_timestamp);
        CREATE INDEX idx_chat_messages_completion_id ON public.chat_messages(completion_id);
        CREATE INDEX idx_chat_messages_user_message_id ON public.chat_messages(user_message_id)
            WHERE user_message_id IS NOT NULL;
        CREATE INDEX idx_chat_messages_tokens_role ON public.chat_messages(role, input_tokens, output_tokens)
            WHERE input_tokens > 0 OR output_tokens > 0;
        COMMENT ON TABLE public.chat_messages IS 'pgchat: created by 0002_baseline';
        RAISE NOTICE 'pgchat: created table public.chat_messages';
    END IF;

    IF pg_catalog.to_regclass('public.user_usage_daily') IS NULL THEN
        CREATE TABLE public.user_usage_daily (
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
        CREATE INDEX idx_usage_daily_user_date ON public.user_usage_daily(user_id, usage_date DESC);
        CREATE INDEX idx_usage_daily_date ON public.user_usage_daily(usage_date DESC);
        COMMENT ON TABLE public.user_usage_daily IS 'pgchat: created by 0002_baseline';
        RAISE NOTICE 'pgchat: created table public.user_usage_daily';
    END IF;

    IF pg_catalog.to_regclass('public.model_access') IS NULL THEN
        CREATE TABLE public.model_access (
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
        CREATE INDEX idx_model_access_tier ON public.model_access(tier, is_active);
        CREATE INDEX idx_model_access_model_id ON public.model_access(model_id, is_active);
        COMMENT ON TABLE public.model_access IS 'pgchat: created by 0002_baseline';
        RAISE NOTICE 'pgchat: created table public.model_access';
    END IF;
END
$tables$;

-- The sign-up path of profiles, only where pgchat created profiles: an adopted database keeps
-- its own functions and triggers, whatever they are.
DO $signup$
BEGIN
    IF pg_catalog.obj_description(pg_catalog.to_regclass('public.profiles'), 'pg_class')
       IS DISTINCT FROM 'pgchat: created by 0002_baseline' THEN
        RETURN;
    END IF;

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

    -- Dropping this function (CASCADE) drops its trigger on auth.users: the rollback needs no
    -- ownership of auth.users, which on Supabase belongs to supabase_auth_admin.
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

    COMMENT ON FUNCTION public.update_updated_at_column() IS 'pgchat: created by 0002_baseline';
    COMMENT ON FUNCTION public.log_user_activity(uuid, varchar, varchar, text, jsonb) IS
        'pgchat: created by 0002_baseline';
    COMMENT ON FUNCTION public.handle_user_profile_sync() IS 'pgchat: created by 0002_baseline';

    CREATE TRIGGER update_profiles_updated_at
        BEFORE INSERT OR UPDATE ON public.profiles
        FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
    CREATE TRIGGER on_auth_user_profile_sync
        AFTER INSERT OR UPDATE ON auth.users
        FOR EACH ROW EXECUTE FUNCTION public.handle_user_profile_sync();
END
$signup$;

-- Policies and grants of the tables pgchat created and does not otherwise own (an adopted
-- database keeps its own for profiles, user_activity_log and model_access).
DO $created$
DECLARE
    c_created CONSTANT text := 'pgchat: created by 0002_baseline';
BEGIN
    IF pg_catalog.obj_description(pg_catalog.to_regclass('public.profiles'), 'pg_class') = c_created THEN
        ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
        CREATE POLICY profiles_owner_select ON public.profiles FOR SELECT TO authenticated
            USING (id = (SELECT auth.uid()));
        CREATE POLICY profiles_owner_update ON public.profiles FOR UPDATE TO authenticated
            USING (id = (SELECT auth.uid())) WITH CHECK (id = (SELECT auth.uid()));
    END IF;
    IF pg_catalog.obj_description(pg_catalog.to_regclass('public.user_activity_log'), 'pg_class') = c_created THEN
        ALTER TABLE public.user_activity_log ENABLE ROW LEVEL SECURITY;
        CREATE POLICY activity_owner_select ON public.user_activity_log FOR SELECT TO authenticated
            USING (user_id = (SELECT auth.uid()));
        REVOKE ALL ON public.user_activity_log FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT ON public.user_activity_log TO authenticated;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.user_activity_log TO service_role;
    END IF;
    IF pg_catalog.obj_description(pg_catalog.to_regclass('public.model_access'), 'pg_class') = c_created THEN
        ALTER TABLE public.model_access ENABLE ROW LEVEL SECURITY;
        CREATE POLICY model_access_read ON public.model_access FOR SELECT TO anon, authenticated
            USING (true);
        REVOKE ALL ON public.model_access FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT ON public.model_access TO anon, authenticated;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.model_access TO service_role;
    END IF;
END
$created$;

-- 3. The owned tables' policies, replaced whatever their names (each saved, then dropped).
-- Owners only; auth.uid() in a sub-select is evaluated once per statement, not per row
-- (Supabase advisor: auth_rls_initplan). A user may insert and update its own user_usage_daily
-- rows (the app's later releases do, for columns of their own such as estimated_cost): what
-- such a write puts into pgchat's counters is neutralised by the guard (0005), never refused.
-- No one deletes a counter row through the API.
DO $policies$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT pol.schemaname, pol.tablename, pol.policyname,
               format('CREATE POLICY %I ON %I.%I AS %s FOR %s TO %s%s%s', pol.policyname,
                      pol.schemaname, pol.tablename, pol.permissive, pol.cmd,
                      (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                       FROM unnest(pol.roles) AS r),
                      ' USING (' || pol.qual || ')', ' WITH CHECK (' || pol.with_check || ')') AS definition
        FROM pg_catalog.pg_policies pol
        WHERE pol.schemaname = 'public'
          AND pol.tablename IN ('chat_sessions', 'chat_messages', 'user_usage_daily')
        ORDER BY pol.tablename, pol.policyname
    LOOP
        INSERT INTO pgchat_migrations.replaced_objects (migration_id, kind, name, definition)
        VALUES ('0002_baseline', 'policy', format('%I ON %I.%I', p.policyname, p.schemaname, p.tablename),
                p.definition);
        EXECUTE format('DROP POLICY %I ON %I.%I', p.policyname, p.schemaname, p.tablename);
        RAISE NOTICE 'pgchat: dropped policy "%" on %.% (saved; pgchat replaces every policy of this table)',
            p.policyname, p.schemaname, p.tablename;
    END LOOP;
END
$policies$;

ALTER TABLE public.chat_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_usage_daily ENABLE ROW LEVEL SECURITY;

CREATE POLICY sessions_owner_all ON public.chat_sessions FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY messages_owner_all ON public.chat_messages FOR ALL TO authenticated
    USING (EXISTS (SELECT 1 FROM public.chat_sessions s
                   WHERE s.id = chat_messages.session_id AND s.user_id = (SELECT auth.uid())))
    WITH CHECK (EXISTS (SELECT 1 FROM public.chat_sessions s
                        WHERE s.id = chat_messages.session_id AND s.user_id = (SELECT auth.uid())));
CREATE POLICY usage_owner_select ON public.user_usage_daily FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
CREATE POLICY usage_owner_insert ON public.user_usage_daily FOR INSERT TO authenticated
    WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY usage_owner_update ON public.user_usage_daily FOR UPDATE TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));

-- 4. The view: made security-invoker where it exists (its columns are the app's business, so
-- it is never replaced); created only where it is absent.
DO $view$
BEGIN
    IF pg_catalog.to_regclass('public.api_user_summary') IS NOT NULL THEN
        INSERT INTO pgchat_migrations.replaced_objects (migration_id, kind, name, definition)
        SELECT '0002_baseline', 'view option', 'security_invoker ON public.api_user_summary',
               CASE WHEN o.opt IS NULL THEN 'ALTER VIEW public.api_user_summary RESET (security_invoker)'
                    ELSE format('ALTER VIEW public.api_user_summary SET (%s)', o.opt) END
        FROM (SELECT (SELECT x FROM unnest(c.reloptions) AS x WHERE x LIKE 'security\_invoker=%') AS opt
              FROM pg_catalog.pg_class c WHERE c.oid = 'public.api_user_summary'::regclass) o;
        ALTER VIEW public.api_user_summary SET (security_invoker = on);
        RAISE NOTICE 'pgchat: view public.api_user_summary now runs with the caller''s rights (security_invoker)';
        RETURN;
    END IF;
    CREATE VIEW public.api_user_summary WITH (security_invoker = true) AS
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
    COMMENT ON VIEW public.api_user_summary IS 'pgchat: created by 0002_baseline';
    REVOKE ALL ON public.api_user_summary FROM PUBLIC, anon, authenticated, service_role;
    GRANT SELECT ON public.api_user_summary TO authenticated, service_role;
END
$view$;

-- 5. Grants. On the tables pgchat created, set exactly, whatever the defaults granted
-- (Supabase's default privileges give the API roles ALL on new tables, TRUNCATE included): the
-- API roles reach rows only through RLS; anon sees no user data; a user may edit its own
-- profile's settings, never its tier, credits or usage. On the tables the app created, the
-- app's grants stay as they are (every write the app makes keeps working); pgchat only takes
-- TRUNCATE (it ignores row level security and would wipe every user's counted history),
-- TRIGGER and REFERENCES from PUBLIC and the API roles on the three tables whose policies it
-- owns, each grant saved for the rollback.
DO $grants$
DECLARE
    c_created CONSTANT text := 'pgchat: created by 0002_baseline';
    r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass::text AS tbl, a.privilege_type AS privilege,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(g.rolname) END AS grantee,
               a.is_grantable
        FROM pg_catalog.pg_class c
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
        LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
        WHERE c.oid IN ('public.chat_sessions'::regclass, 'public.chat_messages'::regclass,
                        'public.user_usage_daily'::regclass)
          AND pg_catalog.obj_description(c.oid, 'pg_class') IS DISTINCT FROM c_created
          AND a.privilege_type IN ('TRUNCATE', 'TRIGGER', 'REFERENCES')
          AND (a.grantee = 0 OR g.rolname IN ('anon', 'authenticated', 'service_role'))
        ORDER BY 1, 3, 2
    LOOP
        INSERT INTO pgchat_migrations.replaced_objects (migration_id, kind, name, definition)
        VALUES ('0002_baseline', 'grant', format('%s ON %s TO %s', r.privilege, r.tbl, r.grantee),
                format('GRANT %s ON %s TO %s%s', r.privilege, r.tbl, r.grantee,
                       CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END));
        EXECUTE format('REVOKE %s ON %s FROM %s', r.privilege, r.tbl, r.grantee);
        RAISE NOTICE 'pgchat: revoked % on % from % (saved)', r.privilege, r.tbl, r.grantee;
    END LOOP;

    IF pg_catalog.obj_description('public.chat_sessions'::regclass, 'pg_class') = c_created THEN
        REVOKE ALL ON public.chat_sessions FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_sessions TO authenticated, service_role;
    END IF;
    IF pg_catalog.obj_description('public.chat_messages'::regclass, 'pg_class') = c_created THEN
        REVOKE ALL ON public.chat_messages FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_messages TO authenticated, service_role;
    END IF;
    IF pg_catalog.obj_description('public.user_usage_daily'::regclass, 'pg_class') = c_created THEN
        REVOKE ALL ON public.user_usage_daily FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT ON public.user_usage_daily TO authenticated;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.user_usage_daily TO service_role;
    END IF;
    IF pg_catalog.obj_description('public.profiles'::regclass, 'pg_class') = c_created THEN
        REVOKE ALL ON public.profiles FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT ON public.profiles TO authenticated;
        GRANT UPDATE (full_name, avatar_url, default_model, temperature, system_prompt,
                      ui_preferences, session_preferences) ON public.profiles TO authenticated;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.profiles TO service_role;
    END IF;
END
$grants$;
