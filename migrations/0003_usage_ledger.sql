-- Exactly-once analytics.
--
-- A counted event is a successful user or assistant message (role user/assistant, an empty
-- error_message) or a created session, counted once under its owner: the session's user_id.
-- The daily counters (user_usage_daily) and the profile totals (profiles.usage_stats) move
-- only when an event is counted for the first time, in the statement that writes it, so
-- re-writing a row any number of times adds nothing.
--
-- The record of what was counted costs nothing while the rows exist: a stored message row is
-- its own record (its primary key is the idempotency key, its successful state says it was
-- counted, its columns are the values counted). Only the exceptions are stored, in
-- pgchat.usage_ledger, keyed by (user_id, kind, event_key):
--   * a counted message or session whose row is deleted ('deleted'): usage is consumption, not
--     content, and re-uploading the same id later counts nothing;
--   * a counted message whose counted values change (its role, success, date, tokens, model
--     or duration; 'changed'): the values counted first stay the counted ones;
--   * a counted message or session that moves to another id or another owner: the old
--     identity is kept as counted and the new one is marked counted with nothing to add
--     ('moved'), so that renaming a reply three times counts it once;
--   * events reported by the backend through track_user_usage ('track_user_usage').
-- A row is "covered" when the ledger holds its (owner, kind, id): it is not counted again,
-- whatever it becomes. So what was counted is always: every ledger row, plus every stored
-- event that is not covered (pgchat.counted_events), and `pgchat usage verify` / `usage
-- rebuild` recount the counters from exactly that. On the live path nothing is written to the
-- ledger: one exchange writes its 2 messages, its session, 1 daily row and 1 profile.
--
-- What is counted, and when:
--   * a message counts the first time a version of it is stored successful, with that
--     version's values; user rows add messages_sent and input_tokens; assistant rows add
--     messages_received, output_tokens, one use of their model, and their duration as active
--     time (whole seconds) and generation_ms;
--   * on the UTC date of message_timestamp (sessions: of created_at), not the day of the write.
--
-- Session statistics are maintained by statement-level triggers with transition tables: counts
-- move by deltas and the latest message is found through an index, so a write costs the same
-- whatever the size of the session, and a bulk insert costs one trigger call, not one per row.
-- No-op updates are suppressed before they write anything.
--
-- Adoption online, in steps (README, "Adopting a live database"): 0002a builds the index of
-- session_latest CONCURRENTLY, 0002b adds user_usage_daily.active_seconds, this migration is
-- the switch, and 0003a recomputes session statistics, in batches, after it. What is stored
-- when pgchat arrives was counted by the legacy code, and the rows say so themselves: there is
-- nothing to backfill. The switch is one short transaction whose work does not grow with the
-- number of messages: it detaches the legacy triggers, creates the (empty) ledger and the
-- functions, moves the legacy seconds of active_minutes to active_seconds (active_minutes
-- becomes what its name says) and attaches the new triggers.
-- depends: 0002b_usage_active_seconds

-- The switch takes its table locks first, all at once, in the order the legacy write path
-- takes them (a message, then its session, then the counters, then the profile), so that it
-- queues behind writers in flight instead of deadlocking with one. The chat tables need ACCESS
-- EXCLUSIVE (DROP TRIGGER); the counters and profiles SHARE ROW EXCLUSIVE (CREATE TRIGGER,
-- and no legacy booking in between). Held to commit, which does not take longer with the size
-- of the database (under 100 ms at 1,000,000 messages: `pgchat bench --adoption`); the readers
-- of user_usage_daily and profiles are not blocked.
LOCK TABLE public.chat_messages, public.chat_sessions IN ACCESS EXCLUSIVE MODE;
LOCK TABLE public.user_usage_daily, public.profiles IN SHARE ROW EXCLUSIVE MODE;

-- Adoption, before anything else changes: take over the app's analytics. Detached (each
-- definition saved for the rollback, each reason printed):
--   * every trigger running the legacy update_session_stats() or update_session_timestamp(),
--     whatever its name or table: pgchat replaces both functions, and a per-row trigger left
--     on the new statement-level function would fail on every write;
--   * every trigger, on any table, whose function calls track_user_usage or writes
--     user_usage_daily or profiles.usage_stats, directly or through other functions (function
--     bodies are scanned: pg_depend does not record calls made inside a body). Left attached it
--     would count a second time, or fail once the legacy track_user_usage is gone.
-- A trigger on a table the migrating role does not own (auth.users, on Supabase) cannot be
-- detached: the migration refuses, naming it, before changing anything. Functions that count
-- usage but that no trigger runs are left in place and named: only the app knows when it calls
-- them (`pgchat usage verify` shows what they change). `pgchat migrate --dry-run` runs the same
-- scan (the query between the scan markers) and prints what this block will do.
DO $adopt$
DECLARE
    r record;
    v_blocked text;
BEGIN
    CREATE TEMP TABLE pgchat_adoption_scan ON COMMIT DROP AS
    -- scan:begin
    -- A function competes when it calls track_user_usage, writes a counter of user_usage_daily
    -- (an INSERT or UPDATE naming one of pgchat's counters, or a DELETE of its rows) or
    -- profiles.usage_stats. One that writes only the app's columns (a pricing trigger adding
    -- to estimated_cost, its own tables) is the app's and keeps running.
    WITH RECURSIVE params AS (
        SELECT '((insert\s+into|update)\s+(only\s+)?("?public"?\s*\.\s*)?"?user_usage_daily\M[^;]*'
               '\m(messages_sent|messages_received|input_tokens|output_tokens|total_tokens|models_used'
               '|sessions_created|active_minutes|active_seconds|generation_ms)\M)'
               '|(delete\s+from\s+(only\s+)?("?public"?\s*\.\s*)?"?user_usage_daily\M)' AS c_daily_counters
    ), fn AS (
        SELECT p.oid, p.proname::text AS proname, coalesce(p.prosrc, '') AS src
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgchat')
          AND n.nspname NOT LIKE 'pg\_%' AND p.prokind IN ('f', 'p')
          AND NOT (n.nspname = 'public'
                   AND p.proname IN ('track_user_usage', 'update_session_stats', 'update_session_timestamp'))
    ), counting (oid, proname, reason, depth) AS (
        SELECT f.oid, f.proname,
               CASE WHEN f.src ~* '\mtrack_user_usage\M' THEN 'calls track_user_usage'
                    WHEN f.src ~* c_daily_counters THEN 'writes the counters of user_usage_daily'
                    ELSE 'writes profiles.usage_stats' END,
               0
        FROM fn f CROSS JOIN params
        WHERE f.src ~* '\mtrack_user_usage\M'
           OR f.src ~* c_daily_counters
           OR f.src ~* 'update\s+(only\s+)?("?public"?\s*\.\s*)?"?profiles\M[^;]*\musage_stats\M\s*='
        UNION ALL
        SELECT f.oid, f.proname, format('calls %s(), which %s', c.proname, c.reason) COLLATE "default", c.depth + 1
        FROM counting c JOIN fn f ON f.oid <> c.oid AND f.src ~* ('\m' || c.proname || '\M')
        WHERE c.depth < 3
    ), competing AS (
        SELECT DISTINCT ON (c.oid) c.oid, c.reason FROM counting c ORDER BY c.oid, c.depth, c.reason
    ), replaced AS (
        SELECT p.oid, format('is the legacy %s(), which pgchat replaces', p.proname) AS reason
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proname IN ('update_session_stats', 'update_session_timestamp') AND p.pronargs = 0
    )
    SELECT t.tgname::text AS trigger_name, t.tgrelid::regclass::text AS table_name,
           t.tgfoid::regprocedure::text AS function_name, x.reason,
           pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS detachable,
           pg_catalog.pg_get_triggerdef(t.oid) AS definition
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    JOIN (SELECT * FROM competing UNION ALL SELECT * FROM replaced) x ON x.oid = t.tgfoid
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT NULL, NULL, x.oid::regprocedure::text, x.reason, NULL, NULL
    FROM competing x
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgfoid = x.oid)
    ORDER BY 2 NULLS LAST, 1, 3
    -- scan:end
    ;

    SELECT string_agg(format('trigger %I on %s (its function %s %s)', s.trigger_name, s.table_name,
                             s.function_name, s.reason), '; ') INTO v_blocked
    FROM pgchat_adoption_scan s WHERE s.trigger_name IS NOT NULL AND NOT s.detachable;
    IF v_blocked IS NOT NULL THEN
        RAISE EXCEPTION 'cannot adopt this database: % cannot be detached by %, which does not own the table',
            v_blocked, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'nothing was changed; have the table''s owner drop the trigger (or remove the usage '
                         'writes from its function), then run pgchat migrate again';
    END IF;

    FOR r IN SELECT * FROM pgchat_adoption_scan LOOP
        IF r.trigger_name IS NULL THEN
            RAISE NOTICE 'pgchat: left function % in place (no trigger runs it): it %; %', r.function_name, r.reason,
                CASE WHEN r.reason LIKE '%track_user_usage%'
                     THEN 'calling it will fail, the keyless track_user_usage is gone'
                     ELSE 'what it writes bypasses the ledger and shows in pgchat usage verify' END;
            CONTINUE;
        END IF;
        INSERT INTO pgchat_migrations.replaced_objects (migration_id, kind, name, definition)
        VALUES ('0003_usage_ledger', 'trigger', format('%I ON %s', r.trigger_name, r.table_name), r.definition);
        EXECUTE format('DROP TRIGGER %I ON %s', r.trigger_name, r.table_name);
        RAISE NOTICE 'pgchat: detached trigger % on % (saved): its function % %',
            r.trigger_name, r.table_name, r.function_name, r.reason;
    END LOOP;

    -- The legacy versions of the functions 0003 replaces or drops, for the rollback.
    INSERT INTO pgchat_migrations.replaced_objects (migration_id, kind, name, definition)
    SELECT '0003_usage_ledger', 'function', p.oid::regprocedure::text, pg_catalog.pg_get_functiondef(p.oid)
    FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace
      AND p.proname IN ('track_user_usage', 'update_session_stats', 'update_session_timestamp')
    ORDER BY p.oid;

    -- Every legacy track_user_usage took no idempotency key and so could not be idempotent: each
    -- is dropped (the new one is not an overload of it), so an old caller fails loudly instead
    -- of counting twice.
    FOR r IN SELECT p.oid::regprocedure::text AS signature FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND p.proname = 'track_user_usage' LOOP
        EXECUTE format('DROP FUNCTION %s', r.signature);
        RAISE NOTICE 'pgchat: dropped legacy function % (saved; it counted again on every call)', r.signature;
    END LOOP;
