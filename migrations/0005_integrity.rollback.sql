-- Undo 0005: the constraints, the helper and the column privileges (back to table-level
-- INSERT and UPDATE on chat_sessions for the API roles, as 0002 granted them).

DROP VIEW pgchat.unvalidated_constraints;
DROP FUNCTION pgchat.validate_integrity();

ALTER TABLE public.chat_messages
    DROP CONSTRAINT chat_messages_id_length,
    DROP CONSTRAINT chat_messages_user_message_id_length,
    DROP CONSTRAINT chat_messages_input_tokens_range,
    DROP CONSTRAINT chat_messages_output_tokens_range,
    DROP CONSTRAINT chat_messages_total_tokens_range,
    DROP CONSTRAINT chat_messages_elapsed_time_range,
    DROP CONSTRAINT chat_messages_timestamp_window;
ALTER TABLE public.chat_sessions
    DROP CONSTRAINT chat_sessions_id_length,
    DROP CONSTRAINT chat_sessions_message_count_range,
    DROP CONSTRAINT chat_sessions_total_tokens_range,
    DROP CONSTRAINT chat_sessions_timestamp_window;

-- Revoking the table-level privilege revokes the column privileges as well.
REVOKE INSERT, UPDATE ON public.chat_sessions FROM authenticated, service_role;
GRANT INSERT, UPDATE ON public.chat_sessions TO authenticated, service_role;
