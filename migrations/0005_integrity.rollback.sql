-- Undo 0005: the constraints, the helper and the column privileges (back to table-level
-- INSERT and UPDATE on chat_sessions for the API roles, as 0002 granted them).

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

-- Revoking the table-level privilege revokes the column privileges as well.
REVOKE INSERT, UPDATE ON public.chat_sessions FROM authenticated, service_role;
GRANT INSERT, UPDATE ON public.chat_sessions TO authenticated, service_role;