END
$adopt$;

CREATE SCHEMA IF NOT EXISTS pgchat;
COMMENT ON SCHEMA pgchat IS 'pgchat internals (usage ledger, helpers); not exposed through the API';
REVOKE ALL ON SCHEMA pgchat FROM PUBLIC;

-- IF NOT EXISTS: `pgchat rollback --all` keeps the ledger (the record of what was counted and
-- is no longer stored), so that adopting the database again counts nothing twice.
CREATE TABLE IF NOT EXISTS pgchat.usage_ledger (
    user_id uuid NOT NULL,  -- no FK: see tg_profiles__forget_usage
    kind text NOT NULL,     -- 'message' or 'session'
    event_key text NOT NULL,
    usage_date date NOT NULL,
    session_id text,
    messages_sent integer NOT NULL DEFAULT 0,
    messages_received integer NOT NULL DEFAULT 0,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    model text,
    sessions_created integer NOT NULL DEFAULT 0,
    active_seconds integer NOT NULL DEFAULT 0,
    generation_ms bigint NOT NULL DEFAULT 0,
    source text NOT NULL,   -- why the row is here: deleted, changed, moved, track_user_usage
    booked_at timestamptz NOT NULL DEFAULT now(),
    -- Keyed by user: ids are chosen by clients, so the same id written by another account is
    -- another event of that account; and every statement of the live path touches one user's
    -- rows, so the table can be hash-partitioned (or distributed) by user_id.
    PRIMARY KEY (user_id, kind, event_key),
    CONSTRAINT usage_ledger_counts_valid CHECK (
        least(messages_sent, messages_received, input_tokens, output_tokens, sessions_created,
              active_seconds, generation_ms) >= 0)
);
COMMENT ON TABLE pgchat.usage_ledger IS
    'Counted events no longer stored as they were counted (deleted, changed, moved) and events '
    'reported by track_user_usage; with the stored rows it covers not, what was counted';

-- The ledger's user ids always come from rows that were checked already (chat_sessions, or a
-- profile lookup in track_user_usage), so a foreign key would only add one lookup per booked
-- event to every bulk write. Deleting a user (GDPR) still deletes its ledger, set-based:
CREATE FUNCTION pgchat.tg_profiles__forget_usage()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
BEGIN
    DELETE FROM pgchat.usage_ledger l USING old_profiles o WHERE l.user_id = o.id;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER _900_forget_usage AFTER DELETE ON public.profiles
    REFERENCING OLD TABLE AS old_profiles
    FOR EACH STATEMENT EXECUTE FUNCTION pgchat.tg_profiles__forget_usage();

-- One usage event as the booking function takes it (the ledger row minus bookkeeping).
CREATE TYPE pgchat.usage_event AS (
    kind text, event_key text, user_id uuid, usage_date date, session_id text,
    messages_sent integer, messages_received integer, input_tokens integer, output_tokens integer,
    model text, sessions_created integer, active_seconds integer, generation_ms bigint
);

-- A change to one session's statistics: messages and tokens to add (negative to remove).
CREATE TYPE pgchat.session_delta AS (session_id text, messages integer, tokens bigint);

-- The legacy seconds move to active_seconds (0002b), in the switch: a legacy booking before it
-- added seconds to active_minutes, a booking after it adds to active_seconds. One row per user
-- and day, not per message.
DO $minutes$
BEGIN
    IF pgchat_migrations.feature('active_minutes') THEN
        INSERT INTO pgchat_migrations.replaced_objects (migration_id, kind, name, definition)
        SELECT '0003_usage_ledger', 'comment', 'public.user_usage_daily.active_minutes',
               format('COMMENT ON COLUMN public.user_usage_daily.active_minutes IS %s',
                      coalesce(quote_literal(col_description('public.user_usage_daily'::regclass, a.attnum)), 'NULL'))
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = 'public.user_usage_daily'::regclass AND a.attname = 'active_minutes';
        UPDATE public.user_usage_daily SET active_seconds = active_minutes, active_minutes = active_minutes / 60
        WHERE active_minutes <> 0;
        COMMENT ON COLUMN public.user_usage_daily.active_minutes IS 'active_seconds / 60, rounded down';
    END IF;
END
$minutes$;

