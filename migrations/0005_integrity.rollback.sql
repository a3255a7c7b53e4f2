-- Undo 0005: the constraints, the helper and the guards of pgchat's columns.

DROP VIEW pgchat.unvalidated_constraints;
DROP FUNCTION pgchat.validate_integrity();

ALTER TABLE public.chat_messages
    DROP CONSTRAINT chat_messages_id_length,
    DROP CONSTRAINT chat_messages_counts_range,
    DROP CONSTRAINT chat_messages_timestamp_window;
ALTER TABLE public.chat_sessions
    DROP CONSTRAINT chat_sessions_id_length,
    DROP CONSTRAINT chat_sessions_counts_range,
    DROP CONSTRAINT chat_sessions_timestamp_window;

DROP TRIGGER _000_guard_statistics_insert ON public.chat_sessions;
DROP TRIGGER _000_guard_statistics_update ON public.chat_sessions;
DROP TRIGGER _000_guard_usage_stats_insert ON public.profiles;
DROP TRIGGER _000_guard_usage_stats_update ON public.profiles;
DROP TRIGGER _000_guard_counters_insert ON public.user_usage_daily;
DROP TRIGGER _000_guard_counters_update ON public.user_usage_daily;
DROP FUNCTION pgchat.tg_chat_sessions__guard_statistics();
DROP FUNCTION pgchat.tg_profiles__guard_usage_stats();
DROP FUNCTION pgchat.tg_user_usage_daily__guard_counters();
