"""Supabase's advisor (splinter) on pgchat's database: the checks of sql/advisor.sql.

A freshly migrated database gives no finding at all, on pgchat's objects or anyone else's.
Each check is shown able to fail: the test creates an object that breaks its rule and sees
the check name it. `advisor_findings(conn, owned_only=True)` is what an adopted database is
held to: findings on the app's own objects are not pgchat's to fix.
"""

from __future__ import annotations

import psycopg
import pytest

from pgchat import migrate, risks
from pgchat.risks import ADVISOR_CHECKS, advisor_findings
from tests.conftest import SupabaseDb

GRANT_API = " GRANT ALL ON {} TO anon, authenticated;"

# lint -> (statements creating an offending object, the object's schema.name it must report)
OFFENDERS: dict[str, tuple[str, str]] = {
    "unindexed_foreign_keys": (
        "CREATE TABLE public.t_parent (id int PRIMARY KEY);"
        " CREATE TABLE public.t_child (id int PRIMARY KEY, parent int REFERENCES public.t_parent);"
        " CREATE INDEX ON public.t_child (id, parent);",  # parent not leading: still unindexed
        "public.t_child"),
    "auth_users_exposed": (
        "CREATE VIEW public.v_users AS SELECT id, email FROM auth.users;"
        + GRANT_API.format("public.v_users"),
        "public.v_users"),
    "auth_rls_initplan": (
        "CREATE TABLE public.t_notes (id uuid PRIMARY KEY, owner uuid);"
        " ALTER TABLE public.t_notes ENABLE ROW LEVEL SECURITY;"
        " CREATE POLICY own ON public.t_notes FOR SELECT TO authenticated"
        "   USING (owner = (SELECT auth.uid()) OR id = auth.uid());",  # one of two unwrapped
        "public.t_notes"),
    "no_primary_key": ("CREATE TABLE public.t_nopk (x int);", "public.t_nopk"),
    "multiple_permissive_policies": (
        "CREATE TABLE public.t_two (id int PRIMARY KEY);"
        " ALTER TABLE public.t_two ENABLE ROW LEVEL SECURITY;"
        " CREATE POLICY a ON public.t_two FOR SELECT TO authenticated USING (id > 0);"
        " CREATE POLICY b ON public.t_two FOR ALL TO authenticated USING (id < 10);",
        "public.t_two"),
    "policy_exists_rls_disabled": (
        "CREATE TABLE public.t_off (id int PRIMARY KEY);"
        " CREATE POLICY p ON public.t_off FOR SELECT USING (id > 0);",
        "public.t_off"),
    "rls_enabled_no_policy": (
        "CREATE TABLE pgchat.t_closed (id int PRIMARY KEY);"
        " ALTER TABLE pgchat.t_closed ENABLE ROW LEVEL SECURITY;",
        "pgchat.t_closed"),
    "duplicate_index": (
        "CREATE INDEX chat_messages_dup1 ON public.chat_messages (session_id, message_timestamp);"
        " CREATE INDEX chat_messages_dup2 ON public.chat_messages (session_id, message_timestamp);",
        "public.chat_messages"),
    "security_definer_view": (
        "CREATE VIEW public.v_totals AS SELECT count(*) AS n FROM public.chat_sessions;"
        + GRANT_API.format("public.v_totals"),
        "public.v_totals"),
    "function_search_path_mutable": (
        "CREATE FUNCTION pgchat.f_loose() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        "pgchat.f_loose()"),
    "rls_disabled_in_public": (
        "CREATE TABLE public.t_open (id int PRIMARY KEY);" + GRANT_API.format("public.t_open"),
        "public.t_open"),
    "extension_in_public": ("CREATE EXTENSION citext SCHEMA public;", "public.citext"),
    "rls_references_user_metadata": (
        "CREATE POLICY meta ON public.chat_sessions FOR SELECT TO authenticated"
        "   USING ((SELECT auth.jwt()) -> 'user_metadata' ->> 'role' = 'admin');",
        "public.chat_sessions"),
    "materialized_view_in_api": (
        "CREATE MATERIALIZED VIEW public.mv_counts AS"
        " SELECT count(*) AS n FROM public.chat_messages;"
        + GRANT_API.format("public.mv_counts"),
        "public.mv_counts"),
    "foreign_table_in_api": (
        "CREATE FOREIGN DATA WRAPPER t_fdw; CREATE SERVER t_srv FOREIGN DATA WRAPPER t_fdw;"
        " CREATE FOREIGN TABLE public.t_remote (x int) SERVER t_srv;"
        + GRANT_API.format("public.t_remote"),
        "public.t_remote"),
    "unsupported_reg_types": (
        "CREATE TABLE public.t_reg (id int PRIMARY KEY, f regprocedure);", "public.t_reg"),
    "fkey_to_auth_unique": (
        "CREATE UNIQUE INDEX t_users_email ON auth.users (email);"
        " CREATE TABLE public.t_by_email (email text PRIMARY KEY REFERENCES auth.users (email));",
        "public.t_by_email"),
    "rls_policy_always_true": (
        "CREATE POLICY anyone_edits ON public.chat_messages FOR UPDATE TO authenticated"
        "   USING (true);",
        "public.chat_messages"),
    "anon_security_definer_function_executable": (
        "CREATE FUNCTION public.f_open() RETURNS int LANGUAGE sql SECURITY DEFINER"
        "   SET search_path = '' AS 'SELECT 1';"
        " GRANT EXECUTE ON FUNCTION public.f_open() TO anon;",
        "public.f_open()"),
    "authenticated_security_definer_function_executable": (
        # Today's shape before the split: the API function itself ran as its owner.
        "ALTER FUNCTION public.sync_user_conversations(uuid, jsonb) SECURITY DEFINER;",
        "public.sync_user_conversations(uuid, jsonb)"),
}


def named(findings: list[risks.AdvisorFinding]) -> set[str]:
    return {f"{f.schema}.{f.name}" for f in findings}


def test_a_freshly_migrated_database_gives_no_finding_at_all(db: psycopg.Connection) -> None:
    assert advisor_findings(db, owned_only=False) == []


def test_every_check_is_shown_able_to_fail() -> None:
    assert set(OFFENDERS) == set(ADVISOR_CHECKS)
    assert len(ADVISOR_CHECKS) >= 20


@pytest.mark.parametrize("lint", OFFENDERS)
def test_the_check_reports_an_offending_object(db: psycopg.Connection, lint: str) -> None:
    statements, offender = OFFENDERS[lint]
    assert offender not in named(advisor_findings(db, owned_only=False, checks=[lint]))
    db.execute(statements)
    found = advisor_findings(db, owned_only=False, checks=[lint])
    assert offender in named(found), f"{lint} missed {offender}: {found}"
    assert {f.lint for f in found} == {lint}
    assert all(f.level in ("ERROR", "WARN", "INFO") and f.detail for f in found)


def test_owned_only_reports_what_pgchat_owns_and_leaves_the_apps_objects(
        db: psycopg.Connection) -> None:
    db.execute(OFFENDERS["function_search_path_mutable"][0])  # in pgchat: owned
    db.execute("CREATE FUNCTION public.app_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    db.execute(OFFENDERS["rls_policy_always_true"][0])  # on chat_messages: owned
    db.execute(OFFENDERS["no_primary_key"][0])  # an app table
    everything = named(advisor_findings(db, owned_only=False))
    owned = named(advisor_findings(db))
    assert {"pgchat.f_loose()", "public.app_helper()", "public.chat_messages",
            "public.t_nopk"} <= everything
    assert owned == {"pgchat.f_loose()", "public.chat_messages"}


def test_exposing_pgchat_private_would_be_a_finding(db: psycopg.Connection) -> None:
    # The SECURITY DEFINER implementations are clean only because the API does not expose
    # their schema: the checks read PostgREST's own setting when it is there.
    db.execute("select set_config('pgrst.db_schemas', 'public, pgchat_private', true)")
    assert risks.exposed_schemas(db) == ["public", "pgchat_private"]
    found = advisor_findings(db, checks=["authenticated_security_definer_function_executable"])
    assert named(found) == {
        "pgchat_private.sync_user_conversations(uuid, jsonb)",
        "pgchat_private.update_session_title(uuid, text, text)",
        "pgchat_private.write_chat_exchange(uuid, text, jsonb, jsonb, text)",
    }
    db.rollback()
    assert risks.exposed_schemas(db) == ["public", "graphql_public"]
    assert advisor_findings(db) == []


def test_auth_rls_initplan_counts_each_call(db: psycopg.Connection) -> None:
    # Wrapped once and called bare once: still evaluated per row (splinter's pattern match
    # would pass this policy; counting calls does not).
    db.execute(OFFENDERS["auth_rls_initplan"][0])
    assert named(advisor_findings(db, owned_only=False, checks=["auth_rls_initplan"])) \
        == {"public.t_notes"}


def test_an_adopted_legacy_database_is_clean_after_migrate(legacy_db: psycopg.Connection,
                                                           legacy_dsn: str) -> None:
    before = {(f.lint, f"{f.schema}.{f.name}") for f in advisor_findings(legacy_db)}
    assert {
        ("authenticated_security_definer_function_executable",
         "public.sync_user_conversations(uuid, jsonb)"),
        ("anon_security_definer_function_executable",
         "public.sync_user_conversations(uuid, jsonb)"),
        ("function_search_path_mutable", "public.update_session_stats()"),
        ("auth_rls_initplan", "public.chat_sessions"),
        ("security_definer_view", "public.api_user_summary"),
    } <= before
    legacy_db.rollback()
    migrate.migrate(legacy_dsn)
    assert advisor_findings(legacy_db) == []
    # What is left belongs to the app (pgchat tolerates it; `pgchat risks` reports it).
    left = advisor_findings(legacy_db, owned_only=False)
    assert all(not risks.is_owned(f.schema, f.name, f.kind) for f in left)


def test_the_adopted_production_database_is_clean_as_the_migration_role(prod: SupabaseDb) -> None:
    # The 7c23e21 fixture on Supabase's permission model, migrated as the non-superuser role.
    before = {(f.lint, f"{f.schema}.{f.name}") for f in advisor_findings(prod.admin)}
    assert ("authenticated_security_definer_function_executable",
            "public.sync_user_conversations(uuid, jsonb)") in before
    prod.admin.commit()
    migrate.migrate(prod.dsn)
    assert advisor_findings(prod.admin) == []
    left = advisor_findings(prod.admin, owned_only=False)
    assert left, "the app's own functions are tolerated, not fixed: the advisor still sees them"
    assert all(not risks.is_owned(f.schema, f.name, f.kind) for f in left)


def test_a_fresh_supabase_database_migrated_as_the_migration_role_is_clean(
        supabase_migrated: SupabaseDb) -> None:
    assert advisor_findings(supabase_migrated.admin) == []
    assert advisor_findings(supabase_migrated.admin, owned_only=False) == []