-- Add counts key by key: {"a":1} + {"a":2,"b":1} = {"a":3,"b":1}. Keys only in `a` are kept.
CREATE FUNCTION pgchat.jsonb_add_counts(a jsonb, b jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $fn$
BEGIN
    RETURN coalesce(a, '{}'::jsonb) || coalesce(
        (SELECT jsonb_object_agg(t.k, coalesce((a ->> t.k)::numeric, 0) + t.v::numeric)
         FROM jsonb_each_text(b) AS t(k, v)),
        '{}'::jsonb);
END
$fn$;

-- The helpers below are PL/pgSQL, not SQL, on purpose: before PostgreSQL 18 a SQL function
-- that cannot be inlined (a pinned search_path prevents it) is planned again on every call,
-- while PL/pgSQL keeps its plans for the session. That is most of the cost of one exchange.

-- A counter's new value, or a clear error when it would pass what its integer column holds.
-- The app's tables keep their integer columns: widening one rewrites the table under an ACCESS
-- EXCLUSIVE lock. With every message capped at 10,000,000 tokens and seconds (the CHECK
-- constraints of 0005), reaching 2,147,483,647 takes 215 messages of the largest size into one
-- conversation or one user's day: out of reach of real use, and if it is reached the write is
-- refused with this message instead of a raw 22003 (numeric_value_out_of_range).
CREATE FUNCTION pgchat.within_integer(p_value numeric, p_counter text, p_owner text)
RETURNS integer LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $fn$
BEGIN
    IF p_value > 2147483647 THEN
        RAISE EXCEPTION '% of % would pass 2147483647, the most it can hold; nothing was written',
            p_counter, p_owner
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'start a new conversation (or write on another day); retrying will not help';
    END IF;
    RETURN p_value;
END
$fn$;

-- The daily counters' upsert, shared by count_usage and the insert branch of
-- update_session_stats: it adds a CTE `daily` (user_id, usage_date, messages_sent,
-- messages_received, input_tokens, output_tokens, models_used, sessions_created,
-- active_seconds, generation_ms, owner; sums in bigint) to user_usage_daily, moving only the
-- counters the table has (render()). A sum past what its integer column holds is refused with
-- a clear message (within_integer), never a raw 22003; within_integer is called only out of
-- range, as a function call per counter costs on every booking. The app's later releases
-- declare the counters without NOT NULL, hence the coalesce on the stored side.
CREATE OR REPLACE FUNCTION pgchat_migrations.daily_upsert()
RETURNS text LANGUAGE sql IMMUTABLE AS $snippet$ SELECT $tmpl$
            INSERT INTO public.user_usage_daily AS u (
                user_id, usage_date, messages_sent, messages_received, input_tokens, output_tokens, total_tokens
                , models_used --@models_used
                , sessions_created --@sessions_created
                , active_seconds, active_minutes --@active_minutes
                , generation_ms --@generation_ms
            )
            SELECT d.user_id, d.usage_date,
                   CASE WHEN d.messages_sent <= 2147483647 THEN d.messages_sent::integer
                        ELSE pgchat.within_integer(d.messages_sent, 'messages_sent', d.owner) END,
                   CASE WHEN d.messages_received <= 2147483647 THEN d.messages_received::integer
                        ELSE pgchat.within_integer(d.messages_received, 'messages_received', d.owner) END,
                   CASE WHEN d.input_tokens <= 2147483647 THEN d.input_tokens::integer
                        ELSE pgchat.within_integer(d.input_tokens, 'input_tokens', d.owner) END,
                   CASE WHEN d.output_tokens <= 2147483647 THEN d.output_tokens::integer
                        ELSE pgchat.within_integer(d.output_tokens, 'output_tokens', d.owner) END,
                   CASE WHEN d.input_tokens + d.output_tokens <= 2147483647
                        THEN (d.input_tokens + d.output_tokens)::integer
                        ELSE pgchat.within_integer(d.input_tokens + d.output_tokens, 'total_tokens', d.owner) END
                   , d.models_used --@models_used
                   , d.sessions_created::integer --@sessions_created
                   , CASE WHEN d.active_seconds <= 2147483647 THEN d.active_seconds::integer --@active_minutes
                          ELSE pgchat.within_integer(d.active_seconds, 'active_seconds', d.owner) END --@active_minutes
                   , d.active_seconds / 60 --@active_minutes
                   , d.generation_ms --@generation_ms
            FROM daily d
            ORDER BY d.user_id, d.usage_date
            ON CONFLICT (user_id, usage_date) DO UPDATE SET
                messages_sent = CASE WHEN coalesce(u.messages_sent, 0)::bigint + EXCLUDED.messages_sent <= 2147483647
                    THEN coalesce(u.messages_sent, 0) + EXCLUDED.messages_sent
                    ELSE pgchat.within_integer(coalesce(u.messages_sent, 0)::bigint + EXCLUDED.messages_sent,
                        'messages_sent', format('user %s on %s', u.user_id, u.usage_date)) END,
                messages_received = CASE WHEN coalesce(u.messages_received, 0)::bigint + EXCLUDED.messages_received <= 2147483647
                    THEN coalesce(u.messages_received, 0) + EXCLUDED.messages_received
                    ELSE pgchat.within_integer(coalesce(u.messages_received, 0)::bigint + EXCLUDED.messages_received,
                        'messages_received', format('user %s on %s', u.user_id, u.usage_date)) END,
                input_tokens = CASE WHEN coalesce(u.input_tokens, 0)::bigint + EXCLUDED.input_tokens <= 2147483647
                    THEN coalesce(u.input_tokens, 0) + EXCLUDED.input_tokens
                    ELSE pgchat.within_integer(coalesce(u.input_tokens, 0)::bigint + EXCLUDED.input_tokens,
                        'input_tokens', format('user %s on %s', u.user_id, u.usage_date)) END,
                output_tokens = CASE WHEN coalesce(u.output_tokens, 0)::bigint + EXCLUDED.output_tokens <= 2147483647
                    THEN coalesce(u.output_tokens, 0) + EXCLUDED.output_tokens
                    ELSE pgchat.within_integer(coalesce(u.output_tokens, 0)::bigint + EXCLUDED.output_tokens,
                        'output_tokens', format('user %s on %s', u.user_id, u.usage_date)) END,
                total_tokens = CASE WHEN coalesce(u.total_tokens, 0)::bigint + EXCLUDED.total_tokens <= 2147483647
                    THEN coalesce(u.total_tokens, 0) + EXCLUDED.total_tokens
                    ELSE pgchat.within_integer(coalesce(u.total_tokens, 0)::bigint + EXCLUDED.total_tokens,
                        'total_tokens', format('user %s on %s', u.user_id, u.usage_date)) END
                -- jsonb_add_counts inline: its call (a pinned search_path, a query) costs on every booking.
                , models_used = CASE WHEN EXCLUDED.models_used = '{}'::jsonb THEN u.models_used --@models_used
                    ELSE coalesce(u.models_used, '{}'::jsonb) || coalesce(( --@models_used
                        SELECT jsonb_object_agg(x.k, coalesce((u.models_used ->> x.k)::numeric, 0) + x.v::numeric) --@models_used
                        FROM jsonb_each_text(EXCLUDED.models_used) AS x(k, v)), '{}'::jsonb) END --@models_used
                , sessions_created = coalesce(u.sessions_created, 0) + EXCLUDED.sessions_created --@sessions_created
                , active_seconds = CASE WHEN u.active_seconds::bigint + EXCLUDED.active_seconds <= 2147483647 --@active_minutes
                    THEN u.active_seconds + EXCLUDED.active_seconds --@active_minutes
                    ELSE pgchat.within_integer(u.active_seconds::bigint + EXCLUDED.active_seconds, --@active_minutes
                        'active_seconds', format('user %s on %s', u.user_id, u.usage_date)) END --@active_minutes
                , active_minutes = (u.active_seconds::bigint + EXCLUDED.active_seconds) / 60 --@active_minutes
                , generation_ms = coalesce(u.generation_ms, 0) + EXCLUDED.generation_ms --@generation_ms
                , updated_at = now() --@daily_updated_at
            RETURNING 1
$tmpl$ $snippet$;

-- Move the counters by events counted now, and only by those: callers pass what was never
-- counted before (stored rows the ledger does not cover, or ledger rows just inserted). The
-- counter upsert is atomic (no read-then-write), so concurrent countings for the same user and
-- day never lose an increment. Callers hold the users' profile locks (lock_in_order).
-- Returns how many events were counted.
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render(replace($tmpl$
CREATE FUNCTION pgchat.count_usage(p_events pgchat.usage_event[])
RETURNS integer LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    IF cardinality(p_events) = 0 THEN
        RETURN 0;
    END IF;
    WITH moving AS (
        SELECT e.user_id, e.usage_date, e.model,
               coalesce(e.messages_sent, 0) AS messages_sent, coalesce(e.messages_received, 0) AS messages_received,
               coalesce(e.input_tokens, 0) AS input_tokens, coalesce(e.output_tokens, 0) AS output_tokens,
               coalesce(e.sessions_created, 0) AS sessions_created, coalesce(e.active_seconds, 0) AS active_seconds,
               coalesce(e.generation_ms, 0) AS generation_ms
        FROM unnest(p_events) AS e
    ), daily AS (  -- per user and day; models_used counts each model's replies
        SELECT m.user_id, m.usage_date,  -- sums of bigint are numeric: back to bigint
               sum(m.messages_sent)::bigint AS messages_sent, sum(m.messages_received)::bigint AS messages_received,
               sum(m.input_tokens)::bigint AS input_tokens, sum(m.output_tokens)::bigint AS output_tokens,
               sum(m.sessions_created)::bigint AS sessions_created,
               sum(m.active_seconds)::bigint AS active_seconds, sum(m.generation_ms)::bigint AS generation_ms,
               coalesce(jsonb_object_agg(m.model, m.uses) FILTER (WHERE m.model IS NOT NULL), '{}'::jsonb)
                   AS models_used,
               format('user %s on %s', m.user_id, m.usage_date) AS owner
        FROM (SELECT b.user_id, b.usage_date, b.model, count(*) AS uses,
                     sum(b.messages_sent)::bigint AS messages_sent, sum(b.messages_received)::bigint AS messages_received,
                     sum(b.input_tokens)::bigint AS input_tokens, sum(b.output_tokens)::bigint AS output_tokens,
                     sum(b.sessions_created)::bigint AS sessions_created,
                     sum(b.active_seconds)::bigint AS active_seconds, sum(b.generation_ms)::bigint AS generation_ms
              FROM moving b GROUP BY b.user_id, b.usage_date, b.model) m
        GROUP BY m.user_id, m.usage_date
    ), counted AS (
/*daily_upsert*/
    )
    -- The three totals added inline (jsonb_add_counts' rule for these keys), not through
    -- jsonb_add_counts: its query per call costs on every counting.
    UPDATE public.profiles p SET
        usage_stats = coalesce(p.usage_stats, '{}'::jsonb) || jsonb_build_object(
            'total_messages', coalesce((p.usage_stats ->> 'total_messages')::numeric, 0) + t.messages,
            'total_tokens', coalesce((p.usage_stats ->> 'total_tokens')::numeric, 0) + t.tokens,
            'sessions_created', coalesce((p.usage_stats ->> 'sessions_created')::numeric, 0) + t.sessions),
        last_active = now()
    FROM (SELECT b.user_id, sum(b.messages_sent + b.messages_received) AS messages,
                 sum(b.input_tokens + b.output_tokens) AS tokens,
                 sum(b.sessions_created) AS sessions
          FROM moving b GROUP BY b.user_id) t
    WHERE p.id = t.user_id;
    RETURN cardinality(p_events);
END
$fn$
$tmpl$, '/*daily_upsert*/', pgchat_migrations.daily_upsert()));
END
$render$;

-- Record events in the ledger as counted (already-recorded keys are skipped), moving no
-- counter: the exceptions of what is stored (see the top of this file). Returns the events
-- recorded now.
CREATE FUNCTION pgchat.record_usage(p_events pgchat.usage_event[], p_source text)
RETURNS pgchat.usage_event[] LANGUAGE plpgsql SET search_path = '' AS $fn$
DECLARE
    v_recorded pgchat.usage_event[];
BEGIN
    IF cardinality(p_events) = 0 THEN
        RETURN '{}';
    END IF;
    WITH recorded AS (
        INSERT INTO pgchat.usage_ledger AS l (
            user_id, kind, event_key, usage_date, session_id, messages_sent, messages_received,
            input_tokens, output_tokens, model, sessions_created, active_seconds, generation_ms, source)
        SELECT e.user_id, e.kind, e.event_key, e.usage_date, e.session_id,
               coalesce(e.messages_sent, 0), coalesce(e.messages_received, 0),
               coalesce(e.input_tokens, 0), coalesce(e.output_tokens, 0), e.model,
               coalesce(e.sessions_created, 0), coalesce(e.active_seconds, 0),
               coalesce(e.generation_ms, 0), p_source
        FROM unnest(p_events) AS e
        ORDER BY e.user_id, e.kind, e.event_key
        ON CONFLICT (user_id, kind, event_key) DO NOTHING
        RETURNING l.*
    )
    SELECT coalesce(array_agg(ROW(r.kind, r.event_key, r.user_id, r.usage_date, r.session_id,
                                  r.messages_sent, r.messages_received, r.input_tokens, r.output_tokens,
                                  r.model, r.sessions_created, r.active_seconds, r.generation_ms
                             )::pgchat.usage_event), '{}')
    INTO v_recorded FROM recorded r;
    RETURN v_recorded;
END
$fn$;

-- The events the ledger does not cover yet (not counted under that owner, kind and key).
CREATE FUNCTION pgchat.uncovered(p_events pgchat.usage_event[])
RETURNS pgchat.usage_event[] LANGUAGE plpgsql STABLE SET search_path = '' AS $fn$
BEGIN
    RETURN ARRAY(SELECT e FROM unnest(p_events) AS e
                 WHERE NOT EXISTS (SELECT FROM pgchat.usage_ledger l
                                   WHERE l.user_id = e.user_id AND l.kind = e.kind AND l.event_key = e.event_key));
END
$fn$;

-- The newest successful message of a session: what its "last message" fields show. Ties on
-- the timestamp go to the highest id, so the answer never depends on the physical row order.
-- Served by idx_chat_messages_session_latest: O(log n), whatever the session's size.
CREATE FUNCTION pgchat.session_latest(p_session_id text)
RETURNS TABLE (message_timestamp timestamptz, content text, model text)
LANGUAGE plpgsql STABLE SET search_path = '' AS $fn$
BEGIN
    RETURN QUERY
    SELECT m.message_timestamp, m.content, m.model::text
    FROM public.chat_messages m
    WHERE m.session_id = p_session_id AND coalesce(m.error_message, '') = ''
    ORDER BY m.message_timestamp DESC, m.id DESC
    LIMIT 1;
END
$fn$;

-- The one lock order of every write path: a statement writes its message (or session) rows,
-- then its trigger locks the users' profiles, in id order, and their sessions, each session
-- after its owner's profile, and the daily counters come last (inside count_usage). No path
-- locks anything before writing its rows, so concurrent writers queue instead of deadlocking:
-- a session is only ever locked by a transaction that holds its owner's profile, so the only
-- lock two writers can wait for each other on is a profile, and those are taken in id order.
-- Called as a statement of its own, so that what follows runs on a snapshot taken after any
-- wait and sees the writes it waited for (a refresh computed on an older snapshot would show
-- an older "last message").
CREATE FUNCTION pgchat.lock_in_order(p_users uuid[], p_sessions text[])
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    PERFORM 1 FROM public.profiles WHERE id = ANY (p_users) ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM public.chat_sessions WHERE id = ANY (p_sessions) ORDER BY id FOR NO KEY UPDATE;
END
$fn$;

-- Apply statistic deltas to sessions and refresh their "last message" fields from an index
-- lookup (O(log n) per session, never a scan of the session). updated_at / last_activity move
-- forward to the newest message's time (never back, never to the time of the write). Sessions
-- whose values would not change are not written at all. Callers lock first (lock_in_order).
CREATE FUNCTION pgchat.refresh_sessions(p_deltas pgchat.session_delta[])
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    WITH d AS (
        SELECT x.session_id, sum(x.messages)::integer AS messages, sum(x.tokens) AS tokens
        FROM unnest(p_deltas) AS x GROUP BY x.session_id
    )
    UPDATE public.chat_sessions s SET
        -- within_integer only when out of range: a function call per row costs on the bulk path.
        message_count = CASE WHEN s.message_count::bigint + d.messages <= 2147483647
            THEN (s.message_count::bigint + d.messages)::integer
            ELSE pgchat.within_integer(s.message_count::bigint + d.messages, 'message_count', 'conversation ' || s.id) END,
        total_tokens = CASE WHEN s.total_tokens + d.tokens <= 2147483647
            THEN (s.total_tokens + d.tokens)::integer
            ELSE pgchat.within_integer(s.total_tokens + d.tokens, 'total_tokens', 'conversation ' || s.id) END,
        last_message_timestamp = last.message_timestamp,
        last_message_preview = left(last.content, 200),
        last_model = last.model,
        updated_at = greatest(s.updated_at, last.message_timestamp),
        last_activity = greatest(s.last_activity, last.message_timestamp)
    FROM d
    -- session_latest's query, inline (a function call per session costs more than the lookup)
    LEFT JOIN LATERAL (
        SELECT m.message_timestamp, m.content, m.model::text AS model
        FROM public.chat_messages m
        WHERE m.session_id = d.session_id AND coalesce(m.error_message, '') = ''
        ORDER BY m.message_timestamp DESC, m.id DESC
        LIMIT 1
    ) last ON true
    WHERE s.id = d.session_id
      AND (d.messages <> 0 OR d.tokens <> 0
           OR s.last_message_timestamp IS DISTINCT FROM last.message_timestamp
           OR s.last_message_preview IS DISTINCT FROM left(last.content, 200)
           OR s.last_model IS DISTINCT FROM last.model);
END
$fn$;

-- What the triggers need to know of a message: everything but its content, so that a bulk
-- write does not copy message bodies around. Built from the transition tables. elapsed_ms is
-- the message's duration in milliseconds, from whichever column the table has (elapsed_ms;
-- elapsed_time in seconds; 0 without either).
CREATE TYPE pgchat.message_facts AS (
    id text, session_id text, role text, counted boolean, total_tokens integer,
    input_tokens integer, output_tokens integer, model text, elapsed_ms bigint,
    message_timestamp timestamptz
);

-- The usage events of a set of messages: successful user/assistant messages only. An
-- assistant reply's duration counts as active time (whole seconds) and as generation_ms.
-- Owned by their session's user, or by p_owner (a session's owner before it changed).
CREATE FUNCTION pgchat.message_events(p_rows pgchat.message_facts[], p_owner uuid DEFAULT NULL)
RETURNS pgchat.usage_event[] LANGUAGE plpgsql STABLE SET search_path = '' AS $fn$
BEGIN
    RETURN (SELECT coalesce(array_agg(ROW(
        'message', m.id, coalesce(p_owner, s.user_id), (m.message_timestamp AT TIME ZONE 'UTC')::date, m.session_id,
        CASE WHEN m.role = 'user' THEN 1 ELSE 0 END,
        CASE WHEN m.role = 'assistant' THEN 1 ELSE 0 END,
        CASE WHEN m.role = 'user' THEN greatest(coalesce(m.input_tokens, 0), 0) ELSE 0 END,
        CASE WHEN m.role = 'assistant' THEN greatest(coalesce(m.output_tokens, 0), 0) ELSE 0 END,
        CASE WHEN m.role = 'assistant' THEN m.model END,
        0,
        CASE WHEN m.role = 'assistant' THEN (greatest(coalesce(m.elapsed_ms, 0), 0) / 1000)::integer ELSE 0 END,
        CASE WHEN m.role = 'assistant' THEN greatest(coalesce(m.elapsed_ms, 0), 0) ELSE 0 END
    )::pgchat.usage_event), '{}')
    FROM unnest(p_rows) AS m
    JOIN public.chat_sessions s ON s.id = m.session_id
    WHERE m.counted AND m.role IN ('user', 'assistant'));
