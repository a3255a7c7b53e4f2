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
-- (The exact rule, custom JWT roles included: pgchat.assert_acting_for.)
--
-- Ids: a conversation id and a message id (and a reply's user_message_id) are taken without
-- their surrounding spaces (btrim), by all three functions alike: " c1 " and "c1" are the same
-- conversation whichever path wrote it. An id that is empty once trimmed is missing.
--
-- Sizes (why these numbers: above what the app can produce, below what a backend can afford;
-- a backend's memory peaks at about 20-25x the payload it works on):
--   * a message's content at most 2 MB (UTF-8 bytes): the app caps what a user types at 20,000
--     characters (MAX_MESSAGE_CHARS) and a reply is bounded by a model's output limit (128,000
--     tokens at most today, about 0.5 MB of text);
--   * a conversation at most 8 MB of JSON: the app keeps at most 1,000 messages a conversation;
--   * an upload: conversations are taken in payload order up to 16 MB of JSON; those past it are
--     refused one by one ("send it in a later call") while the ones before are written. The app
--     uploads what the browser's localStorage holds, and browsers give an origin about 5 MB
--     there (5 million UTF-16 characters: at most about 15 MB of UTF-8 for non-Latin text);
--   * one call's payload at most 64 MB: refused whole, before any parsing (SQLSTATE 54000).
-- Past a size, the conversation (or the exchange) is refused with a reason naming the field and
-- the limit, and the others of the same upload are still written.
--
-- Where they live: the three run as their owner (SECURITY DEFINER: they write tables users
-- may not write directly), so they live in `pgchat_private`, a schema the API does not expose;
-- `public` holds SECURITY INVOKER functions of the same names and signatures that call them
-- (Supabase's pattern: nothing SECURITY DEFINER is callable through the REST API).
-- depends: 0003_usage_ledger

-- Refuse to act for another user. The caller is the role actually in effect, never what the
-- JWT claims say: the role it switched to (the `role` setting: PostgREST runs SET ROLE from a
-- verified JWT), else the role it logged in as. Both are the caller's inside a SECURITY DEFINER
-- function and in the SECURITY INVOKER function that calls one (current_user is not: in a
-- definer it is the owner).
-- The rule: a role that PostgREST hands to end users acts only as auth.uid(), whatever a claim
-- says otherwise (a claim role `service_role` under SET ROLE authenticated is refused). Those
-- are `anon`, `authenticated` and every role that is a member of either (Supabase's custom JWT
-- roles are created `IN ROLE authenticated`), unless the role is also a member of
-- `service_role`. `service_role`, its members (the login role `postgres` on Supabase,
-- superusers) and every database role that is a member of neither API role act for anyone.
-- The two roles of the live path are decided by name, without a catalog lookup; any other role
-- costs three membership checks (cached by the backend).
-- Returns p_user_id, so that a caller can run it as an assignment: a PL/pgSQL assignment is
-- evaluated as a simple expression, while PERFORM starts the executor (about 10 us a call).
CREATE FUNCTION pgchat.assert_acting_for(p_user_id uuid)
RETURNS uuid LANGUAGE plpgsql STABLE SET search_path = '' AS $fn$
DECLARE
    v_role text := pg_catalog.current_setting('role');
BEGIN
    IF v_role = 'none' THEN
        v_role := session_user::text;
    END IF;
    IF v_role IN ('anon', 'authenticated')
       OR (v_role <> 'service_role'
           AND NOT pg_catalog.pg_has_role(v_role, 'service_role', 'MEMBER')
           AND (pg_catalog.pg_has_role(v_role, 'authenticated', 'MEMBER')
                OR pg_catalog.pg_has_role(v_role, 'anon', 'MEMBER'))) THEN
        IF auth.uid() IS NULL OR auth.uid() IS DISTINCT FROM p_user_id THEN
            RAISE EXCEPTION 'not allowed to act for user %', p_user_id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN p_user_id;
END
$fn$;

-- An ISO 8601 timestamp from JSON, or NULL if it is not one PostgreSQL can read. Checked by
-- pattern and calendar, not by catching a cast error: an exception block per message would
-- cost a subtransaction each (pg_input_is_valid would do, but only from PostgreSQL 16).
-- Without a UTC offset the time is taken as UTC, whatever the session's TimeZone.
CREATE FUNCTION pgchat.json_timestamptz(p_value jsonb)
RETURNS timestamptz LANGUAGE sql IMMUTABLE SET search_path = '' AS $fn$
    SELECT CASE
        WHEN NOT coalesce(t ~ '^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|[+-](0\d|1[0-5])(:?[0-5]\d)?)?)?$', false)
             OR substr(t, 9, 2)::integer > extract(day from make_date(substr(t, 1, 4)::integer,
                    substr(t, 6, 2)::integer, 1) + interval '1 month - 1 day')
            THEN NULL
        WHEN t ~ '(Z|[+-]\d{2}(:?\d{2})?)$' AND t ~ ':' THEN t::timestamptz
        ELSE t::timestamp AT TIME ZONE 'UTC'
    END
    FROM (SELECT CASE WHEN jsonb_typeof(p_value) = 'string' THEN p_value #>> '{}' END AS t) v
$fn$;

-- One message of the frontend's payload (ChatMessage), parsed and checked.
CREATE TYPE pgchat.parsed_message AS (
    conversation_id text, ord bigint, id text, role text, content text, model text,
    total_tokens integer, input_tokens integer, output_tokens integer, user_message_id text,
    content_type text, elapsed_time integer, elapsed_ms integer, completion_id text,
    message_timestamp timestamptz,
    error_message text, failed boolean, reason text
);

-- Parse the messages of conversations ([{"id": ..., "messages": [ChatMessage, ...]}, ...]) in
-- one set-based query: one call for a whole upload, not one per conversation (a call costs
-- more than parsing its one message). The one parser of the frontend's message shape: the
-- exchange (one or two messages) and the upload (thousands) both call it.
-- It returns an array, not a set: the caller assigns it to a variable in a simple expression,
-- without a query of its own around the call and without a tuplestore in between.
-- enable_memoize = off: the planner puts a Memoize node under each LATERAL step, which never
-- hits (every message is a new key) and whose start-up was a third of the cost of parsing
-- the two messages of an exchange.
-- `reason` is NULL for a valid message, else its first problem. A message flagged
-- `error: true` or carrying an error_message is `failed`. Token counts must be integers from 0
-- to 10,000,000 (missing or null is 0; no model has a context window near that, and the cap
-- keeps sums far from integer overflow); total_tokens defaults to input + output.
-- elapsed_time is seconds, from 0 to 10,000,000, and may be fractional (it is rounded); the
-- app's later releases send elapsed_ms (milliseconds, 0 to 2,147,483,647) instead, also taken.
-- Both come out: elapsed_time in seconds (from elapsed_ms when only that was sent) and
-- elapsed_ms (from elapsed_time when only that was sent), for whichever column the table has.
-- A message's content is at most 2 MB (UTF-8 bytes; why: the top of this file).
-- Ids and user_message_id are trimmed of surrounding spaces (the rule: the top of this file).
-- Everything is inline on purpose: a function call per message costs more than the parsing
-- (each call of a function with a pinned search_path saves and restores settings). PL/pgSQL
-- rather than SQL so that the plan is kept between calls (see count_usage in 0003).
-- The timestamp rules are those of pgchat.json_timestamptz, within the time window that
-- chat_messages_timestamp_window (0005) enforces: 2000-01-01 to one day from now (why: 0005).
-- Ids have at most 255 characters (chat_messages_id_length, 0005). STABLE, not IMMUTABLE: the
-- window ends at now() + 1 day.
CREATE FUNCTION pgchat.parse_messages(p_conversations jsonb)
RETURNS pgchat.parsed_message[] LANGUAGE plpgsql STABLE
SET search_path = '' SET enable_memoize = off AS $fn$
BEGIN
    RETURN ARRAY(SELECT ROW(q.*)::pgchat.parsed_message FROM (
    SELECT c.conv ->> 'id', e.ord, f.id, f.role, f.content, f.model,
           coalesce(n.total, n.input + n.output), n.input, n.output, f.user_message_id,
           coalesce(f.content_type, 'text'),
           CASE WHEN coalesce(j.elapsed, 'null'::jsonb) = 'null'::jsonb AND n.elapsed_ms > 0
                THEN round(n.elapsed_ms / 1000.0)::integer ELSE n.elapsed END,
           CASE WHEN n.elapsed_ms >= 0 THEN n.elapsed_ms
                ELSE least(round(coalesce(n.elapsed_exact, 0) * 1000), 2147483647)::integer END,
           f.completion_id, t.ts,
           CASE WHEN coalesce(f.error_message, '') <> '' THEN f.error_message
                WHEN f.error_flag THEN 'failed' END,
           f.error_flag OR coalesce(f.error_message, '') <> '',
           CASE
               WHEN jsonb_typeof(e.doc) <> 'object' THEN format('message #%s is not a JSON object', e.ord)
               WHEN coalesce(f.id, '') = '' THEN format('message #%s has no id', e.ord)
               WHEN length(f.id) > 255
                   THEN format('message id is longer than 255 characters (%s)', length(f.id))
               WHEN NOT coalesce(f.role IN ('user', 'assistant'), false)
                   THEN format('unknown role %s (expected user or assistant)', coalesce(j.role, 'null'::jsonb))
               WHEN f.content IS NULL THEN 'content must be a string'
               WHEN octet_length(f.content) > 2097152
                   THEN format('content is %s bytes, more than the 2 MB (2097152 bytes) a message may hold',
                               octet_length(f.content))
               WHEN j.ts IS NULL THEN 'missing timestamp'
               WHEN t.ts IS NULL THEN format('unparseable timestamp %s', j.ts)
               WHEN t.ts < '2000-01-01 00:00:00+00' OR t.ts > now() + interval '1 day'
                   THEN format('timestamp %s is outside the accepted window (2000-01-01 to one day from now)', j.ts)
               WHEN n.input IS NULL
                   THEN format('input_tokens must be an integer from 0 to 10000000, got %s', j.input)
               WHEN n.output IS NULL
                   THEN format('output_tokens must be an integer from 0 to 10000000, got %s', j.output)
               WHEN n.total IS NULL AND j.total <> 'null'::jsonb
                   THEN format('total_tokens must be an integer from 0 to 10000000, got %s', j.total)
               WHEN n.elapsed IS NULL
                   THEN format('elapsed_time must be a number of seconds from 0 to 10000000, got %s', j.elapsed)
               WHEN n.elapsed_ms IS NULL
                   THEN format('elapsed_ms must be a number of milliseconds from 0 to 2147483647, got %s', j.elapsed_ms)
               WHEN jsonb_typeof(j.content_type) NOT IN ('string', 'null')
                    OR NOT coalesce(coalesce(f.content_type, 'text') IN ('text', 'markdown'), false)
                   THEN format('contentType must be "text" or "markdown", got %s', j.content_type)
               WHEN jsonb_typeof(j.model) NOT IN ('string', 'null') THEN 'model must be a string'
               WHEN length(f.model) > 100 THEN 'model is longer than 100 characters'
               WHEN jsonb_typeof(j.completion_id) NOT IN ('string', 'null') THEN 'completion_id must be a string'
               WHEN length(f.completion_id) > 255 THEN 'completion_id is longer than 255 characters'
               WHEN jsonb_typeof(j.user_message_id) NOT IN ('string', 'null') THEN 'user_message_id must be a string'
               WHEN length(f.user_message_id) > 255 THEN 'user_message_id is longer than 255 characters'
               WHEN jsonb_typeof(j.error) NOT IN ('boolean', 'null') THEN 'error must be true or false'
               WHEN jsonb_typeof(j.error_message) NOT IN ('string', 'null') THEN 'error_message must be a string'
           END
    FROM jsonb_array_elements(p_conversations) AS c(conv)
    CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(c.conv -> 'messages') = 'array'
                                                 THEN c.conv -> 'messages' ELSE '[]'::jsonb END)
        WITH ORDINALITY AS e(doc, ord)
    -- Each field is looked up once.
    CROSS JOIN LATERAL (SELECT
        e.doc -> 'id' AS id, e.doc -> 'role' AS role, e.doc -> 'content' AS content,
        e.doc -> 'model' AS model, e.doc -> 'user_message_id' AS user_message_id,
        e.doc -> 'contentType' AS content_type, e.doc -> 'completion_id' AS completion_id,
        e.doc -> 'error_message' AS error_message, e.doc -> 'error' AS error,
        e.doc -> 'timestamp' AS ts, e.doc -> 'input_tokens' AS input,
        e.doc -> 'output_tokens' AS output, e.doc -> 'total_tokens' AS total,
        e.doc -> 'elapsed_time' AS elapsed, e.doc -> 'elapsed_ms' AS elapsed_ms
        OFFSET 0
    ) j
    CROSS JOIN LATERAL (SELECT
        CASE WHEN jsonb_typeof(j.id) = 'string' THEN btrim(j.id #>> '{}') END AS id,
        j.role #>> '{}' AS role,
        CASE WHEN jsonb_typeof(j.content) = 'string' THEN j.content #>> '{}' END AS content,
        CASE WHEN jsonb_typeof(j.model) = 'string' THEN j.model #>> '{}' END AS model,
        CASE WHEN jsonb_typeof(j.user_message_id) = 'string' THEN btrim(j.user_message_id #>> '{}') END AS user_message_id,
        CASE WHEN jsonb_typeof(j.content_type) = 'string' THEN j.content_type #>> '{}' END AS content_type,
        CASE WHEN jsonb_typeof(j.completion_id) = 'string' THEN j.completion_id #>> '{}' END AS completion_id,
        CASE WHEN jsonb_typeof(j.error_message) = 'string' THEN j.error_message #>> '{}' END AS error_message,
        coalesce(j.error = 'true'::jsonb, false) AS error_flag,
        CASE WHEN jsonb_typeof(j.ts) = 'string' THEN j.ts #>> '{}' END AS ts_text
        OFFSET 0
    ) f
    CROSS JOIN LATERAL (SELECT CASE
        WHEN NOT coalesce(f.ts_text ~ '^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|[+-](0\d|1[0-5])(:?[0-5]\d)?)?)?$', false)
            THEN NULL
        WHEN substr(f.ts_text, 9, 2)::integer > 28
             AND substr(f.ts_text, 9, 2)::integer > extract(day from make_date(substr(f.ts_text, 1, 4)::integer,
                     substr(f.ts_text, 6, 2)::integer, 1) + interval '1 month - 1 day')
            THEN NULL
        WHEN f.ts_text ~ '(Z|[+-]\d{2}(:?\d{2})?)$' AND f.ts_text ~ ':' THEN f.ts_text::timestamptz
        ELSE f.ts_text::timestamp AT TIME ZONE 'UTC'
    END AS ts OFFSET 0) t
    -- A count: missing or null is 0, a non-negative integer that fits is itself, else NULL.
    -- (elapsed_time may be fractional seconds, elapsed_ms fractional milliseconds: rounded.)
    CROSS JOIN LATERAL (SELECT
        CASE WHEN coalesce(j.input, 'null'::jsonb) = 'null'::jsonb THEN 0
             WHEN jsonb_typeof(j.input) = 'number' AND j.input::numeric BETWEEN 0 AND 10000000
                  AND j.input::numeric = trunc(j.input::numeric) THEN j.input::numeric::integer END AS input,
        CASE WHEN coalesce(j.output, 'null'::jsonb) = 'null'::jsonb THEN 0
             WHEN jsonb_typeof(j.output) = 'number' AND j.output::numeric BETWEEN 0 AND 10000000
                  AND j.output::numeric = trunc(j.output::numeric) THEN j.output::numeric::integer END AS output,
        CASE WHEN jsonb_typeof(j.total) = 'number' AND j.total::numeric BETWEEN 0 AND 10000000
                  AND j.total::numeric = trunc(j.total::numeric) THEN j.total::numeric::integer END AS total,
        CASE WHEN coalesce(j.elapsed, 'null'::jsonb) = 'null'::jsonb THEN 0
             WHEN jsonb_typeof(j.elapsed) = 'number' AND j.elapsed::numeric BETWEEN 0 AND 10000000
                  THEN round(j.elapsed::numeric)::integer END AS elapsed,
        CASE WHEN jsonb_typeof(j.elapsed) = 'number' AND j.elapsed::numeric BETWEEN 0 AND 10000000
             THEN j.elapsed::numeric END AS elapsed_exact,
        -- elapsed_ms: -1 when not sent, NULL when not a count of milliseconds that fits
        CASE WHEN coalesce(j.elapsed_ms, 'null'::jsonb) = 'null'::jsonb THEN -1
             WHEN jsonb_typeof(j.elapsed_ms) = 'number' AND j.elapsed_ms::numeric BETWEEN 0 AND 2147483647
                  THEN round(j.elapsed_ms::numeric)::integer END AS elapsed_ms
        OFFSET 0
    ) n
    ) q);
END
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

-- The SECURITY DEFINER implementations' schema. The API roles need USAGE to call them through
-- public's wrappers; nothing else is in it, and PostgREST does not expose it.
CREATE SCHEMA pgchat_private;
COMMENT ON SCHEMA pgchat_private IS
    'pgchat: SECURITY DEFINER implementations behind public''s write functions; not exposed through the API';
REVOKE ALL ON SCHEMA pgchat_private FROM PUBLIC;

-- Lost races. The checks read the database on one snapshot and the INSERTs run on later ones
-- (after waiting for the user's profile lock, for instance), so a row the checks found free
-- may be taken in between. Every row the sync decided to insert must be inserted: the INSERTs
-- run in a block of their own (one subtransaction per call, not per row), and when one comes
-- out short the block is undone and the rows that were taken are looked at again:
--   * taken by another user, or by another conversation of this user: that conversation is
--     refused with the reason the checks would have given, and the others are written again;
--   * taken by this user's own concurrent call, in the same conversation: nothing is written
--     and the caller is told to retry (40001): the retry finds them stored.
-- Never a message silently left out and counted as existing.
CREATE FUNCTION pgchat_private.sync_user_conversations(user_uuid uuid, conversations_data jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    v_list jsonb;
    v_convs jsonb;          -- [{ord, id, title, created_at, updated_at, exists, stored_tokens, parse, reason}]
    v_msgs pgchat.parsed_message[];
    v_errors jsonb;
    v_bad jsonb;            -- {conversation id: true} of every conversation with a problem
    v_stored jsonb;         -- {message id: true} of the messages stored already, where they belong
    v_late jsonb;           -- the problems of rows taken between the checks and the INSERTs
    v_attempts integer := 0;
    v_lost text;            -- a conversation a concurrent call wrote or deleted meanwhile
    v_wanted integer;
    v_have integer;
    v_mine text;            -- a row this call inserted (its xmin tells ours from the others)
    v_sessions_inserted integer := 0;
    v_messages_inserted integer := 0;
BEGIN
    PERFORM pgchat.assert_acting_for(user_uuid);
    IF user_uuid IS NULL OR NOT EXISTS (SELECT 1 FROM public.profiles WHERE id = user_uuid) THEN
        RAISE EXCEPTION 'unknown user %', coalesce(user_uuid::text, 'null') USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF pg_catalog.pg_column_size(conversations_data) > 67108864 THEN
        RAISE EXCEPTION 'sync_user_conversations: the upload is % bytes, more than the 64 MB (67108864 bytes) one call accepts; nothing was written',
            pg_catalog.pg_column_size(conversations_data)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'send the conversations in several calls';
    END IF;
    v_list := pgchat.conversation_list(conversations_data);

    -- Conversations: shape, fields, size, duplicates in the payload, ownership in the database.
    -- The bounds (id length, time window) are those of the CHECK constraints of 0005. A
    -- conversation past a size limit is not parsed at all (`parse` false): the point of the
    -- limits is what parsing costs.
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'ord', c.ord, 'id', c.id, 'title', c.title, 'created_at', c.created_at,
        'updated_at', c.updated_at, 'exists', c.owner IS NOT NULL, 'stored_tokens', c.stored_tokens,
        'parse', c.bytes <= 8388608 AND c.running_bytes <= 16777216,
        'reason', CASE
            WHEN jsonb_typeof(c.doc) <> 'object' THEN format('conversation #%s is not a JSON object', c.ord)
            WHEN coalesce(c.id, '') = '' THEN format('conversation #%s has no id', c.ord)
            WHEN length(c.id) > 255
                THEN format('conversation id is longer than 255 characters (%s)', length(c.id))
            WHEN c.times > 1 THEN 'conversation id appears more than once in the payload'
            WHEN c.owner IS NOT NULL AND c.owner <> user_uuid THEN 'conversation id already belongs to another user'
            WHEN c.bytes > 8388608
                THEN format('the conversation is %s bytes of JSON, more than the 8 MB (8388608 bytes) one conversation may have',
                            c.bytes)
            WHEN c.running_bytes > 16777216
                THEN 'the upload passes 16 MB (16777216 bytes) of JSON with this conversation: nothing of it was written, send it again in a later call'
            WHEN c.doc ? 'messages' AND jsonb_typeof(c.doc -> 'messages') NOT IN ('array')
                THEN 'messages must be an array'
            WHEN c.doc ? 'title' AND jsonb_typeof(c.doc -> 'title') NOT IN ('string', 'null') THEN 'title must be a string'
            WHEN length(c.title) > 255 THEN 'title is longer than 255 characters'
            WHEN c.doc ? 'createdAt' AND c.doc -> 'createdAt' <> 'null'::jsonb AND c.created_at IS NULL
                THEN format('unparseable createdAt %s', c.doc -> 'createdAt')
            WHEN c.doc ? 'updatedAt' AND c.doc -> 'updatedAt' <> 'null'::jsonb AND c.updated_at IS NULL
                THEN format('unparseable updatedAt %s', c.doc -> 'updatedAt')
            WHEN NOT c.created_at BETWEEN '2000-01-01 00:00:00+00' AND now() + interval '1 day'
                THEN format('createdAt %s is outside the accepted window (2000-01-01 to one day from now)',
                            c.doc -> 'createdAt')
            WHEN NOT c.updated_at BETWEEN '2000-01-01 00:00:00+00' AND now() + interval '1 day'
                THEN format('updatedAt %s is outside the accepted window (2000-01-01 to one day from now)',
                            c.doc -> 'updatedAt')
        END) ORDER BY c.ord), '[]'::jsonb)
    INTO v_convs
    FROM (
        SELECT e.ord, e.doc, CASE WHEN jsonb_typeof(e.doc -> 'id') = 'string' THEN btrim(e.doc ->> 'id') END AS id,
               CASE WHEN jsonb_typeof(e.doc -> 'title') = 'string' THEN e.doc ->> 'title' END AS title,
               CASE WHEN e.doc ? 'createdAt' THEN pgchat.json_timestamptz(e.doc -> 'createdAt') END AS created_at,
               CASE WHEN e.doc ? 'updatedAt' THEN pgchat.json_timestamptz(e.doc -> 'updatedAt') END AS updated_at,
               s.user_id AS owner, coalesce(s.total_tokens, 0) AS stored_tokens,
               pg_catalog.pg_column_size(e.doc) AS bytes,
               sum(pg_catalog.pg_column_size(e.doc)) OVER (ORDER BY e.ord) AS running_bytes,
               count(*) OVER (PARTITION BY CASE WHEN jsonb_typeof(e.doc -> 'id') = 'string'
                                                THEN btrim(e.doc ->> 'id') END) AS times
        FROM jsonb_array_elements(v_list) WITH ORDINALITY AS e(doc, ord)
        LEFT JOIN public.chat_sessions s ON s.id = btrim(e.doc ->> 'id') AND jsonb_typeof(e.doc -> 'id') = 'string'
    ) c;

    -- Messages of the conversations that have an id (and are not too large to parse).
    v_msgs := pgchat.parse_messages((
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', c ->> 'id', 'messages', v_list -> ((c ->> 'ord')::integer - 1) -> 'messages')), '[]')
        FROM jsonb_array_elements(v_convs) AS c
        WHERE c ->> 'id' <> '' AND (c -> 'parse')::boolean));

    -- Every problem, one row each: conversation-level, message-level, ownership of message ids,
    -- and a conversation whose token total would pass what chat_sessions.total_tokens holds.
    -- The messages stored already in their own conversation are noted (v_stored): those are
    -- the only ones the INSERT below leaves out, whatever it finds meanwhile.
    WITH convs AS (
        SELECT (x ->> 'ord')::bigint AS ord, x ->> 'id' AS id, (x ->> 'stored_tokens')::bigint AS stored_tokens
        FROM jsonb_array_elements(v_convs) x
    ), msg AS (
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
        FROM msg m JOIN convs c ON c.id = m.conversation_id
        WHERE m.reason IS NOT NULL OR m.times > 1 OR m.stored_owner <> user_uuid
              OR m.stored_in <> m.conversation_id
        UNION ALL
        SELECT c.id, NULL, format('the conversation would hold %s tokens, more than the 2147483647 it can',
                                  t.tokens + c.stored_tokens), c.ord, 0
        FROM (SELECT m.conversation_id, sum(m.total_tokens) AS tokens FROM msg m
              WHERE NOT m.failed AND m.stored_in IS NULL GROUP BY m.conversation_id) t
        JOIN convs c ON c.id = t.conversation_id
        WHERE t.tokens + c.stored_tokens > 2147483647
    )
    SELECT (SELECT coalesce(jsonb_agg(jsonb_build_object('conversation_id', p.conversation_id,
                                                         'message_id', p.message_id, 'reason', p.reason)
                                      ORDER BY p.ord1, p.ord2), '[]'::jsonb) FROM problems p),
           (SELECT coalesce(jsonb_object_agg(p.conversation_id, true) FILTER (WHERE p.conversation_id IS NOT NULL),
                            '{}'::jsonb) FROM problems p),
           (SELECT coalesce(jsonb_object_agg(m.id, true), '{}'::jsonb) FROM msg m
            WHERE m.stored_in = m.conversation_id AND m.stored_owner = user_uuid)
    INTO v_errors, v_bad, v_stored;

    -- The writes, in a block that a lost race undoes (see above the function); at most a few
    -- rounds, each of which refuses at least one more conversation.
    <<attempt>>
    LOOP
        v_attempts := v_attempts + 1;
        IF v_attempts > 5 THEN
            RAISE EXCEPTION 'sync_user_conversations: concurrent calls kept taking the ids of this upload; nothing was written, retry is safe'
                USING ERRCODE = 'serialization_failure';
        END IF;
        BEGIN
            -- Insert-only: the existing sessions are locked against deletion (FOR KEY SHARE
            -- does not conflict with the triggers' FOR NO KEY UPDATE, so the lock order stays
            -- the one of lock_in_order), then new sessions, then the messages they and the
            -- existing sessions lack. v_bad and v_stored are JSON objects so that each
            -- membership test is a binary search, not a scan of an array (which made large
            -- payloads with many problems quadratic).
            -- (Counts are compared, not rows joined: the planner cannot know how many rows a
            -- CTE over a JSON array holds, and a join of two of them became a nested loop,
            -- quadratic.)
            WITH want AS (
                SELECT c ->> 'id' AS id FROM jsonb_array_elements(v_convs) AS c
                WHERE (c -> 'exists')::boolean AND NOT v_bad ? (c ->> 'id')
            ), locked AS (
                SELECT s.id FROM public.chat_sessions s
                WHERE s.id IN (SELECT w.id FROM want w) AND s.user_id = user_uuid
                ORDER BY s.id FOR KEY SHARE
            )
            SELECT (SELECT count(*) FROM want), (SELECT count(*) FROM locked) INTO v_wanted, v_have;
            IF v_have < v_wanted THEN
                SELECT min(c ->> 'id') INTO v_lost FROM jsonb_array_elements(v_convs) AS c
                WHERE (c -> 'exists')::boolean AND NOT v_bad ? (c ->> 'id')
                  AND NOT EXISTS (SELECT 1 FROM public.chat_sessions s WHERE s.id = c ->> 'id' AND s.user_id = user_uuid);
                RAISE EXCEPTION 'sync_user_conversations: conversation % was deleted by a concurrent call; nothing was written, retry is safe',
                    v_lost USING ERRCODE = 'serialization_failure';
            END IF;

            -- A new session starts at its createdAt, else at its first message (one GROUP BY
            -- for all conversations: a per-conversation scan of the messages made this quadratic).
            WITH firsts AS (
                SELECT m.conversation_id, min(m.message_timestamp) AS ts FROM unnest(v_msgs) AS m
                GROUP BY m.conversation_id
            ), wanted AS (
                SELECT c ->> 'id' AS id, coalesce(c ->> 'title', 'New Chat') AS title,
                       (c ->> 'created_at')::timestamptz AS created_at,
                       (c ->> 'updated_at')::timestamptz AS updated_at, f.ts AS first_ts
                FROM jsonb_array_elements(v_convs) AS c
                LEFT JOIN firsts f ON f.conversation_id = c ->> 'id'
                WHERE c ->> 'reason' IS NULL AND coalesce(c ->> 'id', '') <> ''
                  AND NOT v_bad ? (c ->> 'id') AND NOT (c -> 'exists')::boolean
            ), ins AS (
                INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at, last_activity)
                SELECT w.id, user_uuid, w.title, coalesce(w.created_at, w.first_ts, now()),
                       coalesce(w.updated_at, w.created_at, w.first_ts, now()),
                       coalesce(w.updated_at, w.created_at, w.first_ts, now())
                FROM wanted w
                ORDER BY w.id
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            )
            SELECT (SELECT count(*) FROM wanted), (SELECT count(*) FROM ins), (SELECT min(i.id) FROM ins i)
            INTO v_wanted, v_sessions_inserted, v_mine;
            IF v_sessions_inserted < v_wanted THEN
                -- Taken by another user meanwhile: that conversation is refused, as the checks
                -- would have refused it.
                SELECT jsonb_agg(jsonb_build_object('conversation_id', c ->> 'id', 'message_id', NULL,
                                                    'reason', 'conversation id already belongs to another user')
                                 ORDER BY (c ->> 'ord')::bigint)
                INTO v_late
                FROM jsonb_array_elements(v_convs) AS c
                JOIN public.chat_sessions s ON s.id = c ->> 'id'
                WHERE c ->> 'reason' IS NULL AND NOT v_bad ? (c ->> 'id') AND NOT (c -> 'exists')::boolean
                  AND s.user_id <> user_uuid;
                IF v_late IS NOT NULL THEN
                    RAISE EXCEPTION USING ERRCODE = 'PGC01';  -- handled below: refuse, write the rest again
                END IF;
                -- Created by this user's concurrent call: name one that is not ours (rows we
                -- wrote share an xmin).
                SELECT min(c ->> 'id') INTO v_lost FROM jsonb_array_elements(v_convs) AS c
                JOIN public.chat_sessions s ON s.id = c ->> 'id'
                WHERE c ->> 'reason' IS NULL AND NOT v_bad ? (c ->> 'id') AND NOT (c -> 'exists')::boolean
                  AND s.xmin IS DISTINCT FROM (SELECT x.xmin FROM public.chat_sessions x WHERE x.id = v_mine);
                RAISE EXCEPTION 'sync_user_conversations: conversation % was created by a concurrent call; nothing was written, retry is safe',
                    v_lost USING ERRCODE = 'serialization_failure';
            END IF;

            -- Every message the checks found free, none left out: a message taken meanwhile
            -- makes the INSERT come out short (ON CONFLICT DO NOTHING) and is dealt with below.
            WITH wanted AS (
                SELECT m.* FROM unnest(v_msgs) AS m
                WHERE NOT m.failed AND NOT v_bad ? m.conversation_id AND NOT v_stored ? m.id
            ), ins AS (
                INSERT INTO public.chat_messages (id, session_id, role, content, model, total_tokens,
                    input_tokens, output_tokens, user_message_id, content_type,
                    elapsed_time,  -- pgchat:elapsed (the column this table has: below the function)
                    completion_id, message_timestamp)
                SELECT m.id, m.conversation_id, m.role, m.content, m.model, m.total_tokens,
                       m.input_tokens, m.output_tokens, m.user_message_id, m.content_type,
                       m.elapsed_time,  -- pgchat:elapsed
                       m.completion_id, m.message_timestamp
                FROM wanted AS m
                ORDER BY m.conversation_id, m.message_timestamp, m.id
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            )
            SELECT (SELECT count(*) FROM wanted), (SELECT count(*) FROM ins) INTO v_wanted, v_messages_inserted;
            IF v_messages_inserted < v_wanted THEN
                -- Taken by another user, or by another conversation: that conversation is
                -- refused with the reason the checks would have given.
                SELECT jsonb_agg(jsonb_build_object('conversation_id', m.conversation_id, 'message_id', m.id,
                           'reason', CASE WHEN s.user_id IS DISTINCT FROM user_uuid
                                          THEN 'message id already belongs to another user'
                                          ELSE format('message id already belongs to conversation %s', x.session_id) END)
                           ORDER BY m.conversation_id, m.ord)
                INTO v_late
                FROM unnest(v_msgs) AS m
                JOIN public.chat_messages x ON x.id = m.id
                LEFT JOIN public.chat_sessions s ON s.id = x.session_id
                WHERE NOT m.failed AND NOT v_bad ? m.conversation_id AND NOT v_stored ? m.id
                  AND (x.session_id <> m.conversation_id OR s.user_id IS DISTINCT FROM user_uuid);
                IF v_late IS NOT NULL THEN
                    RAISE EXCEPTION USING ERRCODE = 'PGC01';  -- handled below
                END IF;
                RAISE EXCEPTION 'sync_user_conversations: % message(s) of this upload were written by a concurrent call; nothing was written, retry is safe',
                    v_wanted - v_messages_inserted USING ERRCODE = 'serialization_failure';
            END IF;
            EXIT attempt;
        EXCEPTION WHEN SQLSTATE 'PGC01' THEN
            -- Everything of this round is undone; the conversations of v_late are refused.
            v_errors := v_errors || v_late;
            v_bad := v_bad || (SELECT jsonb_object_agg(e ->> 'conversation_id', true)
                               FROM jsonb_array_elements(v_late) AS e);
            v_late := NULL;
            v_sessions_inserted := 0;
            v_messages_inserted := 0;
        END;
    END LOOP;

    RETURN jsonb_build_object(
        'conversations_received', jsonb_array_length(v_convs),
        'conversations_failed', (SELECT count(*) FROM jsonb_array_elements(v_convs) c
                                 WHERE coalesce(c ->> 'id', '') = '' OR v_bad ? (c ->> 'id')),
        'sessions_inserted', v_sessions_inserted,
        'sessions_existing', (SELECT count(*) FROM jsonb_array_elements(v_convs) c
                              WHERE (c -> 'exists')::boolean AND NOT v_bad ? (c ->> 'id')),
        'messages_inserted', v_messages_inserted,
        'messages_existing', (SELECT count(*) FROM unnest(v_msgs) m
                              WHERE NOT m.failed AND NOT v_bad ? m.conversation_id AND v_stored ? m.id),
        'messages_skipped_failed', (SELECT count(*) FROM unnest(v_msgs) m
                                    WHERE m.failed AND NOT v_bad ? m.conversation_id),
        'errors', v_errors
    );
END
$fn$;
COMMENT ON FUNCTION pgchat_private.sync_user_conversations(uuid, jsonb) IS
    'Insert-only upload of browser conversations (array or {"conversations": [...]}) for one user. '
    'Never updates an existing row; skips failed messages; a conversation with any problem or '
    'owned by someone else is not written at all. Returns a report with an errors list.';

-- The chat API's write after each reply: the user message, the assistant message (linked by
-- user_message_id) and the session, in one statement. A failed attempt is stored with its
-- error_message (p_assistant_message NULL) and counts nothing; the retry that succeeds reuses
-- the user message id, updates that row in place and is counted then, once. Writing the same
-- exchange again changes nothing. Returns {session_created, messages_written}.
-- This is the path every chat message takes, so it runs as few statements as it can: checks
-- on values are PL/pgSQL expressions (no executor), and the live case (new messages in an
-- existing conversation) runs three statements: the session's owner, the parser's query and
-- the INSERT. Messages stored already (a retry, a repeat) are checked after the INSERT has
-- skipped them; an error then undoes everything the call wrote, as any error does.
CREATE FUNCTION pgchat_private.write_chat_exchange(
    p_user_id uuid,
    p_session_id text,
    p_user_message jsonb,
    p_assistant_message jsonb DEFAULT NULL,
    p_session_title text DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = '' SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_acting uuid;
    v_session_id text := btrim(p_session_id);  -- ids without surrounding spaces, as the sync
    v_seen uuid;            -- the session's owner (NULL: no such session yet)
    v_owner uuid;           -- the same, once locked
    v_user_message jsonb := p_user_message;
    v_assistant_message jsonb := p_assistant_message;
    v_rows pgchat.parsed_message[];
    v_count integer;
    v_reason text;
    v_bad record;
    v_session_created boolean := false;
    v_written integer;
    v_updated integer;
BEGIN
    v_acting := pgchat.assert_acting_for(p_user_id);
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION 'write_chat_exchange: unknown user null' USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF coalesce(v_session_id, '') = '' THEN
        RAISE EXCEPTION 'write_chat_exchange: p_session_id is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(v_session_id) > 255 THEN  -- chat_sessions_id_length (0005)
        RAISE EXCEPTION 'write_chat_exchange: conversation id is longer than 255 characters (%)', length(v_session_id)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(p_session_title) > 255 THEN
        RAISE EXCEPTION 'write_chat_exchange: title is longer than 255 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(p_user_message) IS DISTINCT FROM 'object'
       OR (p_assistant_message IS NOT NULL AND jsonb_typeof(p_assistant_message) <> 'object') THEN
        RAISE EXCEPTION 'write_chat_exchange: messages must be JSON objects (ChatMessage)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The session's owner, twice in one statement: as this statement's snapshot shows it, and
    -- once locked. Like every write path, this one writes its rows first and the triggers then
    -- lock profile and sessions in pgchat.lock_in_order's order (FOR NO KEY UPDATE). The one
    -- lock taken before, FOR KEY SHARE on the session, conflicts with neither: it only holds off
    -- a DELETE of the session until this transaction ends. A session that was there and is gone
    -- once locked was deleted by a concurrent call: a lost race, and nothing is written (below).
    SELECT (SELECT s.user_id FROM public.chat_sessions s WHERE s.id = v_session_id),
           (SELECT s.user_id FROM public.chat_sessions s WHERE s.id = v_session_id FOR KEY SHARE)
    INTO v_seen, v_owner;
    -- Another user's conversation: refused before anything else is looked at.
    IF v_seen <> p_user_id OR v_owner <> p_user_id THEN
        RAISE EXCEPTION 'write_chat_exchange: conversation % belongs to another user', v_session_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- A missing timestamp means "now" for a new message (this is the live path, written right
    -- after the reply) and "unchanged" for one already stored, so that a repeat is a no-op.
    IF NOT p_user_message ? 'timestamp' THEN
        v_user_message := jsonb_build_object('timestamp', coalesce((SELECT message_timestamp FROM public.chat_messages
                              WHERE id = btrim(p_user_message ->> 'id')), now())) || p_user_message;
    END IF;
    IF NOT p_assistant_message ? 'timestamp' THEN
        v_assistant_message := jsonb_build_object('timestamp', coalesce((SELECT message_timestamp FROM public.chat_messages
                                   WHERE id = btrim(p_assistant_message ->> 'id')), now())) || p_assistant_message;
    END IF;
    v_rows := pgchat.parse_messages(jsonb_build_array(jsonb_build_object('id', v_session_id, 'messages',
        CASE WHEN p_assistant_message IS NULL
             THEN jsonb_build_array(jsonb_build_object('role', 'user') || v_user_message)
             ELSE jsonb_build_array(jsonb_build_object('role', 'user') || v_user_message,
                                    jsonb_build_object('role', 'assistant', 'user_message_id', p_user_message ->> 'id')
                                    || v_assistant_message) END)));
    v_count := cardinality(v_rows);
    -- The first problem, if any: the parser's, then the shape of an exchange.
    FOR i IN 1 .. v_count LOOP
        v_reason := coalesce(v_rows[i].reason, CASE
            WHEN i = 1 AND v_rows[1].role <> 'user' THEN 'the first message must have role user'
            WHEN i = 2 AND v_rows[2].role <> 'assistant' THEN 'the reply must have role assistant'
            WHEN i = 2 AND v_rows[2].id = v_rows[1].id THEN 'the reply needs an id of its own'
            WHEN i = 2 AND v_rows[2].user_message_id IS DISTINCT FROM v_rows[1].id
                THEN 'the reply''s user_message_id must be the user message id' END);
        IF v_reason IS NOT NULL THEN
            RAISE EXCEPTION 'write_chat_exchange: conversation %, message %: %', v_session_id,
                coalesce(nullif(v_rows[i].id, ''), '#' || i), v_reason
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;

    -- A new conversation. A session deleted since the first look, or one created by someone else
    -- meanwhile, is a lost race: nothing is written and the caller is told so, instead of the
    -- raw foreign-key error (23503) the messages would get.
    IF v_owner IS NULL AND v_seen IS NULL THEN
        -- Only a new conversation needs the user looked up: an existing one of p_user_id
        -- proves the profile exists (its foreign key). The sync's words and SQLSTATE (23503).
        IF NOT EXISTS (SELECT 1 FROM public.profiles WHERE id = p_user_id) THEN
            RAISE EXCEPTION 'write_chat_exchange: unknown user %', p_user_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at, last_activity)
        VALUES (v_session_id, p_user_id, coalesce(p_session_title, 'New Chat'),
                v_rows[1].message_timestamp, v_rows[1].message_timestamp, v_rows[1].message_timestamp)
        ON CONFLICT (id) DO NOTHING;
        v_session_created := FOUND;
        SELECT user_id INTO v_owner FROM public.chat_sessions WHERE id = v_session_id FOR KEY SHARE;
    END IF;
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'write_chat_exchange: conversation % was deleted by a concurrent call; nothing was written, retry is safe',
            v_session_id USING ERRCODE = 'serialization_failure';
    END IF;
    IF v_owner <> p_user_id THEN  -- created by someone else since the first look
        RAISE EXCEPTION 'write_chat_exchange: conversation % belongs to another user', v_session_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    -- New messages (the live case) are inserted; ON CONFLICT DO NOTHING, not DO UPDATE, so that
    -- the insert fires only the INSERT trigger (DO UPDATE fires the UPDATE trigger as well,
    -- even when it updates nothing).
    INSERT INTO public.chat_messages AS t (id, session_id, role, content, model, total_tokens,
        input_tokens, output_tokens, user_message_id, content_type,
        elapsed_time,  -- pgchat:elapsed (the column this table has: below the function)
        completion_id, message_timestamp, error_message)
    SELECT r.id, v_session_id, r.role, r.content, r.model, r.total_tokens, r.input_tokens,
           r.output_tokens, r.user_message_id, r.content_type,
           r.elapsed_time,  -- pgchat:elapsed
           r.completion_id, r.message_timestamp, r.error_message
    FROM unnest(v_rows) r
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS v_written = ROW_COUNT;
    IF v_written = v_count THEN
        RETURN jsonb_build_object('session_created', v_session_created, 'messages_written', v_written);
    END IF;

    -- Messages stored already (a retry, a repeat, or a concurrent call's: the INSERT waited for
    -- it and this statement sees it). One may be written again only as itself: same
    -- conversation, same role, and for a reply the same question it answers. The lookups are
    -- LATERAL so that they use the primary keys whatever the size of the tables.
    SELECT r.ord, r.id, CASE
            WHEN o.user_id <> p_user_id THEN 'message id already belongs to another user'
            WHEN x.session_id <> v_session_id
                THEN format('message id already belongs to conversation %s', x.session_id)
            WHEN x.role <> r.role THEN format('message id already belongs to a %s message', x.role)
            ELSE 'message id already belongs to the reply to another message'
        END AS reason, coalesce(o.user_id <> p_user_id, false) AS is_foreign
    INTO v_bad
    FROM unnest(v_rows) AS r
    CROSS JOIN LATERAL (SELECT x.session_id, x.role, x.user_message_id
                        FROM public.chat_messages x WHERE x.id = r.id) x
    LEFT JOIN LATERAL (SELECT o.user_id FROM public.chat_sessions o WHERE o.id = x.session_id) o ON true
    WHERE o.user_id <> p_user_id OR x.session_id <> v_session_id OR x.role <> r.role
       OR (r.ord = 2 AND x.user_message_id IS DISTINCT FROM r.user_message_id)
    ORDER BY r.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'write_chat_exchange: conversation %, message %: %', v_session_id, v_bad.id, v_bad.reason
            USING ERRCODE = CASE WHEN v_bad.is_foreign THEN 'insufficient_privilege'
                                 ELSE 'invalid_parameter_value' END;
    END IF;
    -- Updated in place where they changed (checked above; checked again here). A message
    -- counted already (stored without an error) keeps its timestamp: it was booked on that
    -- timestamp's date, and a retry (whose missing timestamp means "now" to a new message) must
    -- not move it, nor report a write that changed nothing else. A failed attempt's row takes
    -- the retry's timestamp: it is booked now, on that date.
    UPDATE public.chat_messages t SET
        content = r.content, model = r.model, total_tokens = r.total_tokens,
        input_tokens = r.input_tokens, output_tokens = r.output_tokens,
        user_message_id = r.user_message_id, content_type = r.content_type,
        elapsed_time = r.elapsed_time,  -- pgchat:elapsed
        completion_id = r.completion_id,
        message_timestamp = CASE WHEN coalesce(t.error_message, '') = '' THEN t.message_timestamp
                                 ELSE r.message_timestamp END,
        error_message = r.error_message
    FROM unnest(v_rows) r
    WHERE t.id = r.id AND t.session_id = v_session_id AND t.role = r.role
      AND (t.content, t.model, t.total_tokens, t.input_tokens, t.output_tokens, t.user_message_id,
           t.content_type,
           t.elapsed_time,  -- pgchat:elapsed
           t.completion_id, t.message_timestamp, t.error_message)
          IS DISTINCT FROM
          (r.content, r.model, r.total_tokens, r.input_tokens, r.output_tokens, r.user_message_id,
           r.content_type,
           r.elapsed_time,  -- pgchat:elapsed
           r.completion_id,
           CASE WHEN coalesce(t.error_message, '') = '' THEN t.message_timestamp ELSE r.message_timestamp END,
           r.error_message);
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    RETURN jsonb_build_object('session_created', v_session_created, 'messages_written', v_written + v_updated);
END
$fn$;
COMMENT ON FUNCTION pgchat_private.write_chat_exchange(uuid, text, jsonb, jsonb, text) IS
    'Stores one exchange (user message + optional assistant reply, ChatMessage JSON) and creates the '
    'session if new, in one transaction. Idempotent; a failed attempt counts nothing; a successful '
    'retry with the same user message id is counted once.';

