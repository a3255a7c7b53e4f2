-- The write paths the app calls, and least privilege around them.
--
-- sync_user_conversations: insert-only upload of the conversations kept in the browser (the
--   sign-in case). New sessions and messages are inserted; an existing session of the same
--   user only gains the messages it lacks; nothing that exists is ever updated. Anything that
--   belongs to another user is a conflict and nothing of that conversation is written. Each
--   conversation is valid and written as a whole or not at all; invalid input gets a reason
--   naming the conversation and the message. Set-based: one INSERT per table per call.
-- write_chat_exchange: what the chat API calls after each reply, one transaction for the user
--   message, the assistant message and the session. Retries reuse the user message id.
-- update_session_title: a title edit that moves updated_at only when the title changed.
--
-- Who may call: `authenticated` only for itself (auth.uid() = the user named); `service_role`
-- and direct database roles granted EXECUTE (the backend) for anyone; `anon` and PUBLIC never.
-- depends: 0003_usage_ledger

-- Refuse to act for another user. Inside a SECURITY DEFINER function current_user is the
-- owner, so the caller is recognised by its JWT claims (Supabase's PostgREST sets them) and by
-- the role it switched to (the `role` setting), which SECURITY DEFINER does not change.
CREATE FUNCTION pgchat.assert_acting_for(p_user_id uuid)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = '' AS $fn$
DECLARE
    v_claim_role text := auth.role();
BEGIN
    IF v_claim_role = 'service_role' THEN
        RETURN;
    END IF;
    IF v_claim_role IN ('anon', 'authenticated')
       OR pg_catalog.current_setting('role') IN ('anon', 'authenticated')
       OR session_user::text IN ('anon', 'authenticated') THEN
        IF auth.uid() IS NULL OR auth.uid() IS DISTINCT FROM p_user_id THEN
            RAISE EXCEPTION 'not allowed to act for user %', p_user_id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
END
$fn$;

-- A timestamp from JSON, or NULL if it is not an ISO 8601 string PostgreSQL can read.
-- (pg_input_is_valid would do, but only from PostgreSQL 16; Supabase still runs 15.)
CREATE FUNCTION pgchat.try_timestamptz(p_value jsonb)
RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $fn$
BEGIN
    IF jsonb_typeof(p_value) <> 'string'
       OR NOT (p_value #>> '{}') ~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$' THEN
        RETURN NULL;
    END IF;
    RETURN (p_value #>> '{}')::timestamptz;
EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
    RETURN NULL;
END
$fn$;

-- A count from JSON: missing or null is 0; otherwise a non-negative integer that fits, or NULL.
CREATE FUNCTION pgchat.json_count(p_value jsonb)
RETURNS integer LANGUAGE sql IMMUTABLE SET search_path = '' AS $fn$
    SELECT CASE
        WHEN p_value IS NULL OR p_value = 'null'::jsonb THEN 0
        WHEN jsonb_typeof(p_value) = 'number' AND p_value::numeric = trunc(p_value::numeric)
             AND p_value::numeric BETWEEN 0 AND 2147483647 THEN p_value::numeric::integer
    END
$fn$;

-- A string field from JSON, or NULL if it is missing or not a string (callers check the type).
CREATE FUNCTION pgchat.json_text(p_value jsonb)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = '' AS $fn$
    SELECT CASE WHEN jsonb_typeof(p_value) = 'string' THEN p_value #>> '{}' END
$fn$;

-- One message of the frontend's payload (ChatMessage), parsed and checked.
CREATE TYPE pgchat.parsed_message AS (
    conversation_id text, ord bigint, id text, role text, content text, model text,
    total_tokens integer, input_tokens integer, output_tokens integer, user_message_id text,
    content_type text, elapsed_time integer, completion_id text, message_timestamp timestamptz,
    error_message text, failed boolean, reason text
);

-- Parse one ChatMessage. `reason` is NULL when the message is valid, else the first problem.
-- A message flagged `error: true` or carrying an error_message is `failed`.
CREATE FUNCTION pgchat.parse_message(p_conversation_id text, p_ord bigint, p_doc jsonb)
RETURNS pgchat.parsed_message LANGUAGE sql IMMUTABLE SET search_path = '' AS $fn$
    SELECT ROW(
        p_conversation_id, p_ord, btrim(pgchat.json_text(p_doc -> 'id')), p_doc ->> 'role',
        pgchat.json_text(p_doc -> 'content'), pgchat.json_text(p_doc -> 'model'),
        coalesce(pgchat.json_count(p_doc -> 'total_tokens'),
                 pgchat.json_count(p_doc -> 'input_tokens') + pgchat.json_count(p_doc -> 'output_tokens')),
        pgchat.json_count(p_doc -> 'input_tokens'), pgchat.json_count(p_doc -> 'output_tokens'),
        pgchat.json_text(p_doc -> 'user_message_id'),
        coalesce(pgchat.json_text(p_doc -> 'contentType'), 'text'),
        CASE WHEN jsonb_typeof(p_doc -> 'elapsed_time') = 'number'
                  AND (p_doc -> 'elapsed_time')::numeric BETWEEN 0 AND 2147483647
             THEN round((p_doc -> 'elapsed_time')::numeric)::integer ELSE 0 END,
        pgchat.json_text(p_doc -> 'completion_id'),
        pgchat.try_timestamptz(p_doc -> 'timestamp'),
        CASE WHEN coalesce(pgchat.json_text(p_doc -> 'error_message'), '') <> ''
             THEN pgchat.json_text(p_doc -> 'error_message')
             WHEN p_doc -> 'error' = 'true'::jsonb THEN 'failed' END,
        coalesce(p_doc -> 'error' = 'true'::jsonb, false)
            OR coalesce(pgchat.json_text(p_doc -> 'error_message'), '') <> '',
        CASE
            WHEN jsonb_typeof(p_doc) IS DISTINCT FROM 'object' THEN format('message #%s is not a JSON object', p_ord)
            WHEN coalesce(btrim(pgchat.json_text(p_doc -> 'id')), '') = '' THEN format('message #%s has no id', p_ord)
            WHEN NOT coalesce(p_doc ->> 'role' IN ('user', 'assistant', 'system'), false)
                THEN format('unknown role %s (expected user or assistant)', coalesce(p_doc -> 'role', 'null'::jsonb))
            WHEN jsonb_typeof(p_doc -> 'content') IS DISTINCT FROM 'string' THEN 'content must be a string'
            WHEN p_doc -> 'timestamp' IS NULL THEN 'missing timestamp'
            WHEN pgchat.try_timestamptz(p_doc -> 'timestamp') IS NULL
                THEN format('unparseable timestamp %s', p_doc -> 'timestamp')
            WHEN pgchat.json_count(p_doc -> 'input_tokens') IS NULL
                THEN format('input_tokens must be a non-negative integer, got %s', p_doc -> 'input_tokens')
            WHEN pgchat.json_count(p_doc -> 'output_tokens') IS NULL
                THEN format('output_tokens must be a non-negative integer, got %s', p_doc -> 'output_tokens')
            WHEN pgchat.json_count(p_doc -> 'total_tokens') IS NULL
                THEN format('total_tokens must be a non-negative integer, got %s', p_doc -> 'total_tokens')
            WHEN p_doc ? 'elapsed_time' AND p_doc -> 'elapsed_time' <> 'null'::jsonb
                 AND NOT coalesce(jsonb_typeof(p_doc -> 'elapsed_time') = 'number'
                                  AND (p_doc -> 'elapsed_time')::numeric BETWEEN 0 AND 2147483647, false)
                THEN format('elapsed_time must be a non-negative number of seconds, got %s', p_doc -> 'elapsed_time')
            WHEN NOT coalesce(coalesce(pgchat.json_text(p_doc -> 'contentType'), 'text') IN ('text', 'markdown'), false)
                THEN format('contentType must be "text" or "markdown", got %s', p_doc -> 'contentType')
            WHEN length(pgchat.json_text(p_doc -> 'model')) > 100 THEN 'model is longer than 100 characters'
            WHEN length(pgchat.json_text(p_doc -> 'completion_id')) > 255 THEN 'completion_id is longer than 255 characters'
            WHEN p_doc ? 'error' AND jsonb_typeof(p_doc -> 'error') NOT IN ('boolean', 'null') THEN 'error must be true or false'
            WHEN p_doc ? 'model' AND jsonb_typeof(p_doc -> 'model') NOT IN ('string', 'null') THEN 'model must be a string'
            WHEN p_doc ? 'user_message_id' AND jsonb_typeof(p_doc -> 'user_message_id') NOT IN ('string', 'null')
                THEN 'user_message_id must be a string'
        END
    )::pgchat.parsed_message
$fn$;

-- The list of conversations: the array itself or {"conversations": [...]}.
CREATE FUNCTION pgchat.conversation_list(p_payload jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $fn$
BEGIN
    IF jsonb_typeof(p_payload) = 'array' THEN
        RETURN p_payload;
    ELSIF jsonb_typeof(p_payload) = 'object' AND jsonb_typeof(p_payload -> 'conversations') = 'array' THEN
        RETURN p_payload -> 'conversations';
    END IF;
    RAISE EXCEPTION 'payload must be an array of conversations or {"conversations": [...]}, got %',
        coalesce(jsonb_typeof(p_payload), 'null')
        USING ERRCODE = 'invalid_parameter_value';
END
$fn$;

CREATE OR REPLACE FUNCTION public.sync_user_conversations(user_uuid uuid, conversations_data jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    v_list jsonb;
    v_convs jsonb;          -- [{ord, id, title, created_at, updated_at, reason}]
    v_msgs pgchat.parsed_message[];
    v_errors jsonb;
    v_bad text[];
    v_sessions_inserted integer := 0;
    v_messages_inserted integer := 0;
BEGIN
    PERFORM pgchat.assert_acting_for(user_uuid);
    IF user_uuid IS NULL OR NOT EXISTS (SELECT 1 FROM public.profiles WHERE id = user_uuid) THEN
        RAISE EXCEPTION 'unknown user %', user_uuid USING ERRCODE = 'foreign_key_violation';
    END IF;
    v_list := pgchat.conversation_list(conversations_data);

    -- Conversations: shape, fields, duplicates in the payload, ownership in the database.
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'ord', c.ord, 'id', c.id, 'title', c.title, 'created_at', c.created_at,
        'updated_at', c.updated_at, 'exists', c.owner IS NOT NULL,
        'reason', CASE
            WHEN jsonb_typeof(c.doc) <> 'object' THEN format('conversation #%s is not a JSON object', c.ord)
            WHEN coalesce(c.id, '') = '' THEN format('conversation #%s has no id', c.ord)
            WHEN c.times > 1 THEN 'conversation id appears more than once in the payload'
            WHEN c.owner IS NOT NULL AND c.owner <> user_uuid THEN 'conversation id already belongs to another user'
            WHEN c.doc ? 'messages' AND jsonb_typeof(c.doc -> 'messages') NOT IN ('array')
                THEN 'messages must be an array'
            WHEN c.doc ? 'title' AND jsonb_typeof(c.doc -> 'title') NOT IN ('string', 'null') THEN 'title must be a string'
            WHEN length(c.title) > 255 THEN 'title is longer than 255 characters'
            WHEN c.doc ? 'createdAt' AND c.doc -> 'createdAt' <> 'null'::jsonb AND c.created_at IS NULL
                THEN format('unparseable createdAt %s', c.doc -> 'createdAt')
            WHEN c.doc ? 'updatedAt' AND c.doc -> 'updatedAt' <> 'null'::jsonb AND c.updated_at IS NULL
                THEN format('unparseable updatedAt %s', c.doc -> 'updatedAt')
        END) ORDER BY c.ord), '[]'::jsonb)
    INTO v_convs
    FROM (
        SELECT e.ord, e.doc, btrim(pgchat.json_text(e.doc -> 'id')) AS id,
               pgchat.json_text(e.doc -> 'title') AS title,
               pgchat.try_timestamptz(e.doc -> 'createdAt') AS created_at,
               pgchat.try_timestamptz(e.doc -> 'updatedAt') AS updated_at,
               s.user_id AS owner,
               count(*) OVER (PARTITION BY btrim(pgchat.json_text(e.doc -> 'id'))) AS times
        FROM jsonb_array_elements(v_list) WITH ORDINALITY AS e(doc, ord)
        LEFT JOIN public.chat_sessions s ON s.id = btrim(pgchat.json_text(e.doc -> 'id'))
    ) c;

    -- Messages of the conversations that have an id.
    v_msgs := ARRAY(
        SELECT pgchat.parse_message(c ->> 'id', m.ord, m.doc)
        FROM jsonb_array_elements(v_convs) AS c
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(v_list -> ((c ->> 'ord')::integer - 1) -> 'messages') = 'array'
                 THEN v_list -> ((c ->> 'ord')::integer - 1) -> 'messages' ELSE '[]'::jsonb END
        ) WITH ORDINALITY AS m(doc, ord)
        WHERE c ->> 'id' <> ''
    );

    -- Every problem, one row each: conversation-level, message-level, ownership of message ids.
    WITH msg AS (
        SELECT m.*, count(*) OVER (PARTITION BY m.id) AS times, x.session_id AS stored_in,
               s.user_id AS stored_owner
        FROM unnest(v_msgs) AS m
        LEFT JOIN public.chat_messages x ON x.id = m.id
        LEFT JOIN public.chat_sessions s ON s.id = x.session_id
    ), problems AS (
        SELECT c ->> 'id' AS conversation_id, NULL::text AS message_id, c ->> 'reason' AS reason,
               (c ->> 'ord')::bigint AS ord1, 0::bigint AS ord2
        FROM jsonb_array_elements(v_convs) AS c WHERE c ->> 'reason' IS NOT NULL
        UNION ALL
        SELECT m.conversation_id, m.id, CASE
                WHEN m.reason IS NOT NULL THEN m.reason
                WHEN m.times > 1 THEN 'message id appears more than once in the payload'
                WHEN m.stored_owner <> user_uuid THEN 'message id already belongs to another user'
                WHEN m.stored_in <> m.conversation_id
                    THEN format('message id already belongs to conversation %s', m.stored_in)
            END, c.ord, m.ord
        FROM msg m JOIN (SELECT (x ->> 'ord')::bigint AS ord, x ->> 'id' AS id
                         FROM jsonb_array_elements(v_convs) x) c ON c.id = m.conversation_id
        WHERE m.reason IS NOT NULL OR m.times > 1 OR m.stored_owner <> user_uuid
              OR m.stored_in <> m.conversation_id
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object('conversation_id', p.conversation_id,
                                                 'message_id', p.message_id, 'reason', p.reason)
                              ORDER BY p.ord1, p.ord2), '[]'::jsonb),
           coalesce(array_agg(DISTINCT p.conversation_id) FILTER (WHERE p.conversation_id IS NOT NULL), '{}')
    INTO v_errors, v_bad
    FROM problems p;

    -- Insert-only: new sessions, then the messages they and the existing sessions lack.
    WITH ins AS (
        INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at, last_activity)
        SELECT c ->> 'id', user_uuid, coalesce(c ->> 'title', 'New Chat'),
               coalesce((c ->> 'created_at')::timestamptz, first.ts, now()),
               coalesce((c ->> 'updated_at')::timestamptz, (c ->> 'created_at')::timestamptz, first.ts, now()),
               coalesce((c ->> 'updated_at')::timestamptz, (c ->> 'created_at')::timestamptz, first.ts, now())
        FROM jsonb_array_elements(v_convs) AS c
        LEFT JOIN LATERAL (SELECT min(m.message_timestamp) AS ts FROM unnest(v_msgs) m
                           WHERE m.conversation_id = c ->> 'id') first ON true
        WHERE NOT (c ->> 'id' = ANY (v_bad)) AND NOT (c -> 'exists')::boolean
        ORDER BY c ->> 'id'
        RETURNING 1
    )
    SELECT count(*) INTO v_sessions_inserted FROM ins;

    WITH ins AS (
        INSERT INTO public.chat_messages (id, session_id, role, content, model, total_tokens,
            input_tokens, output_tokens, user_message_id, content_type, elapsed_time,
            completion_id, message_timestamp)
        SELECT m.id, m.conversation_id, m.role, m.content, m.model, m.total_tokens,
               m.input_tokens, m.output_tokens, m.user_message_id, m.content_type, m.elapsed_time,
               m.completion_id, m.message_timestamp
        FROM unnest(v_msgs) AS m
        WHERE NOT m.failed AND NOT (m.conversation_id = ANY (v_bad))
          AND NOT EXISTS (SELECT 1 FROM public.chat_messages x WHERE x.id = m.id)
        ORDER BY m.conversation_id, m.message_timestamp, m.id
        RETURNING 1
    )
    SELECT count(*) INTO v_messages_inserted FROM ins;

    RETURN jsonb_build_object(
        'conversations_received', jsonb_array_length(v_convs),
        'conversations_failed', (SELECT count(*) FROM jsonb_array_elements(v_convs) c
                                 WHERE coalesce(c ->> 'id', '') = '' OR c ->> 'id' = ANY (v_bad)),
        'sessions_inserted', v_sessions_inserted,
        'sessions_existing', (SELECT count(*) FROM jsonb_array_elements(v_convs) c
                              WHERE (c -> 'exists')::boolean AND NOT (c ->> 'id' = ANY (v_bad))),
        'messages_inserted', v_messages_inserted,
        'messages_existing', (SELECT count(*) FROM unnest(v_msgs) m
                              WHERE NOT m.failed AND NOT (m.conversation_id = ANY (v_bad))
                                AND EXISTS (SELECT 1 FROM public.chat_messages x WHERE x.id = m.id))
                             - v_messages_inserted,
        'messages_skipped_failed', (SELECT count(*) FROM unnest(v_msgs) m
                                    WHERE m.failed AND NOT (m.conversation_id = ANY (v_bad))),
        'errors', v_errors
    );