END
$fn$;

-- The facts of a session's stored messages that are counted events (successful user and
-- assistant messages), read from the table whichever duration column it has.
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render($tmpl$
CREATE FUNCTION pgchat.session_message_facts(p_session_id text)
RETURNS pgchat.message_facts[] LANGUAGE sql STABLE SET search_path = '' AS $fn$
    SELECT coalesce(array_agg(ROW(m.id, m.session_id, m.role, true, m.total_tokens, m.input_tokens,
                                  m.output_tokens, m.model, /*elapsed_ms:m*/,
                                  m.message_timestamp)::pgchat.message_facts), '{}')
    FROM public.chat_messages m
    WHERE m.session_id = p_session_id AND coalesce(m.error_message, '') = ''
      AND m.role IN ('user', 'assistant')
$fn$
$tmpl$);
END
$render$;

-- Statistic deltas of a set of messages per session, signed: +1 for rows added, -1 removed.
CREATE FUNCTION pgchat.message_deltas(p_rows pgchat.message_facts[], p_sign integer)
RETURNS pgchat.session_delta[] LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $fn$
BEGIN
    RETURN (SELECT coalesce(array_agg(ROW(d.session_id, d.messages, d.tokens)::pgchat.session_delta), '{}')
    FROM (SELECT m.session_id,
                 (p_sign * count(*) FILTER (WHERE m.counted))::integer AS messages,
                 p_sign * coalesce(sum(coalesce(m.total_tokens, 0)) FILTER (WHERE m.counted), 0) AS tokens
          FROM unnest(p_rows) AS m GROUP BY m.session_id) d);
END
$fn$;

