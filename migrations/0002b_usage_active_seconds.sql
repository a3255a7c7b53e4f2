-- user_usage_daily.active_seconds, where the app's table has active_minutes: the seconds the
-- legacy code summed into active_minutes (0003 moves them here and makes active_minutes what
-- its name says, active_seconds / 60). A sum of minutes cannot be kept exact without the
-- seconds, so this is the one column pgchat may add to a table of the app, and only where the
-- counting needs it: a table without active_minutes (the app's later releases keep
-- generation_ms instead) gets nothing.
--
-- A migration of its own, so that its ACCESS EXCLUSIVE lock on user_usage_daily is held for
-- the catalog change only, never behind the rest of the adoption. Adding a column with a
-- constant default rewrites nothing (PostgreSQL 11+). A reader holding a prepared `SELECT *`
-- on user_usage_daily gets 0A000 (cached plan must not change result type) once, and must
-- prepare it again (docs/adoption.md).
-- depends: 0002a_session_latest_index

DO $add$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_attribute a
               WHERE a.attrelid = 'public.user_usage_daily'::regclass AND a.attname = 'active_minutes'
                 AND a.attnum > 0 AND NOT a.attisdropped)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = 'public.user_usage_daily'::regclass AND a.attname = 'active_seconds'
                         AND a.attnum > 0 AND NOT a.attisdropped) THEN
        ALTER TABLE public.user_usage_daily ADD COLUMN active_seconds integer NOT NULL DEFAULT 0;
        COMMENT ON COLUMN public.user_usage_daily.active_seconds IS
            'pgchat: added by 0002b. Sum of assistant elapsed time (seconds)';
    END IF;
END
$add$;