END
$fn$;
COMMENT ON FUNCTION public.sync_user_conversations(uuid, jsonb) IS
    'Insert-only upload of browser conversations (array or {"conversations": [...]}) for one user. '
    'Never updates an existing row; skips failed messages; a conversation with any problem or '
    'owned by someone else is not written at all. Returns a report with an errors list.';

-- The chat API's write after each reply: the user message, the assistant message (linked by
-- user_message_id) and the session, in one statement. A failed attempt is stored with its
-- error_message (p_assistant_message NULL) and counts nothing; the retry that succeeds reuses
-- the user message id, updates that row in place and is counted then, once. Writing the same
-- exchange again changes nothing. Returns {session_created, messages_written}.
CREATE FUNCTION public.write_chat_exchange(
    p_user_id uuid,
    p_session_id text,
    p_user_message jsonb,
    p_assistant_message jsonb DEFAULT NULL,
    p_session_title text DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    v_owner uuid;
    v_user pgchat.parsed_message;
    v_reply pgchat.parsed_message;
    v_rows pgchat.parsed_message[];
    v_bad record;
    v_session_created boolean := false;
    v_written integer;
BEGIN
    PERFORM pgchat.assert_acting_for(p_user_id);
    IF coalesce(btrim(p_session_id), '') = '' THEN
        RAISE EXCEPTION 'write_chat_exchange: p_session_id is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(p_session_title) > 255 THEN
        RAISE EXCEPTION 'write_chat_exchange: title is longer than 255 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(p_user_message) IS DISTINCT FROM 'object'
       OR (p_assistant_message IS NOT NULL AND jsonb_typeof(p_assistant_message) <> 'object') THEN
        RAISE EXCEPTION 'write_chat_exchange: messages must be JSON objects (ChatMessage)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A missing timestamp means "now" for a new message (this is the live path, written right
    -- after the reply) and "unchanged" for one already stored, so that a repeat is a no-op.
    v_user := pgchat.parse_message(p_session_id, 1, jsonb_build_object('role', 'user',
        'timestamp', coalesce((SELECT message_timestamp FROM public.chat_messages
                               WHERE id = p_user_message ->> 'id'), now())) || p_user_message);
    v_rows := ARRAY[v_user];
    IF p_assistant_message IS NOT NULL THEN
        v_reply := pgchat.parse_message(p_session_id, 2, jsonb_build_object('role', 'assistant',
            'timestamp', coalesce((SELECT message_timestamp FROM public.chat_messages
                                   WHERE id = p_assistant_message ->> 'id'), now()),
            'user_message_id', v_user.id) || p_assistant_message);
        v_rows := v_rows || v_reply;
    END IF;
    SELECT r.ord, r.id, coalesce(r.reason, CASE
            WHEN r.ord = 1 AND r.role <> 'user' THEN 'the first message must have role user'
            WHEN r.ord = 2 AND r.role <> 'assistant' THEN 'the reply must have role assistant'
            WHEN r.ord = 2 AND r.user_message_id IS DISTINCT FROM v_user.id
                THEN 'the reply''s user_message_id must be the user message id'
            WHEN r.ord = 2 AND r.id = v_user.id THEN 'the reply needs an id of its own'
            WHEN x.session_id <> p_session_id THEN format('message id already belongs to conversation %s', x.session_id)
        END) AS reason
    INTO v_bad
    FROM unnest(v_rows) r LEFT JOIN public.chat_messages x ON x.id = r.id
    WHERE r.reason IS NOT NULL OR (r.ord = 1 AND r.role <> 'user') OR (r.ord = 2 AND r.role <> 'assistant')
       OR (r.ord = 2 AND (r.user_message_id IS DISTINCT FROM v_user.id OR r.id = v_user.id))
       OR x.session_id <> p_session_id
    ORDER BY r.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'write_chat_exchange: message % : %', coalesce(v_bad.id, '#' || v_bad.ord), v_bad.reason
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The session row is locked (or created) first, so two writes to it queue, not deadlock.
    SELECT user_id INTO v_owner FROM public.chat_sessions WHERE id = p_session_id FOR NO KEY UPDATE;
    IF v_owner IS NULL THEN
        INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at, last_activity)
        VALUES (p_session_id, p_user_id, coalesce(p_session_title, 'New Chat'),
                v_user.message_timestamp, v_user.message_timestamp, v_user.message_timestamp)
        ON CONFLICT (id) DO NOTHING;
        v_session_created := FOUND;
        SELECT user_id INTO v_owner FROM public.chat_sessions WHERE id = p_session_id FOR NO KEY UPDATE;
    END IF;
    IF v_owner <> p_user_id THEN
        RAISE EXCEPTION 'write_chat_exchange: conversation % belongs to another user', p_session_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    WITH written AS (
        INSERT INTO public.chat_messages AS t (id, session_id, role, content, model, total_tokens,
            input_tokens, output_tokens, user_message_id, content_type, elapsed_time,
            completion_id, message_timestamp, error_message)
        SELECT r.id, p_session_id, r.role, r.content, r.model, r.total_tokens, r.input_tokens,
               r.output_tokens, r.user_message_id, r.content_type, r.elapsed_time, r.completion_id,
               r.message_timestamp, r.error_message
        FROM unnest(v_rows) r ORDER BY r.ord
        ON CONFLICT (id) DO UPDATE SET
            content = EXCLUDED.content, model = EXCLUDED.model, total_tokens = EXCLUDED.total_tokens,
            input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
            user_message_id = EXCLUDED.user_message_id, content_type = EXCLUDED.content_type,
            elapsed_time = EXCLUDED.elapsed_time, completion_id = EXCLUDED.completion_id,
            message_timestamp = EXCLUDED.message_timestamp, error_message = EXCLUDED.error_message
        WHERE (t.content, t.model, t.total_tokens, t.input_tokens, t.output_tokens, t.user_message_id,
               t.content_type, t.elapsed_time, t.completion_id, t.message_timestamp, t.error_message)
              IS DISTINCT FROM
              (EXCLUDED.content, EXCLUDED.model, EXCLUDED.total_tokens, EXCLUDED.input_tokens,
               EXCLUDED.output_tokens, EXCLUDED.user_message_id, EXCLUDED.content_type,
               EXCLUDED.elapsed_time, EXCLUDED.completion_id, EXCLUDED.message_timestamp,
               EXCLUDED.error_message)
        RETURNING 1
    )
    SELECT count(*) INTO v_written FROM written;

    RETURN jsonb_build_object('session_created', v_session_created, 'messages_written', v_written);
