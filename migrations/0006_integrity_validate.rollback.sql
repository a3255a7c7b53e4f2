-- Back to what 0005 left: each constraint 0006 validated becomes NOT VALID again (dropped and
-- added back with the same definition and comment; no scan, a brief ACCESS EXCLUSIVE lock).

DO $unvalidate$
DECLARE
    v_con record;
BEGIN
    FOR v_con IN
        SELECT c.conname::text AS name, c.conrelid::regclass::text AS tbl,
               pg_catalog.pg_get_constraintdef(c.oid) AS def,
               pg_catalog.obj_description(c.oid, 'pg_constraint') AS note
        FROM pg_catalog.pg_constraint c
        WHERE c.conrelid IN ('public.chat_messages'::regclass, 'public.chat_sessions'::regclass)
          AND c.contype = 'c' AND c.convalidated
          AND c.conname IN ('chat_messages_id_length', 'chat_messages_counts_range',
                            'chat_messages_timestamp_window', 'chat_sessions_id_length',
                            'chat_sessions_counts_range', 'chat_sessions_timestamp_window')
        ORDER BY 2, 1
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s NOT VALID',
                       v_con.tbl, v_con.name, v_con.name, v_con.def);
        EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', v_con.name, v_con.tbl, v_con.note);
    END LOOP;
END
$unvalidate$;