-- The app's later releases renamed chat_messages.elapsed_time (seconds) to elapsed_ms
-- (milliseconds). The two functions above are written for elapsed_time; on a table that has
-- the other column, or both, or neither, each is created again here with the lines marked
-- `pgchat:elapsed` written for what the table has: elapsed_ms (the parser's elapsed_ms, in
-- milliseconds), both, or none (the time is then not stored). The payload keeps elapsed_time
-- (seconds) and may send elapsed_ms instead (parse_messages). Decided once, at migration time:
-- a column renamed later needs `pgchat migrate` to run this again (rollback 0004, migrate).
-- elapsed:begin
DO $elapsed$
DECLARE
    v_has_seconds boolean;
    v_has_ms boolean;
    v_columns text[];
    v_assign text;          -- `a.elapsed_time = b.elapsed_time,` becomes ...
    v_ref text;             -- `a.elapsed_time,` and `elapsed_time,` become ...
    v_def text;
    r record;
BEGIN
    SELECT coalesce(bool_or(a.attname = 'elapsed_time'), false), coalesce(bool_or(a.attname = 'elapsed_ms'), false)
    INTO v_has_seconds, v_has_ms
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = 'public.chat_messages'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname IN ('elapsed_time', 'elapsed_ms');
    IF v_has_seconds AND NOT v_has_ms THEN
        RETURN;  -- as written
    END IF;
    v_columns := CASE WHEN v_has_seconds THEN ARRAY['@seconds@', 'elapsed_ms']
                      WHEN v_has_ms THEN ARRAY['elapsed_ms'] ELSE ARRAY[]::text[] END;
    SELECT coalesce(string_agg(format('\1%1$s = \2%1$s,', c), ' '), ''),
           coalesce(string_agg(format('\1%s,', c), ' '), '')
    INTO v_assign, v_ref
    FROM unnest(v_columns) AS c;
    FOR r IN SELECT p.oid FROM pg_catalog.pg_proc p
             WHERE p.oid IN ('pgchat_private.sync_user_conversations(uuid, jsonb)'::regprocedure,
                             'pgchat_private.write_chat_exchange(uuid, text, jsonb, jsonb, text)'::regprocedure)
    LOOP
        SELECT string_agg(CASE WHEN l.line ~ '-- pgchat:elapsed' THEN
                   replace(regexp_replace(regexp_replace(l.line,
                       '(\m\w+\.)?elapsed_time\s*=\s*(\m\w+\.)?elapsed_time\M\s*,', v_assign, 'g'),
                       '(\m\w+\.)?elapsed_time\M\s*,', v_ref, 'g'), '@seconds@', 'elapsed_time')
                   ELSE l.line END, E'\n' ORDER BY l.n)
        INTO v_def
        FROM unnest(string_to_array(pg_catalog.pg_get_functiondef(r.oid), E'\n')) WITH ORDINALITY AS l(line, n);
        EXECUTE v_def;
    END LOOP;
    RAISE NOTICE 'pgchat: chat_messages has %; the sync and the exchange write %',
        CASE WHEN v_has_ms AND v_has_seconds THEN 'elapsed_time and elapsed_ms' WHEN v_has_ms THEN 'elapsed_ms'
             ELSE 'neither elapsed_time nor elapsed_ms' END,
        CASE WHEN v_has_ms AND v_has_seconds THEN 'both (seconds and milliseconds)'
             WHEN v_has_ms THEN 'elapsed_ms (milliseconds)' ELSE 'no elapsed time' END;
