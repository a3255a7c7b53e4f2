-- The tables enforce what the functions check, on every path: the functions, direct writes
-- under RLS (PostgREST gives every user direct table access), the service role.
--
-- * CHECK constraints on the message and session columns, named so that an error says what
--   was wrong (pgchat/errors.py maps each name to the reason the sync report gives):
--   token counts and the duration (elapsed_time in seconds, or the app's later elapsed_ms)
--   from 0 to 10,000,000 (the bound parse_messages applies; milliseconds: not negative),
--   ids of at most 255 characters, timestamps inside a plausible window.
-- * Guards: pgchat's columns (the statistics of chat_sessions, the counters of
--   user_usage_daily, the three totals of profiles.usage_stats) keep the values pgchat
--   computed, whoever else writes them. A write by the app, a user or the service role into
--   them is neutralised, never refused: the rest of the row is written (the app's sync route
--   upserts sessions with their statistics; a user saving preferences or the Stripe webhook
--   updates profiles; a pricing trigger adds to estimated_cost), pgchat's values stay. No
--   column list of the app is baked into grants: columns the app adds later are the app's.
--
--   How pgchat's own writes are told apart: they are made by pgchat's functions, which run
--   SECURITY DEFINER as the role that owns pgchat (the migration role) and set pgchat.writer
--   to 'on' for the transaction (set_config(..., true); a function's own SET clause would
--   need a superuser for a custom setting). A guard lets a change through only when both
--   hold: current_user is that role AND pgchat.writer is 'on'. An API role can set the
--   setting but never becomes the owner (no API role is a member of it), so a user, the
--   service role and PostgREST never pass. The app's own SECURITY DEFINER functions run as
--   the owner, and pass only later in a transaction in which pgchat has already written (the
--   app's triggers that counted usage were taken over by 0003; what is left writes its own
--   columns). Forging it otherwise takes a database session of the owner's: the DBA's.
--
-- Online: every constraint is added NOT VALID, which takes the table's ACCESS EXCLUSIVE lock
-- only for a catalog change (no scan); from now on every new or updated row is checked.
-- 0006 validates the existing rows in its own transaction (SHARE UPDATE EXCLUSIVE: reads and
-- writes go on). No column type is changed: that would rewrite an app table under an ACCESS
-- EXCLUSIVE lock. The integer counters stay integers; pgchat.within_integer (0003) refuses,
-- with a clear message, a write that would carry one past its range.
--
-- Why 255 characters for ids: the widest btree entry holding ids is the primary key of
-- pgchat.usage_ledger (user_id, kind, event_key): 16 + 8 + 255 characters x at most 4 bytes
-- = 1,044 bytes, safely below the 2,704-byte limit of a btree entry (a longer id failed the
-- whole call with 54000). The app's ids are a few dozen characters.
--
-- Why the time window, from 2000-01-01 to one day from now: a chat message cannot predate
-- this app (or any LLM chat), yet imported archives of the last decades still fit; the lower
-- bound catches the usual clock bugs (epoch 0 = 1970-01-01, two-digit years = year 0025). The
-- upper bound is the browser's clock plus a day of slack (a wrong time zone is off by at most
-- 14 hours); a message from 9999-12-31 would land usage on that day and pin the session's
-- updated_at there for good. The bound moves with now(), which is safe in a CHECK because it
-- only ever widens: a row that passed once passes forever (dump/restore included).
-- depends: 0004_sync_and_exchange

