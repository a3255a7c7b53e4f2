-- user_usage_daily.active_seconds: the seconds the legacy code summed into active_minutes
-- (0003 moves them here and makes active_minutes what its name says).
--
-- A migration of its own, so that its ACCESS EXCLUSIVE lock on user_usage_daily is held for
-- the catalog change only, never behind the rest of the adoption. Adding a column with a
-- constant default rewrites nothing (PostgreSQL 11+). It is the one column pgchat adds to a
-- table of the app: a reader holding a prepared `SELECT *` on user_usage_daily gets
-- 0A000 (cached plan must not change result type) once, and must prepare it again (README).
-- depends: 0002a_session_latest_index

ALTER TABLE public.user_usage_daily ADD COLUMN active_seconds integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN public.user_usage_daily.active_seconds IS 'Sum of assistant elapsed_time (seconds)';