END
$fn$;
COMMENT ON FUNCTION public.write_chat_exchange(uuid, text, jsonb, jsonb, text) IS
    'Stores one exchange (user message + optional assistant reply, ChatMessage JSON) and creates the '
    'session if new, in one transaction. Idempotent; a failed attempt counts nothing; a successful '
    'retry with the same user message id is counted once.';

-- A title edit: writes (and moves updated_at) only when the title really changes.
CREATE FUNCTION public.update_session_title(p_user_id uuid, p_session_id text, p_title text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    v_owner uuid;
BEGIN
    PERFORM pgchat.assert_acting_for(p_user_id);
    IF coalesce(btrim(p_title), '') = '' OR length(p_title) > 255 THEN
        RAISE EXCEPTION 'update_session_title: the title must have 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT user_id INTO v_owner FROM public.chat_sessions WHERE id = p_session_id;
    IF v_owner IS DISTINCT FROM p_user_id THEN
        -- Same answer whether it does not exist or is someone else's: no probing of ids.
        RAISE EXCEPTION 'update_session_title: no conversation % for this user', p_session_id
            USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE public.chat_sessions SET title = p_title
    WHERE id = p_session_id AND title IS DISTINCT FROM p_title;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION public.update_session_title(uuid, text, text) IS
    'Renames a conversation; returns false (and writes nothing) when the title is unchanged.';

-- Least privilege. Supabase grants EXECUTE on new functions in public to anon, authenticated
-- and service_role, and PUBLIC has it by default: take it all back, then grant what is meant.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgchat FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION
    public.sync_user_conversations(uuid, jsonb),
    public.write_chat_exchange(uuid, text, jsonb, jsonb, text),
    public.update_session_title(uuid, text, text),
    public.log_user_activity(uuid, varchar, varchar, text, jsonb),
    public.handle_user_profile_sync(),
    public.update_updated_at_column()
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    public.sync_user_conversations(uuid, jsonb),
    public.write_chat_exchange(uuid, text, jsonb, jsonb, text),
    public.update_session_title(uuid, text, text)
TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.log_user_activity(uuid, varchar, varchar, text, jsonb) TO service_role;