-- Rewritten: statement-level, once per INSERT/UPDATE/DELETE statement whatever its row count.
-- SECURITY DEFINER because it writes the ledger and the counters, which app users cannot;
-- pgchat.writer = on marks its writes as pgchat's for the guards (0005).
-- plan_cache_mode = force_generic_plan: the statements here and in the helpers take arrays,
-- which a generic plan costs at 10 elements, so the plan cache would otherwise judge the
-- generic plan dearer than a custom one and plan them again on every call (about a third of
-- the time of a live write). Each is planned once per connection instead (and again after
-- an ANALYZE); the plans look the app's rows up by key (the sessions and users of the rows
-- written), so one plan serves one row and a bulk of 16,000 alike.
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render(replace($tmpl$
CREATE OR REPLACE FUNCTION public.update_session_stats()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = '' SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_new pgchat.message_facts[] := '{}';
    v_old pgchat.message_facts[] := '{}';
    v_sessions text[];
    v_counted pgchat.usage_event[];
    v_events pgchat.usage_event[];
BEGIN
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', true);  -- pgchat's own writes (0005)
    -- Inserts (the live path, and every bulk insert) run in two statements straight from
    -- new_rows, without arrays. The first locks the users' profiles, in id order. The second
    -- does what refresh_sessions and count_usage do for the other events (the same rules, the
    -- same order of writes); its UPDATE locks the sessions, each after its owner's profile, as
    -- lock_in_order's invariant wants, so the sessions need no lock statement of their own.
    -- The second statement's snapshot is taken after the profile locks: whatever wrote
    -- messages into these sessions held the same profile and has committed, so the "last
    -- message" lookup sees it. A writer that holds only a session (a title edit) makes the
    -- UPDATE wait and re-read that session's row, so the counts still add to its newest
    -- version. Each statement costs its start-up on every call, which is most of what a live
    -- write costs beyond its row writes.
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM public.profiles p
        WHERE p.id = ANY (ARRAY(SELECT DISTINCT s.user_id FROM public.chat_sessions s
                                WHERE s.id = ANY (ARRAY(SELECT DISTINCT n.session_id FROM new_rows n))))
        ORDER BY p.id FOR NO KEY UPDATE;
        IF NOT FOUND THEN  -- nothing was inserted (INSERT ... ON CONFLICT DO NOTHING)
            RETURN NULL;
        END IF;
        WITH d AS (
            SELECT n.session_id,
                   count(*) FILTER (WHERE coalesce(n.error_message, '') = '') AS messages,
                   coalesce(sum(coalesce(n.total_tokens, 0)) FILTER (WHERE coalesce(n.error_message, '') = ''), 0) AS tokens
            FROM new_rows n GROUP BY n.session_id
        ), stats AS (  -- refresh_sessions
            UPDATE public.chat_sessions s SET
                message_count = CASE WHEN s.message_count::bigint + d.messages <= 2147483647
                    THEN (s.message_count::bigint + d.messages)::integer
                    ELSE pgchat.within_integer(s.message_count::bigint + d.messages, 'message_count', 'conversation ' || s.id) END,
                total_tokens = CASE WHEN s.total_tokens + d.tokens <= 2147483647
                    THEN (s.total_tokens + d.tokens)::integer
                    ELSE pgchat.within_integer(s.total_tokens + d.tokens, 'total_tokens', 'conversation ' || s.id) END,
                last_message_timestamp = last.message_timestamp,
                last_message_preview = left(last.content, 200),
                last_model = last.model,
                updated_at = greatest(s.updated_at, last.message_timestamp),
                last_activity = greatest(s.last_activity, last.message_timestamp)
            FROM d
            LEFT JOIN LATERAL (
                SELECT m.message_timestamp, m.content, m.model::text AS model
                FROM public.chat_messages m
                WHERE m.session_id = d.session_id AND coalesce(m.error_message, '') = ''
                ORDER BY m.message_timestamp DESC, m.id DESC
                LIMIT 1
            ) last ON true
            WHERE s.id = d.session_id
              AND (d.messages <> 0 OR d.tokens <> 0
                   OR s.last_message_timestamp IS DISTINCT FROM last.message_timestamp
                   OR s.last_message_preview IS DISTINCT FROM left(last.content, 200)
                   OR s.last_model IS DISTINCT FROM last.model)
            -- Every session with a message to book gains a message, so it is here; reading it
            -- from here also makes the statistics move (and a session that would overflow
            -- refuse) before the counters.
            RETURNING s.id, s.user_id
        ), owners AS MATERIALIZED (
            -- Each session's owner as one lookup object: a join of new_rows to `stats` is
            -- planned (generically) for one row on each side, and a nested loop over a
            -- 10,000-session upload made it quadratic. MATERIALIZED: referenced once, the
            -- CTE would be inlined and the aggregate run again for every new row (quadratic).
            SELECT jsonb_object_agg(o.id, o.user_id) AS of_session FROM stats o
        ), booked AS (  -- message_events of the rows the ledger does not cover: counted now
            -- Nothing is written to the ledger: the stored row is the record that it was
            -- counted. A covered id (counted before under this owner, then deleted, changed
            -- or moved) counts nothing.
            SELECT (w.of_session ->> n.session_id)::uuid AS user_id,
                   (n.message_timestamp AT TIME ZONE 'UTC')::date AS usage_date,
                   CASE WHEN n.role = 'assistant' THEN n.model END AS model,
                   CASE WHEN n.role = 'user' THEN 1 ELSE 0 END AS messages_sent,
                   CASE WHEN n.role = 'assistant' THEN 1 ELSE 0 END AS messages_received,
                   CASE WHEN n.role = 'user' THEN greatest(coalesce(n.input_tokens, 0), 0) ELSE 0 END AS input_tokens,
                   CASE WHEN n.role = 'assistant' THEN greatest(coalesce(n.output_tokens, 0), 0) ELSE 0 END AS output_tokens,
                   CASE WHEN n.role = 'assistant' THEN (/*elapsed_ms:n*/ / 1000)::integer ELSE 0 END AS active_seconds,
                   CASE WHEN n.role = 'assistant' THEN /*elapsed_ms:n*/ ELSE 0 END AS generation_ms
            FROM new_rows n CROSS JOIN owners w
            WHERE coalesce(n.error_message, '') = '' AND n.role IN ('user', 'assistant')
              AND w.of_session ? n.session_id
              AND NOT EXISTS (SELECT FROM pgchat.usage_ledger l
                              WHERE l.user_id = (w.of_session ->> n.session_id)::uuid
                                AND l.kind = 'message' AND l.event_key = n.id)
        ), daily AS (  -- per user and day; models_used counts each model's replies
            SELECT m.user_id, m.usage_date,  -- sums of bigint are numeric: back to bigint
                   sum(m.messages_sent)::bigint AS messages_sent, sum(m.messages_received)::bigint AS messages_received,
                   sum(m.input_tokens)::bigint AS input_tokens, sum(m.output_tokens)::bigint AS output_tokens,
                   0::bigint AS sessions_created,
                   sum(m.active_seconds)::bigint AS active_seconds, sum(m.generation_ms)::bigint AS generation_ms,
                   coalesce(jsonb_object_agg(m.model, m.uses) FILTER (WHERE m.model IS NOT NULL), '{}'::jsonb)
                       AS models_used,
                   format('user %s on %s', m.user_id, m.usage_date) AS owner
            FROM (SELECT b.user_id, b.usage_date, b.model, count(*) AS uses,
                         sum(b.messages_sent)::bigint AS messages_sent, sum(b.messages_received)::bigint AS messages_received,
                         sum(b.input_tokens)::bigint AS input_tokens, sum(b.output_tokens)::bigint AS output_tokens,
                         sum(b.active_seconds)::bigint AS active_seconds, sum(b.generation_ms)::bigint AS generation_ms
                  FROM booked b GROUP BY b.user_id, b.usage_date, b.model) m
            GROUP BY m.user_id, m.usage_date
        ), counted AS (
/*daily_upsert*/
        )
        UPDATE public.profiles p SET
            usage_stats = coalesce(p.usage_stats, '{}'::jsonb) || jsonb_build_object(
                'total_messages', coalesce((p.usage_stats ->> 'total_messages')::numeric, 0) + t.messages,
                'total_tokens', coalesce((p.usage_stats ->> 'total_tokens')::numeric, 0) + t.tokens,
                'sessions_created', coalesce((p.usage_stats ->> 'sessions_created')::numeric, 0)),
            last_active = now()
        FROM (SELECT b.user_id, sum(b.messages_sent + b.messages_received) AS messages,
                     sum(b.input_tokens + b.output_tokens) AS tokens
              FROM booked b GROUP BY b.user_id) t
        WHERE p.id = t.user_id;
        RETURN NULL;
    END IF;
    -- new_rows / old_rows exist only for the events that have them, hence the branches.
    IF TG_OP = 'UPDATE' THEN
        v_new := ARRAY(SELECT ROW(n.id, n.session_id, n.role, coalesce(n.error_message, '') = '',
                                  n.total_tokens, n.input_tokens, n.output_tokens, n.model,
                                  /*elapsed_ms:n*/, n.message_timestamp)::pgchat.message_facts
                       FROM new_rows n);
        IF cardinality(v_new) = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        v_old := ARRAY(SELECT ROW(n.id, n.session_id, n.role, coalesce(n.error_message, '') = '',
                                  n.total_tokens, n.input_tokens, n.output_tokens, n.model,
                                  /*elapsed_ms:n*/, n.message_timestamp)::pgchat.message_facts
                       FROM old_rows n);
    END IF;
    v_sessions := ARRAY(SELECT DISTINCT f.session_id FROM unnest(v_new || v_old) AS f);
    PERFORM pgchat.lock_in_order(
        ARRAY(SELECT DISTINCT s.user_id FROM public.chat_sessions s WHERE s.id = ANY (v_sessions)),
        v_sessions);
    PERFORM pgchat.refresh_sessions(
        pgchat.message_deltas(v_new, 1) || pgchat.message_deltas(v_old, -1));
    -- What the old versions had counted and the ledger does not hold: the stored rows were
    -- that record (a covered row's record is its ledger entry already). A row renamed by this
    -- statement was handled by tg_chat_messages__follow_rename before this runs: its new id is
    -- covered when its old one was counted, and an old id not among the new rows is ignored.
    v_counted := pgchat.uncovered(pgchat.message_events(v_old));
    IF TG_OP = 'DELETE' THEN
        -- Deleted rows of deleted sessions are not here (their session is gone): the
        -- session's own trigger recorded them, before the cascade (tg_chat_sessions__keep_counted).
        PERFORM pgchat.record_usage(v_counted, 'deleted');
        RETURN NULL;
    END IF;
    v_events := pgchat.message_events(v_new);
    -- A counted row whose counted values changed (role, success, date, tokens, model,
    -- duration, owner): the values counted first stay the counted ones.
    PERFORM pgchat.record_usage(ARRAY(
        SELECT o FROM unnest(v_counted) AS o
        WHERE o.event_key IN (SELECT n.id FROM unnest(v_new) AS n)
          AND NOT EXISTS (SELECT FROM unnest(v_events) AS e
                          WHERE (e.event_key, e.user_id, e.usage_date, e.messages_sent, e.messages_received,
                                 e.input_tokens, e.output_tokens, e.model, e.active_seconds, e.generation_ms)
                                IS NOT DISTINCT FROM
                                (o.event_key, o.user_id, o.usage_date, o.messages_sent, o.messages_received,
                                 o.input_tokens, o.output_tokens, o.model, o.active_seconds, o.generation_ms))),
        'changed');
    -- A counted row moved to another owner's session: counted for its first owner (above, or
    -- in the ledger already), marked counted for the new one, which it must not count for again.
    PERFORM pgchat.record_usage(ARRAY(
        SELECT ROW('message', n.id, ns.user_id, (n.message_timestamp AT TIME ZONE 'UTC')::date, n.session_id,
                   0, 0, 0, 0, NULL, 0, 0, 0)::pgchat.usage_event
        FROM unnest(v_new) AS n
        JOIN unnest(v_old) AS o ON o.id = n.id
        JOIN public.chat_sessions ns ON ns.id = n.session_id
        JOIN public.chat_sessions os ON os.id = o.session_id
        WHERE ns.user_id <> os.user_id
          AND EXISTS (SELECT FROM pgchat.usage_ledger l
                      WHERE l.user_id = os.user_id AND l.kind = 'message' AND l.event_key = o.id)),
        'moved');
    -- Counted now: new versions that are counted events, covered by no ledger entry, whose old
    -- version was not a counted event (a failed reply retried with success). An old version
    -- that was one is counted already: by its stored row, or under its ledger entry.
    PERFORM pgchat.count_usage(ARRAY(
        SELECT e FROM unnest(pgchat.uncovered(v_events)) AS e
        WHERE e.event_key NOT IN (SELECT o.id FROM unnest(v_old) AS o
                                  WHERE o.counted AND o.role IN ('user', 'assistant'))));
    RETURN NULL;
END
$fn$
$tmpl$, '/*daily_upsert*/', pgchat_migrations.daily_upsert()));
END
$render$;
COMMENT ON FUNCTION public.update_session_stats() IS
    'Trigger (per statement): keeps chat_sessions statistics and books usage exactly once';

