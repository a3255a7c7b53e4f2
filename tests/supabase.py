"""Hosted Supabase's permission model, in the test server (no Supabase needed).

On hosted Supabase the role that runs migrations, `postgres`, is not a superuser:
NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS, a member of anon, authenticated and
service_role. Schema `auth` belongs to `supabase_admin`, its tables and functions to
`supabase_auth_admin`, of which `postgres` is not a member (images hardened in 2025): it holds
TRIGGER (plus SELECT and REFERENCES) on auth.users, and so may create a trigger there but not
drop one. The test server's superuser is already called `postgres`, so the migration role here
is MIGRATOR, set up exactly like Supabase's `postgres`.

`install_roles` runs once per server (roles are cluster-wide); `install_platform` once per
database, as the superuser, before anything of the app; `allow_migrator` once per database
clone (CREATE on a database is not copied by CREATE DATABASE ... TEMPLATE).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

MIGRATOR = "supabase_postgres"
AUTH_ADMIN = "supabase_auth_admin"
ADMIN = "supabase_admin"

_ROLES = f"""
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ADMIN}') THEN
        CREATE ROLE {ADMIN} NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{AUTH_ADMIN}') THEN
        CREATE ROLE {AUTH_ADMIN} NOLOGIN NOINHERIT CREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{MIGRATOR}') THEN
        CREATE ROLE {MIGRATOR} NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;
    END IF;
END
$roles$;
GRANT anon, authenticated, service_role TO {MIGRATOR};
"""

_PLATFORM = f"""
CREATE SCHEMA auth AUTHORIZATION {ADMIN};
CREATE TABLE auth.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text,
    raw_user_meta_data jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz
);
ALTER TABLE auth.users OWNER TO {AUTH_ADMIN};
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $fn$
    SELECT nullif(coalesce(
        current_setting('request.jwt.claim.sub', true),
        (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')), '')::uuid
$fn$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $fn$
    SELECT nullif(coalesce(
        current_setting('request.jwt.claim.role', true),
        (current_setting('request.jwt.claims', true)::jsonb ->> 'role')), '')::text
$fn$;
ALTER FUNCTION auth.uid() OWNER TO {AUTH_ADMIN};
ALTER FUNCTION auth.role() OWNER TO {AUTH_ADMIN};
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, {AUTH_ADMIN}, {MIGRATOR};
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role() TO anon, authenticated, service_role, {MIGRATOR};
GRANT SELECT, REFERENCES, TRIGGER ON auth.users TO {MIGRATOR};

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT USAGE, CREATE ON SCHEMA public TO {MIGRATOR};
ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO anon, authenticated, service_role;
"""


def install_roles(conn: psycopg.Connection) -> None:
    """The cluster's roles, as Supabase has them (idempotent); commit. Superuser only."""
    conn.execute(_ROLES)
    conn.commit()


def install_platform(conn: psycopg.Connection) -> None:
    """Supabase's auth schema and privileges in the database of `conn`; commit. Superuser only."""
    conn.execute(_PLATFORM)
    allow_migrator(conn)


def allow_migrator(conn: psycopg.Connection) -> None:
    """CREATE on the database for MIGRATOR (schemas pgchat, pgchat_migrations); commit."""
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
        sql.Identifier(conn.info.dbname), sql.Identifier(MIGRATOR)))
    conn.commit()
