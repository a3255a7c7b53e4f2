-- Undo 0002b (after 0003's rollback has put the seconds back into active_minutes).
ALTER TABLE public.user_usage_daily DROP COLUMN active_seconds;