-- Rewritten. Two kinds of change reach a session:
--  * statistics maintenance (refresh_sessions) sets updated_at / last_activity itself, to the
--    newest message's time, so uploading last week's conversation does not make it "new";
--  * an edit (title, is_active, ...) moves both to now(), unless the writer set them.
-- No-op updates never get here: the _000 trigger drops them first.
CREATE OR REPLACE FUNCTION public.update_session_timestamp()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $fn$
DECLARE
    c_maintained CONSTANT text[] := ARRAY['message_count', 'total_tokens', 'last_model',
        'last_message_preview', 'last_message_timestamp', 'updated_at', 'last_activity'];
BEGIN
    IF to_jsonb(NEW) - c_maintained = to_jsonb(OLD) - c_maintained THEN
        RETURN NEW;
    END IF;
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    IF NEW.last_activity IS NOT DISTINCT FROM OLD.last_activity THEN
        NEW.last_activity := now();
    END IF;
    RETURN NEW;
END
$fn$;

-- Counts sessions_created once per session, on the UTC date the session was created: every
-- new session the ledger does not cover (a session id deleted and written again by the same
-- user counts once). Generic plans, as in update_session_stats.
CREATE FUNCTION pgchat.tg_chat_sessions__count_created()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = '' SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', true);  -- pgchat's own writes (0005)
    PERFORM pgchat.lock_in_order(ARRAY(SELECT DISTINCT n.user_id FROM new_sessions n), '{}');
    PERFORM pgchat.count_usage(pgchat.uncovered(ARRAY(
        SELECT ROW('session', n.id, n.user_id, (n.created_at AT TIME ZONE 'UTC')::date, n.id,
                   0, 0, 0, 0, NULL, 1, 0, 0)::pgchat.usage_event
        FROM new_sessions n)));
    RETURN NULL;
END
$fn$;

-- What a session and its messages counted, kept before the session is deleted: the cascade
-- deletes its messages after the session row is gone, when their owner can no longer be
-- looked up. Row-level, on deletes only. Nothing is kept for a user being deleted (the profile
-- is gone already): tg_profiles__forget_usage forgets that user's usage anyway.
CREATE FUNCTION pgchat.tg_chat_sessions__keep_counted()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
BEGIN
    IF NOT EXISTS (SELECT FROM public.profiles p WHERE p.id = OLD.user_id) THEN
        RETURN OLD;
    END IF;
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', true);  -- pgchat's own writes (0005)
    PERFORM pgchat.record_usage(pgchat.uncovered(
        ARRAY[ROW('session', OLD.id, OLD.user_id, (OLD.created_at AT TIME ZONE 'UTC')::date, OLD.id,
                  0, 0, 0, 0, NULL, 1, 0, 0)::pgchat.usage_event]
        || pgchat.message_events(pgchat.session_message_facts(OLD.id))), 'deleted');
    RETURN OLD;
END
$fn$;

-- A session that changes its id, its owner (the service role can write either) or the UTC day
-- it was created on: what it counted stays counted under its old identity and date, and its
-- new identity is marked counted with nothing to add; a change of owner does the same for each
-- of its counted messages.
CREATE FUNCTION pgchat.tg_chat_sessions__follow_move()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    v_messages pgchat.usage_event[] := '{}';
BEGIN
    IF (NEW.id, NEW.user_id) = (OLD.id, OLD.user_id)
       AND (NEW.created_at AT TIME ZONE 'UTC')::date = (OLD.created_at AT TIME ZONE 'UTC')::date THEN
        RETURN NULL;  -- created_at moved within its day: counted on the same date
    END IF;
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', true);  -- pgchat's own writes (0005)
    PERFORM pgchat.lock_in_order(ARRAY[OLD.user_id, NEW.user_id], '{}');
    IF NEW.user_id <> OLD.user_id THEN
        -- the counted messages, as the old owner counted them (their rows already say NEW.id)
        v_messages := pgchat.message_events(pgchat.session_message_facts(NEW.id), OLD.user_id);
        PERFORM pgchat.record_usage(pgchat.uncovered(v_messages), 'changed');
        PERFORM pgchat.record_usage(ARRAY(
            SELECT ROW('message', l.event_key, NEW.user_id, l.usage_date, NEW.id, 0, 0, 0, 0, NULL, 0, 0, 0)::pgchat.usage_event
            FROM pgchat.usage_ledger l
            JOIN public.chat_messages m ON m.id = l.event_key AND m.session_id = NEW.id
            WHERE l.user_id = OLD.user_id AND l.kind = 'message'), 'moved');
    END IF;
    PERFORM pgchat.record_usage(pgchat.uncovered(
        ARRAY[ROW('session', OLD.id, OLD.user_id, (OLD.created_at AT TIME ZONE 'UTC')::date, OLD.id,
                  0, 0, 0, 0, NULL, 1, 0, 0)::pgchat.usage_event]), 'changed');
    PERFORM pgchat.record_usage(
        ARRAY[ROW('session', NEW.id, NEW.user_id, (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.id,
                  0, 0, 0, 0, NULL, 0, 0, 0)::pgchat.usage_event], 'moved');
    RETURN NULL;
END
$fn$;

-- The keyed track_user_usage (every legacy one was dropped by the adoption block above).

CREATE FUNCTION public.track_user_usage(
    p_user_id uuid,
    p_event_key text,
    p_usage_date date,
    p_messages_sent integer DEFAULT 0,
    p_messages_received integer DEFAULT 0,
    p_input_tokens integer DEFAULT 0,
    p_output_tokens integer DEFAULT 0,
    p_model_used text DEFAULT NULL,
    p_session_created boolean DEFAULT false,
    p_active_seconds integer DEFAULT 0
) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    v_recorded pgchat.usage_event[];
BEGIN
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', true);  -- pgchat's own writes (0005)
    IF p_user_id IS NULL OR coalesce(p_event_key, '') = '' OR p_usage_date IS NULL THEN
        RAISE EXCEPTION 'track_user_usage: p_user_id, p_event_key and p_usage_date are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF least(p_messages_sent, p_messages_received, p_input_tokens, p_output_tokens,
             p_active_seconds) < 0 THEN
        RAISE EXCEPTION 'track_user_usage: counts must not be negative (event %)', p_event_key
            USING ERRCODE = 'check_violation';
    END IF;
    -- The bounds of one message (parse_messages, chat_messages' CHECK constraints), for every
    -- count; the day within the messages' time window (0005).
    IF greatest(p_messages_sent, p_messages_received, p_input_tokens, p_output_tokens,
                p_active_seconds) > 10000000 THEN
        RAISE EXCEPTION 'track_user_usage: messages, tokens and seconds of one event must be at most 10000000 (event %)',
            p_event_key USING ERRCODE = 'check_violation';
    END IF;
    IF p_usage_date < DATE '2000-01-01' OR p_usage_date > (now() AT TIME ZONE 'UTC')::date + 1 THEN
        RAISE EXCEPTION 'track_user_usage: p_usage_date % is outside the accepted window (2000-01-01 to one day from now) (event %)',
            p_usage_date, p_event_key USING ERRCODE = 'check_violation';
    END IF;
    PERFORM 1 FROM public.profiles WHERE id = p_user_id FOR NO KEY UPDATE;  -- lock order
    IF NOT FOUND THEN
        RAISE EXCEPTION 'track_user_usage: unknown user %', p_user_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- A stored row of that key and owner that is a counted event was counted by the triggers.
    IF (CASE WHEN p_session_created
             THEN EXISTS (SELECT FROM public.chat_sessions s WHERE s.id = p_event_key AND s.user_id = p_user_id)
             ELSE EXISTS (SELECT FROM public.chat_messages m JOIN public.chat_sessions s ON s.id = m.session_id
                          WHERE m.id = p_event_key AND s.user_id = p_user_id
                            AND coalesce(m.error_message, '') = '' AND m.role IN ('user', 'assistant')) END) THEN
        RETURN false;
    END IF;
    v_recorded := pgchat.record_usage(ARRAY[ROW(
        CASE WHEN p_session_created THEN 'session' ELSE 'message' END, p_event_key, p_user_id,
        p_usage_date, NULL, p_messages_sent, p_messages_received, p_input_tokens, p_output_tokens,
        p_model_used, CASE WHEN p_session_created THEN 1 ELSE 0 END, p_active_seconds,
        p_active_seconds::bigint * 1000
    )::pgchat.usage_event], 'track_user_usage');
    RETURN pgchat.count_usage(v_recorded) = 1;
END
$fn$;
COMMENT ON FUNCTION public.track_user_usage(uuid, text, date, integer, integer, integer, integer, text, boolean, integer) IS
    'Books one usage event exactly once. p_event_key is the message id (the session id when '
    'p_session_created), the same key the triggers use, so an event reported by both counts once. '
    'Returns true if it was counted now, false if that key was already counted.';

-- A message whose id changes is the same message. Counted under its old id (by its stored
-- row, or in the ledger), it stays counted there and its new id is marked counted with nothing
-- to add, so that the statement trigger counts nothing again (renaming a counted reply three
-- times must not count it four times, nor re-uploading its old id afterwards). Never counted
-- (a failed reply), the new id is an id like any other. Row-level with a WHEN clause, so that
-- it costs nothing on the updates that keep their id; it runs before the statement-level
-- triggers of the same statement.
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render($tmpl$
CREATE FUNCTION pgchat.tg_chat_messages__follow_rename()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = '' AS $fn$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', true);  -- pgchat's own writes (0005)
    SELECT s.user_id INTO v_user FROM public.chat_sessions s WHERE s.id = OLD.session_id;
    PERFORM pgchat.record_usage(pgchat.uncovered(pgchat.message_events(ARRAY[ROW(
        OLD.id, OLD.session_id, OLD.role, coalesce(OLD.error_message, '') = '', OLD.total_tokens,
        OLD.input_tokens, OLD.output_tokens, OLD.model, /*elapsed_ms:OLD*/,
        OLD.message_timestamp)::pgchat.message_facts])), 'changed');
    IF EXISTS (SELECT FROM pgchat.usage_ledger l
               WHERE l.user_id = v_user AND l.kind = 'message' AND l.event_key = OLD.id) THEN
        PERFORM pgchat.record_usage(ARRAY(
            SELECT ROW('message', NEW.id, s.user_id, (NEW.message_timestamp AT TIME ZONE 'UTC')::date,
                       NEW.session_id, 0, 0, 0, 0, NULL, 0, 0, 0)::pgchat.usage_event
            FROM public.chat_sessions s WHERE s.id = NEW.session_id), 'moved');
    END IF;
    RETURN NULL;
END
$fn$
$tmpl$);
END
$render$;

-- Session statistics computed from scratch: what the triggers maintain incrementally. Used
-- once by the adoption (0003a), and by pgchat.session_stats_drift() to prove they agree.
CREATE VIEW pgchat.session_stats_expected AS
SELECT s.id,
       coalesce(agg.messages, 0)::integer AS message_count,
       coalesce(agg.tokens, 0)::integer AS total_tokens,
       last.message_timestamp AS last_message_timestamp,
       left(last.content, 200) AS last_message_preview,
       last.model AS last_model
FROM public.chat_sessions s
LEFT JOIN (SELECT m.session_id, count(*) AS messages, sum(coalesce(m.total_tokens, 0)) AS tokens
           FROM public.chat_messages m WHERE coalesce(m.error_message, '') = ''
           GROUP BY m.session_id) agg ON agg.session_id = s.id
LEFT JOIN LATERAL pgchat.session_latest(s.id) last ON true;

-- Trigger order is name order: the _000 suppressor runs first and drops no-op updates.
CREATE TRIGGER _000_skip_noop_update BEFORE UPDATE ON public.chat_messages
    FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
CREATE TRIGGER _000_skip_noop_update BEFORE UPDATE ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
-- The WHEN clause skips the call when the writer moved both timestamps (every live statistics
-- update does): the function would return NEW unchanged then, and its call costs on every write.
CREATE TRIGGER on_session_updated BEFORE UPDATE ON public.chat_sessions
    FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
          OR NEW.last_activity IS NOT DISTINCT FROM OLD.last_activity)
    EXECUTE FUNCTION public.update_session_timestamp();

