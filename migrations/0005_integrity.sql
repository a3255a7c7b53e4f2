-- The tables enforce what the functions check, on every path: the functions, direct writes
-- under RLS (PostgREST gives every user direct table access), the service role.
--
-- * CHECK constraints on the message and session columns, named so that an error says what
--   was wrong (pgchat/errors.py maps each name to the reason the sync report gives):
--   token counts and elapsed_time from 0 to 10,000,000 (the bound parse_messages applies),
--   ids of at most 255 characters, timestamps inside a plausible window.
-- * The statistics columns of chat_sessions are pgchat's: the API roles may no longer write
--   them (column privileges), so the statistics cannot drift by a direct UPDATE.
--
-- Online: every constraint is added NOT VALID, which takes the table's ACCESS EXCLUSIVE lock
-- only for a catalog change (no scan); from now on every new or updated row is checked.
-- 0006 validates the existing rows in its own transaction (SHARE UPDATE EXCLUSIVE: reads and
-- writes go on). No column type is changed: that would rewrite an app table under an ACCESS
-- EXCLUSIVE lock. The integer counters stay integers; pgchat.within_integer (0003) refuses,
-- with a clear message, a write that would carry one past its range.
--
-- Why 255 characters for ids: the widest btree entry holding ids is
-- idx_chat_messages_session_latest (session_id, message_timestamp, id): 2 x 255 characters x
-- at most 4 bytes + 8 = 2,048 bytes, safely below the 2,704-byte limit of a btree entry (a
-- longer id failed the whole call with 54000). The app's ids are a few dozen characters.
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
ALTER TABLE public.chat_messages
    ADD CONSTRAINT chat_messages_id_length
        CHECK (greatest(length(id), length(user_message_id)) <= 255) NOT VALID,
    ADD CONSTRAINT chat_messages_counts_range
        CHECK (least(input_tokens, output_tokens, total_tokens, elapsed_time) >= 0
               AND greatest(input_tokens, output_tokens, total_tokens, elapsed_time) <= 10000000)
        NOT VALID,
    ADD CONSTRAINT chat_messages_timestamp_window
        CHECK (message_timestamp >= '2000-01-01 00:00:00+00' AND message_timestamp <= now() + interval '1 day')
        NOT VALID;

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
    'input_tokens, output_tokens, total_tokens and elapsed_time must be from 0 to 10000000';
COMMENT ON CONSTRAINT chat_messages_timestamp_window ON public.chat_messages IS
    'timestamp is outside the accepted window (2000-01-01 to one day from now)';
COMMENT ON CONSTRAINT chat_sessions_id_length ON public.chat_sessions IS
    'conversation id is longer than 255 characters';
COMMENT ON CONSTRAINT chat_sessions_counts_range ON public.chat_sessions IS
    'message_count and total_tokens must not be negative';
COMMENT ON CONSTRAINT chat_sessions_timestamp_window ON public.chat_sessions IS
    'createdAt, updatedAt and last activity must be inside the accepted window (2000-01-01 to one day from now)';

-- The statistics of a session are pgchat's to write (its SECURITY DEFINER trigger, as the
-- owner); the API roles keep every other column, granted one by one. Whatever other columns
-- the app's chat_sessions has are granted too, as they were; a column the app adds later must
-- be granted by the app's own migration (table-level INSERT/UPDATE is gone).
REVOKE INSERT, UPDATE ON public.chat_sessions FROM authenticated, service_role;
DO $grants$
DECLARE
    v_columns text;
BEGIN
    SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_columns
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = 'public.chat_sessions'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname NOT IN ('message_count', 'total_tokens', 'last_model', 'last_message_preview',
                            'last_message_timestamp');
    EXECUTE format('GRANT INSERT (%1$s), UPDATE (%1$s) ON public.chat_sessions TO authenticated, service_role',
                   v_columns);
END
$grants$;

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

REVOKE ALL ON FUNCTION pgchat.validate_integrity() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON pgchat.unvalidated_constraints FROM PUBLIC, anon, authenticated, service_role;
