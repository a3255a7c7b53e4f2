-- Supabase stand-in: on a database without Supabase, provide the small part of Supabase that
-- pgchat's schema relies on: the roles anon / authenticated / service_role, auth.users, and
-- auth.uid() / auth.role() / auth.jwt() reading the request's JWT claims exactly as Supabase does.
-- Where an `auth` schema already exists (a real Supabase project) nothing of it is touched; the
-- stand-in is marked by a comment on the schema so that its rollback never drops a real one.
-- depends:

DO $standin$
BEGIN
    -- Roles are cluster-wide: create what is missing, never alter what exists.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;

    IF pg_catalog.to_regnamespace('auth') IS NOT NULL THEN
        RAISE NOTICE 'pgchat: Supabase auth schema found; it is left untouched';
        RETURN;
    END IF;

    CREATE SCHEMA auth;
    COMMENT ON SCHEMA auth IS 'pgchat stand-in for Supabase auth';

    CREATE TABLE auth.users (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        email text,
        raw_user_meta_data jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        last_sign_in_at timestamptz
    );

    -- Same definitions as Supabase: the claims come from request.jwt.claim.* or request.jwt.claims.
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE SET search_path = '' AS $fn$
        SELECT nullif(coalesce(
            pg_catalog.current_setting('request.jwt.claim.sub', true),
            (pg_catalog.current_setting('request.jwt.claims', true)::jsonb ->> 'sub')
        ), '')::uuid
    $fn$;
    CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $fn$
        SELECT nullif(coalesce(
            pg_catalog.current_setting('request.jwt.claim.role', true),
            (pg_catalog.current_setting('request.jwt.claims', true)::jsonb ->> 'role')
        ), '')::text
    $fn$;
    CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $fn$
        SELECT coalesce(
            nullif(pg_catalog.current_setting('request.jwt.claim', true), ''),
            nullif(pg_catalog.current_setting('request.jwt.claims', true), '')
        )::jsonb
    $fn$;

    GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;

    -- Supabase's defaults: the API roles may use public, RLS decides what they see.
    GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO anon, authenticated, service_role;

    RAISE NOTICE 'pgchat: no Supabase auth schema; installed the stand-in (auth.users, auth.uid(), roles)';
END
$standin$;