CREATE TRIGGER _400_follow_rename AFTER UPDATE ON public.chat_messages
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION pgchat.tg_chat_messages__follow_rename();
CREATE TRIGGER _500_session_stats_insert AFTER INSERT ON public.chat_messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.update_session_stats();
CREATE TRIGGER _500_session_stats_update AFTER UPDATE ON public.chat_messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.update_session_stats();
CREATE TRIGGER _500_session_stats_delete AFTER DELETE ON public.chat_messages
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.update_session_stats();
CREATE TRIGGER _500_count_session_created AFTER INSERT ON public.chat_sessions
    REFERENCING NEW TABLE AS new_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION pgchat.tg_chat_sessions__count_created();
CREATE TRIGGER _100_keep_counted BEFORE DELETE ON public.chat_sessions
    FOR EACH ROW EXECUTE FUNCTION pgchat.tg_chat_sessions__keep_counted();
CREATE TRIGGER _400_follow_move AFTER UPDATE ON public.chat_sessions
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.user_id IS DISTINCT FROM NEW.user_id
          OR OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION pgchat.tg_chat_sessions__follow_move();

-- Everything that was counted: every ledger row, and every stored counted event the ledger
-- does not cover (source 'stored'): a successful user or assistant message under its
-- session's owner, a session. The same rules as the triggers, row for row.
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render($tmpl$
CREATE VIEW pgchat.counted_events AS
SELECT l.user_id, l.kind, l.event_key, l.usage_date, l.messages_sent, l.messages_received,
       l.input_tokens, l.output_tokens, l.model, l.sessions_created, l.active_seconds,
       l.generation_ms, l.source
FROM pgchat.usage_ledger l
UNION ALL
SELECT s.user_id, 'message', m.id, (m.message_timestamp AT TIME ZONE 'UTC')::date,
       CASE WHEN m.role = 'user' THEN 1 ELSE 0 END,
       CASE WHEN m.role = 'assistant' THEN 1 ELSE 0 END,
       CASE WHEN m.role = 'user' THEN greatest(coalesce(m.input_tokens, 0), 0) ELSE 0 END,
       CASE WHEN m.role = 'assistant' THEN greatest(coalesce(m.output_tokens, 0), 0) ELSE 0 END,
       CASE WHEN m.role = 'assistant' THEN m.model::text END, 0,
       CASE WHEN m.role = 'assistant' THEN (/*elapsed_ms:m*/ / 1000)::integer ELSE 0 END,
       CASE WHEN m.role = 'assistant' THEN /*elapsed_ms:m*/ ELSE 0 END,
       'stored'
FROM public.chat_messages m
JOIN public.chat_sessions s ON s.id = m.session_id
WHERE coalesce(m.error_message, '') = '' AND m.role IN ('user', 'assistant')
  AND NOT EXISTS (SELECT FROM pgchat.usage_ledger l
                  WHERE l.user_id = s.user_id AND l.kind = 'message' AND l.event_key = m.id)
UNION ALL
SELECT s.user_id, 'session', s.id, (s.created_at AT TIME ZONE 'UTC')::date, 0, 0, 0, 0, NULL, 1, 0, 0,
       'stored'
FROM public.chat_sessions s
WHERE NOT EXISTS (SELECT FROM pgchat.usage_ledger l
                  WHERE l.user_id = s.user_id AND l.kind = 'session' AND l.event_key = s.id)
$tmpl$);
END
$render$;
COMMENT ON VIEW pgchat.counted_events IS
    'What was counted: the ledger, and the stored events it does not cover (source stored)';

-- What the counters should be, recomputed from everything counted.
CREATE VIEW pgchat.expected_usage_daily AS
SELECT d.user_id, d.usage_date,
       sum(d.messages_sent)::integer AS messages_sent,
       sum(d.messages_received)::integer AS messages_received,
       sum(d.input_tokens)::integer AS input_tokens,
       sum(d.output_tokens)::integer AS output_tokens,
       sum(d.input_tokens + d.output_tokens)::integer AS total_tokens,
       coalesce(jsonb_object_agg(d.model, d.uses) FILTER (WHERE d.model IS NOT NULL), '{}'::jsonb) AS models_used,
       sum(d.sessions_created)::integer AS sessions_created,
       sum(d.active_seconds)::integer AS active_seconds,
       sum(d.generation_ms)::bigint AS generation_ms
FROM (SELECT e.user_id, e.usage_date, e.model, count(*) AS uses,
             sum(e.messages_sent) AS messages_sent, sum(e.messages_received) AS messages_received,
             sum(e.input_tokens) AS input_tokens, sum(e.output_tokens) AS output_tokens,
             sum(e.sessions_created) AS sessions_created, sum(e.active_seconds) AS active_seconds,
             sum(e.generation_ms) AS generation_ms
      FROM pgchat.counted_events e
      GROUP BY e.user_id, e.usage_date, e.model) d
GROUP BY d.user_id, d.usage_date;

