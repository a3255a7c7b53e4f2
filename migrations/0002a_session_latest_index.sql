-- The index behind pgchat.session_latest / refresh_sessions (0003): the newest successful
-- message of a session, found in O(log n) whatever the session's size. Keyed by session and
-- time only, the least an entry can hold (the message id, the tie-break between messages of
-- the same instant, is read from the few rows of that instant): pgchat's storage per message
-- is this index, about 60 bytes, and nothing else on the write path (0003).
--
-- Online: built CONCURRENTLY, outside a transaction, before the trigger switch (0003), so the
-- app keeps writing chat_messages while it builds (SHARE UPDATE EXCLUSIVE: only other schema
-- changes and VACUUM wait). Resumable: a build interrupted (killed, cancelled, a failed
-- migrate) leaves an INVALID index of that name behind, which IF NOT EXISTS would keep
-- forever; it is renamed aside and dropped CONCURRENTLY, then built again. A valid index of
-- that name is kept as it is.
-- transactional: false
-- depends: 0002_baseline

DO $invalid$
BEGIN
    -- ALTER INDEX ... RENAME takes SHARE UPDATE EXCLUSIVE (PostgreSQL 12+): writers go on.
    IF EXISTS (SELECT FROM pg_catalog.pg_index i
               WHERE i.indexrelid = to_regclass('public.idx_chat_messages_session_latest')
                 AND NOT i.indisvalid) THEN
        ALTER INDEX public.idx_chat_messages_session_latest
            RENAME TO idx_chat_messages_session_latest_invalid;
        RAISE NOTICE 'pgchat: an interrupted build left idx_chat_messages_session_latest INVALID: rebuilding it';
    END IF;
END
$invalid$;

DROP INDEX CONCURRENTLY IF EXISTS public.idx_chat_messages_session_latest_invalid;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chat_messages_session_latest
    ON public.chat_messages (session_id, message_timestamp DESC)
    WHERE coalesce(error_message, '') = '';