-- Few constraints, each short: every statement that writes a table parses and prepares its
-- CHECK expressions again (the live path writes both tables on every message), so the rules
-- are grouped by what they bound. Each group has a name, and its comment says what it wants.
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render($tmpl$
ALTER TABLE public.chat_messages
    ADD CONSTRAINT chat_messages_id_length
        CHECK (greatest(length(id), length(user_message_id)) <= 255) NOT VALID,
    ADD CONSTRAINT chat_messages_counts_range
        CHECK (least(input_tokens, output_tokens, total_tokens) >= 0 --@no_elapsed
               AND greatest(input_tokens, output_tokens, total_tokens) <= 10000000) --@no_elapsed
        CHECK (least(input_tokens, output_tokens, total_tokens, elapsed_time) >= 0 --@elapsed_time
               AND greatest(input_tokens, output_tokens, total_tokens, elapsed_time) <= 10000000) --@elapsed_time
        CHECK (least(input_tokens, output_tokens, total_tokens, elapsed_ms) >= 0 --@elapsed_ms
               AND greatest(input_tokens, output_tokens, total_tokens) <= 10000000) --@elapsed_ms
        NOT VALID,
    ADD CONSTRAINT chat_messages_timestamp_window
        CHECK (message_timestamp >= '2000-01-01 00:00:00+00' AND message_timestamp <= now() + interval '1 day')
        NOT VALID
$tmpl$);
END
$render$;

ALTER TABLE public.chat_sessions
    ADD CONSTRAINT chat_sessions_id_length CHECK (length(id) <= 255) NOT VALID,
    ADD CONSTRAINT chat_sessions_counts_range CHECK (least(message_count, total_tokens) >= 0) NOT VALID,
    ADD CONSTRAINT chat_sessions_timestamp_window
        CHECK (least(created_at, updated_at, last_activity) >= '2000-01-01 00:00:00+00'
               AND greatest(created_at, updated_at, last_activity) <= now() + interval '1 day')
        NOT VALID;

COMMENT ON CONSTRAINT chat_messages_id_length ON public.chat_messages IS
    'message id and user_message_id must have at most 255 characters';
COMMENT ON CONSTRAINT chat_messages_counts_range ON public.chat_messages IS
    'input_tokens, output_tokens, total_tokens and elapsed time must be from 0 to 10000000 (milliseconds: not negative)';
COMMENT ON CONSTRAINT chat_messages_timestamp_window ON public.chat_messages IS
    'timestamp is outside the accepted window (2000-01-01 to one day from now)';
COMMENT ON CONSTRAINT chat_sessions_id_length ON public.chat_sessions IS
    'conversation id is longer than 255 characters';
COMMENT ON CONSTRAINT chat_sessions_counts_range ON public.chat_sessions IS
    'message_count and total_tokens must not be negative';
COMMENT ON CONSTRAINT chat_sessions_timestamp_window ON public.chat_sessions IS
    'createdAt, updatedAt and last activity must be inside the accepted window (2000-01-01 to one day from now)';

-- The guards. Each is a BEFORE row trigger that puts pgchat's values back into a foreign
-- write of pgchat's columns (on INSERT: nothing counted yet) and leaves the rest of the write
-- as it is. The UPDATE guards' WHEN clause holds only the writer test, so that pgchat's own
-- writes call nothing: the server parses a trigger's WHEN clause again for every statement,
-- and comparing all of pgchat's columns there cost an exchange about 6 % of its server CPU;
-- a foreign write pays one short function call instead. Named _000_guard_*, they run before
-- _000_skip_noop_update (trigger order is name order), so that a write changing only
-- pgchat's columns becomes a no-op and is dropped. The owner's name is fixed when the
-- trigger is created (format %L).
CREATE FUNCTION pgchat.tg_chat_sessions__guard_statistics()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.message_count := 0;
        NEW.total_tokens := 0;
        NEW.last_model := NULL;
        NEW.last_message_preview := NULL;
        NEW.last_message_timestamp := NULL;
    ELSE
        NEW.message_count := OLD.message_count;
        NEW.total_tokens := OLD.total_tokens;
        NEW.last_model := OLD.last_model;
        NEW.last_message_preview := OLD.last_message_preview;
        NEW.last_message_timestamp := OLD.last_message_timestamp;
    END IF;
    RETURN NEW;
END
$fn$;