END
$elapsed$;
-- elapsed:end

-- A title edit: writes (and moves updated_at) only when the title really changes.
CREATE FUNCTION pgchat_private.update_session_title(p_user_id uuid, p_session_id text, p_title text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $fn$
DECLARE
    v_owner uuid;
    v_session_id text;
BEGIN
    PERFORM pgchat.assert_acting_for(p_user_id);
    v_session_id := btrim(p_session_id);  -- ids without surrounding spaces, as everywhere
    IF coalesce(btrim(p_title), '') = '' OR length(p_title) > 255 THEN
        RAISE EXCEPTION 'update_session_title: the title must have 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT user_id INTO v_owner FROM public.chat_sessions WHERE id = v_session_id;
    IF v_owner IS DISTINCT FROM p_user_id THEN
        -- Same answer whether it does not exist or is someone else's: no probing of ids.
        RAISE EXCEPTION 'update_session_title: no conversation % for this user', v_session_id
            USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE public.chat_sessions SET title = p_title
    WHERE id = v_session_id AND title IS DISTINCT FROM p_title;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION pgchat_private.update_session_title(uuid, text, text) IS
    'Renames a conversation; returns false (and writes nothing) when the title is unchanged.';

-- The API's entry points: SECURITY INVOKER, so that nothing in the exposed schema runs with
-- the owner's rights (splinter 0029); each calls its implementation in pgchat_private.
-- The identity check sees the request as before: in the wrapper current_user is the caller's
-- role; in the implementation current_user becomes the owner, while session_user (the login
-- role), the `role` setting (what PostgREST's SET ROLE set) and the JWT claims are unchanged.
-- The app may already have functions of these names and signatures (production has its own
-- sync_user_conversations): pgchat owns them from here on. Each is saved for the rollback,
-- dropped and created anew, so that a different parameter name or return type cannot fail
-- the migration half-way.
DO $take_over$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.oid, p.oid::regprocedure::text AS name
             FROM pg_catalog.pg_proc p
             WHERE p.oid IN (pg_catalog.to_regprocedure('public.sync_user_conversations(uuid, jsonb)'),
                             pg_catalog.to_regprocedure('public.write_chat_exchange(uuid, text, jsonb, jsonb, text)'),
                             pg_catalog.to_regprocedure('public.update_session_title(uuid, text, text)'))
    LOOP
        INSERT INTO pgchat_migrations.replaced_objects (migration_id, kind, name, definition)
        VALUES ('0004_sync_and_exchange', 'function', r.name, pg_catalog.pg_get_functiondef(r.oid));
        EXECUTE format('DROP FUNCTION %s', r.name);
        RAISE NOTICE 'pgchat: replaces the app''s function % (saved for rollback)', r.name;
    END LOOP;
END
$take_over$;

CREATE FUNCTION public.sync_user_conversations(user_uuid uuid, conversations_data jsonb)
RETURNS jsonb LANGUAGE sql SECURITY INVOKER SET search_path = '' AS $fn$
    SELECT pgchat_private.sync_user_conversations(user_uuid, conversations_data)
$fn$;
COMMENT ON FUNCTION public.sync_user_conversations(uuid, jsonb) IS
    'Insert-only upload of browser conversations (array or {"conversations": [...]}) for one user. '
    'Never updates an existing row; skips failed messages; a conversation with any problem or '
    'owned by someone else is not written at all. Returns a report with an errors list. '
    'Runs pgchat_private.sync_user_conversations.';

CREATE FUNCTION public.write_chat_exchange(
    p_user_id uuid,
    p_session_id text,
    p_user_message jsonb,
    p_assistant_message jsonb DEFAULT NULL,
    p_session_title text DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql SECURITY INVOKER SET search_path = '' AS $fn$
BEGIN
    -- PL/pgSQL, not SQL: the live path. Before PostgreSQL 18 a SQL function that cannot be
    -- inlined (a pinned search_path prevents it) plans its body again on every call.
    RETURN pgchat_private.write_chat_exchange(p_user_id, p_session_id, p_user_message,
                                              p_assistant_message, p_session_title);
END
$fn$;
COMMENT ON FUNCTION public.write_chat_exchange(uuid, text, jsonb, jsonb, text) IS
    'Stores one exchange (user message + optional assistant reply, ChatMessage JSON) and creates the '
    'session if new, in one transaction. Idempotent; a failed attempt counts nothing; a successful '
    'retry with the same user message id is counted once. Runs pgchat_private.write_chat_exchange.';

CREATE FUNCTION public.update_session_title(p_user_id uuid, p_session_id text, p_title text)
RETURNS boolean LANGUAGE sql SECURITY INVOKER SET search_path = '' AS $fn$
    SELECT pgchat_private.update_session_title(p_user_id, p_session_id, p_title)
$fn$;
COMMENT ON FUNCTION public.update_session_title(uuid, text, text) IS
    'Renames a conversation; returns false (and writes nothing) when the title is unchanged. '
    'Runs pgchat_private.update_session_title.';

-- Least privilege. Supabase grants EXECUTE on new functions in public to anon, authenticated
-- and service_role, and PUBLIC has it by default: take it all back, then grant what is meant.
-- A role that calls the API functions needs EXECUTE on the wrapper and on its implementation
-- (and USAGE on pgchat_private): grant a backend role both, or neither.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgchat FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgchat_private FROM PUBLIC, anon, authenticated, service_role;
GRANT USAGE ON SCHEMA pgchat_private TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    pgchat_private.sync_user_conversations(uuid, jsonb),
    pgchat_private.write_chat_exchange(uuid, text, jsonb, jsonb, text),
    pgchat_private.update_session_title(uuid, text, text)
TO authenticated, service_role;
REVOKE ALL ON FUNCTION
    public.sync_user_conversations(uuid, jsonb),
    public.write_chat_exchange(uuid, text, jsonb, jsonb, text),
    public.update_session_title(uuid, text, text)
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    public.sync_user_conversations(uuid, jsonb),
    public.write_chat_exchange(uuid, text, jsonb, jsonb, text),
    public.update_session_title(uuid, text, text)
TO authenticated, service_role;

-- The profile helpers 0002 created on an empty database are pgchat's: least privilege for them
-- too. The app's own functions of those names (an adopted database) are not pgchat's and keep
-- their grants (`pgchat risks` reports what they expose).
DO $helpers$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure::text AS name, p.proname
             FROM pg_catalog.pg_proc p
             WHERE p.oid IN (pg_catalog.to_regprocedure('public.log_user_activity(uuid, varchar, varchar, text, jsonb)'),
                             pg_catalog.to_regprocedure('public.handle_user_profile_sync()'),
                             pg_catalog.to_regprocedure('public.update_updated_at_column()'))
               AND pg_catalog.obj_description(p.oid, 'pg_proc') = 'pgchat: created by 0002_baseline'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated, service_role', r.name);
        IF r.proname = 'log_user_activity' THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', r.name);
        END IF;
    END LOOP;
END
$helpers$;
