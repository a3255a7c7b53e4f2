-- Undo 0002b (after 0003's rollback has put the seconds back into active_minutes): drop the
-- column only where 0002b added it.
DO $drop$
BEGIN
    IF pg_catalog.col_description('public.user_usage_daily'::regclass,
           (SELECT a.attnum FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = 'public.user_usage_daily'::regclass AND a.attname = 'active_seconds'
              AND NOT a.attisdropped)) LIKE 'pgchat: added by 0002b%' THEN
        ALTER TABLE public.user_usage_daily DROP COLUMN active_seconds;
    END IF;
END
$drop$;