-- A new profile has counted nothing yet; an existing one keeps pgchat's three totals. A write
-- that moves them keeps usage_stats as it was (the column is pgchat's); one that leaves them
-- as they are writes the app's other keys.
CREATE FUNCTION pgchat.tg_profiles__guard_usage_stats()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.usage_stats := coalesce(NEW.usage_stats, '{}'::jsonb)
            || '{"total_messages": 0, "total_tokens": 0, "sessions_created": 0}'::jsonb;
    ELSIF (NEW.usage_stats -> 'total_messages', NEW.usage_stats -> 'total_tokens',
           NEW.usage_stats -> 'sessions_created') IS DISTINCT FROM
          (OLD.usage_stats -> 'total_messages', OLD.usage_stats -> 'total_tokens',
           OLD.usage_stats -> 'sessions_created') THEN
        NEW.usage_stats := OLD.usage_stats;
    END IF;
    RETURN NEW;
END
$fn$;

-- Only the counters user_usage_daily has (render()).
DO $render$
BEGIN
    EXECUTE pgchat_migrations.render($tmpl$
CREATE FUNCTION pgchat.tg_user_usage_daily__guard_counters()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.messages_sent := 0;
        NEW.messages_received := 0;
        NEW.input_tokens := 0;
        NEW.output_tokens := 0;
        NEW.total_tokens := 0;
        NEW.models_used := '{}'::jsonb; --@models_used
        NEW.sessions_created := 0; --@sessions_created
        NEW.active_seconds := 0; --@active_minutes
        NEW.active_minutes := 0; --@active_minutes
        NEW.generation_ms := 0; --@generation_ms
    ELSE
        NEW.messages_sent := OLD.messages_sent;
        NEW.messages_received := OLD.messages_received;
        NEW.input_tokens := OLD.input_tokens;
        NEW.output_tokens := OLD.output_tokens;
        NEW.total_tokens := OLD.total_tokens;
        NEW.models_used := OLD.models_used; --@models_used
        NEW.sessions_created := OLD.sessions_created; --@sessions_created
        NEW.active_seconds := OLD.active_seconds; --@active_minutes
        NEW.active_minutes := OLD.active_minutes; --@active_minutes
        NEW.generation_ms := OLD.generation_ms; --@generation_ms
    END IF;
    RETURN NEW;
END
$fn$
$tmpl$);
END
$render$;

DO $triggers$
DECLARE
    c_foreign CONSTANT text := format(
        '(current_user <> %L::name OR current_setting(''pgchat.writer'', true) IS DISTINCT FROM ''on'')',
        current_user);
BEGIN
    EXECUTE format($sql$
        CREATE TRIGGER _000_guard_statistics_insert BEFORE INSERT ON public.chat_sessions FOR EACH ROW
        WHEN (NEW.message_count IS DISTINCT FROM 0 OR NEW.total_tokens IS DISTINCT FROM 0
              OR NEW.last_model IS NOT NULL OR NEW.last_message_preview IS NOT NULL
              OR NEW.last_message_timestamp IS NOT NULL)
        EXECUTE FUNCTION pgchat.tg_chat_sessions__guard_statistics()$sql$);
    EXECUTE format($sql$
        CREATE TRIGGER _000_guard_statistics_update BEFORE UPDATE ON public.chat_sessions FOR EACH ROW
        WHEN %s
        EXECUTE FUNCTION pgchat.tg_chat_sessions__guard_statistics()$sql$, c_foreign);
    EXECUTE format($sql$
        CREATE TRIGGER _000_guard_usage_stats_insert BEFORE INSERT ON public.profiles FOR EACH ROW
        EXECUTE FUNCTION pgchat.tg_profiles__guard_usage_stats()$sql$);
    EXECUTE format($sql$
        CREATE TRIGGER _000_guard_usage_stats_update BEFORE UPDATE ON public.profiles FOR EACH ROW
        WHEN %s
        EXECUTE FUNCTION pgchat.tg_profiles__guard_usage_stats()$sql$, c_foreign);
    EXECUTE format($sql$
        CREATE TRIGGER _000_guard_counters_insert BEFORE INSERT ON public.user_usage_daily FOR EACH ROW
        WHEN %s
        EXECUTE FUNCTION pgchat.tg_user_usage_daily__guard_counters()$sql$, c_foreign);
    EXECUTE format($sql$
        CREATE TRIGGER _000_guard_counters_update BEFORE UPDATE ON public.user_usage_daily FOR EACH ROW
        WHEN %s
        EXECUTE FUNCTION pgchat.tg_user_usage_daily__guard_counters()$sql$, c_foreign);
END
$triggers$;

-- Validate pgchat's NOT VALID constraints (0006 runs it; run it again after fixing rows).
-- A constraint whose existing rows all pass is validated (one scan, SHARE UPDATE EXCLUSIVE).
-- One that old rows violate stays NOT VALID, still checking every new write, and is returned
-- with the number of such rows, the first ids and the remedy. Why not refuse the migration:
-- those rows are the app's history, which pgchat never rewrites, and refusing would keep the
-- protection away from every new write too; NOT VALID gives it now and says what to repair.
CREATE FUNCTION pgchat.validate_integrity()
RETURNS TABLE (constraint_name text, table_name text, violating_rows bigint, first_ids text[], remedy text)
LANGUAGE plpgsql SET search_path = '' AS $fn$
DECLARE
    v_con record;
BEGIN
    FOR v_con IN
        SELECT c.conname::text AS name, c.conrelid::regclass::text AS tbl,
               pg_catalog.pg_get_expr(c.conbin, c.conrelid) AS expr
        FROM pg_catalog.pg_constraint c
        WHERE c.conrelid IN ('public.chat_messages'::regclass, 'public.chat_sessions'::regclass)
          AND c.contype = 'c' AND NOT c.convalidated
          AND c.conname IN ('chat_messages_id_length', 'chat_messages_counts_range',
                            'chat_messages_timestamp_window', 'chat_sessions_id_length',
                            'chat_sessions_counts_range', 'chat_sessions_timestamp_window')
        ORDER BY 2, 1
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v_con.tbl, v_con.name);
        EXCEPTION WHEN check_violation THEN
            constraint_name := v_con.name;
            table_name := v_con.tbl;
            EXECUTE format('SELECT count(*), (array_agg(id ORDER BY id))[1:5] FROM %s WHERE NOT %s',
                           v_con.tbl, v_con.expr)
                INTO violating_rows, first_ids;
            remedy := format('correct or delete these rows, then run SELECT * FROM pgchat.validate_integrity() '
                             '(new writes are checked already)');
            RAISE WARNING 'pgchat: % left NOT VALID: % row(s) of % violate it (first ids: %); %',
                constraint_name, violating_rows, table_name, array_to_string(first_ids, ', '), remedy;
            RETURN NEXT;
        END;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION pgchat.validate_integrity() IS
    'Validates pgchat''s NOT VALID CHECK constraints; returns those that existing rows still violate';

-- Constraints that are still NOT VALID, for `pgchat status`-style reports and the tests.
CREATE VIEW pgchat.unvalidated_constraints AS
SELECT c.conname::text AS constraint_name, c.conrelid::regclass::text AS table_name
FROM pg_catalog.pg_constraint c
WHERE c.conrelid IN ('public.chat_messages'::regclass, 'public.chat_sessions'::regclass)
  AND c.contype = 'c' AND NOT c.convalidated;

REVOKE ALL ON FUNCTION pgchat.validate_integrity(), pgchat.tg_chat_sessions__guard_statistics(),
    pgchat.tg_profiles__guard_usage_stats(), pgchat.tg_user_usage_daily__guard_counters()
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON pgchat.unvalidated_constraints FROM PUBLIC, anon, authenticated, service_role;