-- Every counter that differs from what was counted (pgchat.counted_events): per user and day,
-- and the profile totals (usage_date NULL). A stored message counted twice (renamed, reused by
-- another account) or never shows here as a counter that differs. `recorded` is what the
-- database says, `expected` what was counted. Only the counters the table has are
-- compared (render()). usage_drift(NULL) reads everything once; usage_drift_of, for a batch
-- of users, goes through the indexes (a rebuild batch reads only its users' rows), without
-- JIT: the planner's estimate for an array of unknown size would compile a few hundred
-- milliseconds of code for a few milliseconds of work, while the batch holds its users' locks.
DO $render$
DECLARE
    v_template CONSTANT text := $tmpl$
RETURNS TABLE (user_id uuid, usage_date date, field text, recorded text, expected text)
LANGUAGE sql STABLE SET search_path = '' /*settings*/ AS $fn$
    WITH pairs AS (
        SELECT coalesce(u.user_id, e.user_id) AS user_id, coalesce(u.usage_date, e.usage_date) AS usage_date,
               jsonb_build_object(
                   'messages_sent', u.messages_sent, 'messages_received', u.messages_received,
                   'input_tokens', u.input_tokens, 'output_tokens', u.output_tokens,
                   'total_tokens', u.total_tokens
                   , 'models_used', u.models_used --@models_used
                   , 'sessions_created', u.sessions_created --@sessions_created
                   , 'active_seconds', u.active_seconds, 'active_minutes', u.active_minutes --@active_minutes
                   , 'generation_ms', u.generation_ms --@generation_ms
               ) AS rec,
               jsonb_build_object(
                   'messages_sent', coalesce(e.messages_sent, 0), 'messages_received', coalesce(e.messages_received, 0),
                   'input_tokens', coalesce(e.input_tokens, 0), 'output_tokens', coalesce(e.output_tokens, 0),
                   'total_tokens', coalesce(e.total_tokens, 0)
                   , 'models_used', coalesce(e.models_used, '{}'::jsonb) --@models_used
                   , 'sessions_created', coalesce(e.sessions_created, 0) --@sessions_created
                   , 'active_seconds', coalesce(e.active_seconds, 0) --@active_minutes
                   , 'active_minutes', coalesce(e.active_seconds, 0) / 60 --@active_minutes
                   , 'generation_ms', coalesce(e.generation_ms, 0) --@generation_ms
               ) AS exp
        FROM (SELECT * FROM public.user_usage_daily x WHERE /*users:x.user_id*/) u
        FULL JOIN (SELECT * FROM pgchat.expected_usage_daily y WHERE /*users:y.user_id*/) e
            ON e.user_id = u.user_id AND e.usage_date = u.usage_date
    ), profile_pairs AS (
        SELECT p.id AS user_id, NULL::date AS usage_date,
               jsonb_build_object(
                   'total_messages', (p.usage_stats ->> 'total_messages')::bigint,
                   'total_tokens', (p.usage_stats ->> 'total_tokens')::bigint,
                   'sessions_created', (p.usage_stats ->> 'sessions_created')::bigint) AS rec,
               jsonb_build_object(
                   'total_messages', coalesce(t.messages, 0), 'total_tokens', coalesce(t.tokens, 0),
                   'sessions_created', coalesce(t.sessions, 0)) AS exp
        FROM public.profiles p
        LEFT JOIN (SELECT l.user_id, sum(l.messages_sent + l.messages_received) AS messages,
                          sum(l.input_tokens + l.output_tokens) AS tokens,
                          sum(l.sessions_created) AS sessions
                   FROM pgchat.counted_events l WHERE /*users:l.user_id*/
                   GROUP BY l.user_id) t ON t.user_id = p.id
        WHERE /*users:p.id*/
    )
    SELECT x.user_id, x.usage_date, k.key, x.rec -> k.key #>> '{}', x.exp -> k.key #>> '{}'
    FROM (SELECT * FROM pairs UNION ALL SELECT * FROM profile_pairs) x
    CROSS JOIN LATERAL jsonb_object_keys(x.exp) AS k(key)
    WHERE (x.rec -> k.key) IS DISTINCT FROM (x.exp -> k.key)
      -- a day with no counter row and nothing expected is not drift
      AND NOT (coalesce(x.rec -> k.key, 'null'::jsonb) = 'null'::jsonb
               AND x.exp -> k.key IN ('0'::jsonb, '{}'::jsonb))
    ORDER BY 1, 2 NULLS FIRST, 3
$fn$
$tmpl$;
BEGIN
    EXECUTE 'CREATE FUNCTION pgchat.usage_drift(p_user_id uuid DEFAULT NULL)' || pgchat_migrations.render(
        regexp_replace(replace(v_template, '/*settings*/', ''),
                       '/\*users:([a-z.]+_?[a-z]*)\*/', '(p_user_id IS NULL OR \1 = p_user_id)', 'g'));
    EXECUTE 'CREATE FUNCTION pgchat.usage_drift_of(p_users uuid[])' || pgchat_migrations.render(
        regexp_replace(replace(v_template, '/*settings*/', 'SET jit = off'),
                       '/\*users:([a-z.]+_?[a-z]*)\*/', '\1 = ANY (p_users)', 'g'));
END
$render$;

-- The lock of a rebuild: the users' profiles, by id. Every booking path locks the profile
-- first (lock_in_order, track_user_usage), so a user's bookings wait until the rebuild of that
-- user commits (none lost, none counted twice) and everybody else's go on. Call it as a
-- statement of its own: what follows then reads the bookings it waited for.
CREATE FUNCTION pgchat.lock_for_rebuild(p_user_id uuid DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    PERFORM 1 FROM public.profiles WHERE p_user_id IS NULL OR id = p_user_id
    ORDER BY id FOR NO KEY UPDATE;
END
$fn$;

-- The same for a batch of users (`pgchat usage rebuild` works batch by batch, one
-- transaction each, so that no booking waits behind more than one batch).
CREATE FUNCTION pgchat.lock_users_for_rebuild(p_users uuid[])
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    PERFORM 1 FROM public.profiles WHERE id = ANY (p_users) ORDER BY id FOR NO KEY UPDATE;
END
$fn$;

-- Rewrite the counters of a batch of users from what was counted (counted_events). Days
-- without events are zeroed, never deleted. The caller holds the users' lock (lock_users_for_rebuild, as a
-- statement of its own), so no booking of theirs is lost. Returns the number of daily rows
-- and profiles that changed. Without JIT, as usage_drift_of. Only the counters the table has
-- are written (render()); pgchat.writer = on marks the writes as pgchat's for the guards.
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render($tmpl$
CREATE FUNCTION pgchat.rebuild_users(p_users uuid[])
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = '' SET jit = off AS $fn$
DECLARE
    v_daily integer;
    v_profiles integer;
BEGIN
    PERFORM pg_catalog.set_config('pgchat.writer', 'on', true);  -- pgchat's own writes (0005)
    WITH target AS (
        SELECT coalesce(u.user_id, e.user_id) AS user_id, coalesce(u.usage_date, e.usage_date) AS usage_date,
               coalesce(e.messages_sent, 0) AS messages_sent, coalesce(e.messages_received, 0) AS messages_received,
               coalesce(e.input_tokens, 0) AS input_tokens, coalesce(e.output_tokens, 0) AS output_tokens,
               coalesce(e.total_tokens, 0) AS total_tokens, coalesce(e.models_used, '{}'::jsonb) AS models_used,
               coalesce(e.sessions_created, 0) AS sessions_created, coalesce(e.active_seconds, 0) AS active_seconds,
               coalesce(e.generation_ms, 0) AS generation_ms
        FROM (SELECT * FROM public.user_usage_daily x WHERE x.user_id = ANY (p_users)) u
        FULL JOIN (SELECT * FROM pgchat.expected_usage_daily y WHERE y.user_id = ANY (p_users)) e
            ON e.user_id = u.user_id AND e.usage_date = u.usage_date
    ), written AS (
        INSERT INTO public.user_usage_daily AS u (user_id, usage_date, messages_sent, messages_received,
            input_tokens, output_tokens, total_tokens
            , models_used --@models_used
            , sessions_created --@sessions_created
            , active_seconds, active_minutes --@active_minutes
            , generation_ms --@generation_ms
        )
        SELECT t.user_id, t.usage_date, t.messages_sent, t.messages_received, t.input_tokens, t.output_tokens,
               t.total_tokens
               , t.models_used --@models_used
               , t.sessions_created --@sessions_created
               , t.active_seconds, t.active_seconds / 60 --@active_minutes
               , t.generation_ms --@generation_ms
        FROM target t
        ON CONFLICT (user_id, usage_date) DO UPDATE SET
            messages_sent = EXCLUDED.messages_sent, messages_received = EXCLUDED.messages_received,
            input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
            total_tokens = EXCLUDED.total_tokens
            , models_used = EXCLUDED.models_used --@models_used
            , sessions_created = EXCLUDED.sessions_created --@sessions_created
            , active_seconds = EXCLUDED.active_seconds, active_minutes = EXCLUDED.active_minutes --@active_minutes
            , generation_ms = EXCLUDED.generation_ms --@generation_ms
            , updated_at = now() --@daily_updated_at
        WHERE (u.messages_sent, u.messages_received, u.input_tokens, u.output_tokens, u.total_tokens
               , u.models_used --@models_used
               , u.sessions_created --@sessions_created
               , u.active_seconds, u.active_minutes --@active_minutes
               , u.generation_ms --@generation_ms
              ) IS DISTINCT FROM
              (EXCLUDED.messages_sent, EXCLUDED.messages_received, EXCLUDED.input_tokens,
               EXCLUDED.output_tokens, EXCLUDED.total_tokens
               , EXCLUDED.models_used --@models_used
               , EXCLUDED.sessions_created --@sessions_created
               , EXCLUDED.active_seconds, EXCLUDED.active_minutes --@active_minutes
               , EXCLUDED.generation_ms --@generation_ms
              )
        RETURNING 1
    )
    SELECT count(*) INTO v_daily FROM written;

    UPDATE public.profiles p SET usage_stats = coalesce(p.usage_stats, '{}'::jsonb) || t.totals
    FROM (SELECT pr.id AS user_id, jsonb_build_object(
              'total_messages', coalesce(sum(l.messages_sent + l.messages_received), 0),
              'total_tokens', coalesce(sum(l.input_tokens + l.output_tokens), 0),
              'sessions_created', coalesce(sum(l.sessions_created), 0)) AS totals
          FROM public.profiles pr
          LEFT JOIN pgchat.counted_events l ON l.user_id = pr.id AND l.user_id = ANY (p_users)
          WHERE pr.id = ANY (p_users)
          GROUP BY pr.id) t
    WHERE p.id = t.user_id
      AND coalesce(p.usage_stats, '{}'::jsonb) || t.totals IS DISTINCT FROM p.usage_stats;
    GET DIAGNOSTICS v_profiles = ROW_COUNT;
    RETURN v_daily + v_profiles;
END
$fn$
$tmpl$);
END
$render$;

-- Rewrite the counters from what was counted (all users, or one) in the caller's transaction,
-- under the profiles' locks: the one-transaction form (every booking of the users waits until
-- it commits). `pgchat usage rebuild` goes batch by batch instead (rebuild_users).
CREATE FUNCTION pgchat.rebuild_usage(p_user_id uuid DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    PERFORM pgchat.lock_for_rebuild(p_user_id);
    RETURN pgchat.rebuild_users(CASE WHEN p_user_id IS NOT NULL THEN ARRAY[p_user_id] ELSE ARRAY(
        SELECT p.id FROM public.profiles p
        UNION SELECT u.user_id FROM public.user_usage_daily u
        UNION SELECT l.user_id FROM pgchat.usage_ledger l
        UNION SELECT s.user_id FROM public.chat_sessions s) END);
END
$fn$;

-- Sessions whose stored statistics differ from a from-scratch recomputation (should be none).
CREATE FUNCTION pgchat.session_stats_drift()
RETURNS TABLE (session_id text, field text, recorded text, expected text)
LANGUAGE sql STABLE SET search_path = '' AS $fn$
    SELECT s.id, k.key, to_jsonb(s) ->> k.key, to_jsonb(e) ->> k.key
    FROM public.chat_sessions s
    JOIN pgchat.session_stats_expected e ON e.id = s.id
    CROSS JOIN LATERAL unnest(ARRAY['message_count', 'total_tokens', 'last_message_timestamp',
                                    'last_message_preview', 'last_model']) AS k(key)
    WHERE to_jsonb(s) -> k.key IS DISTINCT FROM to_jsonb(e) -> k.key
    ORDER BY 1, 2
$fn$;

-- Least privilege: internals are for the owner; the backend (service_role) may report usage.
REVOKE ALL ON ALL TABLES IN SCHEMA pgchat FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgchat FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION public.update_session_stats(), public.update_session_timestamp()
    FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION public.track_user_usage(uuid, text, date, integer, integer, integer, integer, text, boolean, integer)
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.track_user_usage(uuid, text, date, integer, integer, integer, integer, text, boolean, integer)
    TO service_role;

-- The template of the daily upsert was for this migration only (never called by clients).
-- squawk-ignore ban-drop-function
DROP FUNCTION pgchat_migrations.daily_upsert();
