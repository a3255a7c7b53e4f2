-- Remove the stand-in, and only the stand-in: a real Supabase auth schema has no pgchat comment.
-- Refuses when auth.users holds rows. Roles are cluster-wide and may serve other databases: kept.

DO $standin$
DECLARE
    v_rows bigint;
BEGIN
    IF pg_catalog.obj_description(pg_catalog.to_regnamespace('auth'), 'pg_namespace')
       IS DISTINCT FROM 'pgchat stand-in for Supabase auth' THEN
        RAISE NOTICE 'pgchat: auth schema is not the stand-in; left untouched';
        RETURN;
    END IF;
    SELECT count(*) INTO v_rows FROM auth.users;
    IF v_rows > 0 THEN
        RAISE EXCEPTION 'refusing to drop auth.users: it holds % rows', v_rows
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'delete the users first if you really mean to remove the stand-in';
    END IF;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE EXECUTE ON FUNCTIONS FROM anon, authenticated, service_role;
    REVOKE USAGE ON SCHEMA public FROM anon, authenticated, service_role;
    DROP SCHEMA auth CASCADE;
END
$standin$;
