-- Undo 0002a: drop the index (a rollback runs in one transaction: not CONCURRENTLY).
DROP INDEX IF EXISTS public.idx_chat_messages_session_latest;
