"""Adopting the production database, one case at a time.

The `prod` fixture is the app's schema at commit 7c23e21 (sql/legacy/prod_7c23e21.sql) on
Supabase's permission model, filled through its own `sync_user_conversations` three times (so
its counters say 3x the truth, on the day of the sync). Every migration here runs as the
non-superuser migration role (tests/supabase.py), never as the superuser.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgchat.chat as chat
from pgchat import migrate
from pgchat.cli import main
from pgchat.errors import MigrationError
from tests import legacy_data
from tests.conftest import SupabaseDb
from tests.helpers import table_counts, usage_days, usage_drift, usage_state, usage_stats
from tests.supabase import MIGRATOR

DumpSchema = Callable[..., str]
PGCHAT_POLICIES = {("chat_messages", "messages_owner_all"), ("chat_sessions", "sessions_owner_all"),
                   ("user_usage_daily", "usage_owner_select"),
                   ("user_usage_daily", "usage_owner_insert"),
                   ("user_usage_daily", "usage_owner_update")}
PGCHAT_TRIGGERS = {
    ("chat_messages", "_000_skip_noop_update"), ("chat_messages", "_400_follow_rename"),
    ("chat_messages", "_500_session_stats_delete"),
    ("chat_messages", "_500_session_stats_insert"), ("chat_messages", "_500_session_stats_update"),
    ("chat_sessions", "_000_guard_statistics_insert"),
    ("chat_sessions", "_000_guard_statistics_update"),
    ("chat_sessions", "_000_skip_noop_update"), ("chat_sessions", "_100_keep_counted"),
    ("chat_sessions", "_400_follow_move"), ("chat_sessions", "_500_count_session_created"),
    ("chat_sessions", "on_session_updated"),
}
PROFILE_TRIGGERS = {("profiles", "_900_forget_usage"),
                    ("profiles", "_000_guard_usage_stats_insert"),
                    ("profiles", "_000_guard_usage_stats_update")}


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def adopt(db: SupabaseDb) -> list[str]:
    """`pgchat migrate` as the migration role; the NOTICE lines it printed."""
    db.admin.commit()
    notes: list[str] = []
    migrate.migrate(db.dsn, progress=notes.append)
    return notes


def policies(conn: psycopg.Connection, tables: tuple[str, ...]) -> set[tuple[str, str]]:
    rows = conn.execute("select tablename, policyname from pg_policies where schemaname = 'public'"
                        " and tablename = any(%s)", (list(tables),)).fetchall()
    conn.commit()
    return {(r[0], r[1]) for r in rows}


def triggers(conn: psycopg.Connection, *tables: str) -> set[tuple[str, str]]:
    rows = conn.execute("select tgrelid::regclass::text, tgname from pg_trigger"
                        " where not tgisinternal and tgrelid = any(%s::regclass[])",
                        ([f"public.{t}" for t in tables],)).fetchall()
    conn.commit()
    return {(r[0].removeprefix("public."), r[1]) for r in rows}


def as_user(conn: psycopg.Connection, user_id: uuid.UUID) -> None:
    """The rest of this transaction runs as `authenticated` with the user's JWT claims."""
    conn.execute("set local role authenticated")
    conn.execute("select set_config('request.jwt.claims', %s, true)",
                 (json.dumps({"sub": str(user_id), "role": "authenticated"}),))


# --- the 7c23e21 fixture, adopted ---------------------------------------------------------------


def test_the_fixture_is_production_at_7c23e21(prod: SupabaseDb) -> None:
    """What the adoption tests start from: the real shapes, and counters 3x inflated."""
    conn = prod.admin
    columns = conn.execute("select count(*) from pg_attribute where attrelid ="
                           " 'public.api_user_summary'::regclass and attnum > 0").fetchone()
    assert columns == (16,)
    assert ("model_access", "All authenticated users can view model access") in policies(
        conn, ("model_access",))
    messages = conn.execute("select sum(messages_sent + messages_received)"
                            " from user_usage_daily").fetchone()
    assert messages == (3 * 60,)  # 60 stored messages, each counted on every one of 3 syncs
    owner = conn.execute("select relowner::regrole::text from pg_class"
                         " where oid = 'public.chat_messages'::regclass").fetchone()
    assert owner == (MIGRATOR,)


def test_adoption_keeps_every_row(prod: SupabaseDb, legacy: legacy_data.LegacyData) -> None:
    conn = prod.admin
    message_columns = ("id, session_id, role, content, model, total_tokens, input_tokens,"
                       " output_tokens, user_message_id, message_timestamp, error_message,"
                       " metadata")
    before = (table_counts(conn),
              conn.execute(f"select {message_columns} from chat_messages order by id").fetchall(),
              conn.execute("select id, user_id, title, created_at from chat_sessions"
                           " order by id").fetchall(),
              conn.execute("select * from model_access order by id").fetchall())
    adopt(prod)
    after = (table_counts(conn),
             conn.execute(f"select {message_columns} from chat_messages order by id").fetchall(),
             conn.execute("select id, user_id, title, created_at from chat_sessions"
                          " order by id").fetchall(),
             conn.execute("select * from model_access order by id").fetchall())
    assert after == before
    assert before[0]["public.chat_messages"] == len(legacy.messages)


def test_adoption_leaves_no_legacy_policy_or_per_row_trigger_on_owned_tables(
        prod: SupabaseDb) -> None:
    adopt(prod)
    assert policies(prod.admin, ("chat_sessions", "chat_messages", "user_usage_daily")) \
        == PGCHAT_POLICIES
    assert triggers(prod.admin, "chat_sessions", "chat_messages") == PGCHAT_TRIGGERS


def test_adoption_leaves_what_pgchat_does_not_own(prod: SupabaseDb) -> None:
    """model_access, system_*, profiles' policies and triggers, the app's functions: unchanged."""
    conn = prod.admin
    kept = ("model_access", "system_cache", "system_stats", "profiles", "user_activity_log")
    other_policies = policies(conn, kept)
    other_triggers = triggers(conn, *kept)
    functions = conn.execute(
        "select p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)) from pg_proc p"
        " where pronamespace = 'public'::regnamespace and proname not in"
        " ('track_user_usage', 'update_session_stats', 'update_session_timestamp',"
        "  'sync_user_conversations') order by 1").fetchall()
    conn.commit()
    adopt(prod)
    assert policies(conn, kept) == other_policies
    assert triggers(conn, *kept) == other_triggers | PROFILE_TRIGGERS
    after = conn.execute(
        "select p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)) from pg_proc p"
        " where pronamespace = 'public'::regnamespace and proname not in"
        " ('track_user_usage', 'update_session_stats', 'update_session_timestamp',"
        "  'sync_user_conversations', 'write_chat_exchange', 'update_session_title')"
        " order by 1").fetchall()
    assert after == functions


def test_the_view_keeps_its_16_columns_and_runs_with_the_callers_rights(prod: SupabaseDb) -> None:
    conn = prod.admin
    before = conn.execute("select pg_get_viewdef('public.api_user_summary'::regclass)").fetchone()
    conn.commit()
    adopt(prod)
    assert conn.execute("select pg_get_viewdef('public.api_user_summary'::regclass)"
                        ).fetchone() == before
    options = conn.execute("select reloptions from pg_class"
                           " where oid = 'public.api_user_summary'::regclass").fetchone()
    assert options is not None and "security_invoker=on" in (options[0] or [])


def test_verify_reports_the_inflation_and_rebuild_repairs_it(
        prod: SupabaseDb, legacy: legacy_data.LegacyData) -> None:
    adopt(prod)
    verify = run("usage", "verify", "--dsn", prod.dsn)
    assert verify.exit_code == 1, verify.output
    assert "messages_sent" in verify.output
    rebuild = run("usage", "rebuild", "--yes", "--dsn", prod.dsn)
    assert rebuild.exit_code == 0, rebuild.output
    assert run("usage", "verify", "--dsn", prod.dsn).exit_code == 0
    for (user_id, day), truth in legacy.expected_daily_usage().items():
        counted = usage_days(prod.admin, user_id)[day]
        assert (counted["messages_sent"], counted["messages_received"], counted["input_tokens"],
                counted["output_tokens"], counted["sessions_created"], counted["models_used"]) == (
            truth.messages_sent, truth.messages_received, truth.input_tokens,
            truth.output_tokens, truth.sessions_created, truth.models_used)
    # The legacy rows of the sync day (3x everything, on the wrong date) are zeroed.
    total = prod.admin.execute("select sum(messages_sent + messages_received)"
                               " from user_usage_daily").fetchone()
    assert total == (sum(t.messages_sent + t.messages_received
                         for t in legacy.expected_daily_usage().values()),)


def test_a_resync_after_adoption_counts_nothing(
        prod: SupabaseDb, legacy: legacy_data.LegacyData) -> None:
    adopt(prod)
    assert run("usage", "rebuild", "--yes", "--dsn", prod.dsn).exit_code == 0
    with psycopg.connect(prod.dsn) as conn:
        before = [usage_state(conn, u.id) for u in legacy.users]
        conn.commit()
        for user in legacy.users:  # the frontend of 7c23e21 uploads everything again
            legacy_data.prod_sync(conn, user.id, legacy_data.prod_sync_payload(legacy, user.id))
        assert [usage_state(conn, u.id) for u in legacy.users] == before
        assert usage_drift(conn) == []


def test_new_users_conversations_and_exchanges_are_counted_exactly(
        prod: SupabaseDb, legacy: legacy_data.LegacyData) -> None:
    adopt(prod)
    assert run("usage", "rebuild", "--yes", "--dsn", prod.dsn).exit_code == 0
    carol = uuid.uuid4()
    prod.admin.execute("insert into auth.users (id, email, raw_user_meta_data)"
                       " values (%s, 'carol@example.com', '{}')", (carol,))  # Supabase Auth
    prod.admin.commit()
    with psycopg.connect(prod.dsn) as conn:
        assert usage_stats(conn, carol)["total_messages"] == 0  # the app's own sign-up trigger
        conversation = [{"id": "carol-1", "title": "First", "messages": [
            {"id": "carol-1-q", "role": "user", "content": "hi", "input_tokens": 5,
             "timestamp": "2025-08-01T10:00:00Z"},
            {"id": "carol-1-a", "role": "assistant", "content": "hello", "output_tokens": 9,
             "model": "openai/gpt-4o-mini", "user_message_id": "carol-1-q",
             "timestamp": "2025-08-01T10:00:05Z"}]}]
        as_user(conn, carol)
        chat.sync_user_conversations(conn, carol, conversation)
        conn.commit()
        as_user(conn, carol)
        chat.sync_user_conversations(conn, carol, conversation)  # uploaded again
        conn.commit()
        as_user(conn, carol)
        chat.write_chat_exchange(
            conn, carol, "carol-2",
            {"id": "carol-2-q", "role": "user", "content": "again?", "input_tokens": 3,
             "timestamp": "2025-08-02T09:00:00Z"},
            {"id": "carol-2-a", "role": "assistant", "content": "yes", "output_tokens": 4,
             "model": "openai/gpt-4o-mini", "user_message_id": "carol-2-q",
             "timestamp": "2025-08-02T09:00:02Z"}, "Second")
        conn.commit()
        stats = usage_stats(conn, carol)
        assert (stats["total_messages"], stats["total_tokens"],
                stats["sessions_created"]) == (4, 21, 2)
        days = usage_days(conn, carol)
        assert {d.isoformat(): (v["messages_sent"], v["messages_received"], v["sessions_created"])
                for d, v in days.items()} == {"2025-08-01": (1, 1, 1), "2025-08-02": (1, 1, 1)}
        assert usage_drift(conn) == []


def test_dry_run_lists_what_adoption_will_do_and_changes_nothing(
        prod: SupabaseDb, dump_schema: DumpSchema) -> None:
    prod.admin.commit()
    before = dump_schema(prod.admin_dsn)
    result = run("migrate", "--dry-run", "--dsn", prod.dsn)
    assert result.exit_code == 0, result.output
    out = result.output
    for line in (
        'drops policy "Users can insert their own usage" on public.user_usage_daily',
        'drops policy "Users can view their own chat sessions" on public.chat_sessions',
        "creates policy usage_owner_select on public.user_usage_daily",
        "keeps view public.api_user_summary (16 columns) and sets security_invoker = on",
        "detaches trigger on_message_change on public.chat_messages",
        "detaches trigger on_session_updated on public.chat_sessions",
        "leaves function public.cleanup_old_data(integer) in place",
        "drops legacy function public.track_user_usage(uuid,integer,integer,integer,integer,"
        "character varying,boolean,integer)",
        "adds column public.user_usage_daily.active_seconds",
        "takes the 58 successful message(s) and 3 session(s) stored as counted already",
        "revokes REFERENCES, TRIGGER, TRUNCATE on public.user_usage_daily from anon",
        "counters pgchat maintains in user_usage_daily: messages_sent, messages_received,"
        " input_tokens, output_tokens, total_tokens, models_used, sessions_created,"
        " active_minutes (and active_seconds, from elapsed_time)",
        "left to the app in user_usage_daily: estimated_cost",
    ):
        assert line in out, f"missing: {line}\n{out}"
    assert "BLOCKS" not in out
    assert dump_schema(prod.admin_dsn) == before


def test_dry_run_agrees_with_the_migration(prod: SupabaseDb) -> None:
    """Every trigger the dry run says it detaches, the migration detaches (and says so)."""
    prod.admin.commit()
    planned = run("migrate", "--dry-run", "--json", "--dsn", prod.dsn)
    plan = json.loads(planned.output)["plan"]
    detaches = sorted(a.split(" (saved)")[0].removeprefix("detaches trigger ")
                      for p in plan for a in p["actions"] if a.startswith("detaches trigger"))
    notes = adopt(prod)
    done = sorted(n.split(" (saved)")[0].removeprefix("  pgchat: detached trigger ")
                  for n in notes if "detached trigger" in n)
    assert detaches == done == ["on_message_change on public.chat_messages",
                                "on_session_updated on public.chat_sessions"]


# --- tolerance, one case at a time --------------------------------------------------------------


def test_extra_columns_and_tables_are_kept_and_never_checked(prod: SupabaseDb) -> None:
    with psycopg.connect(prod.dsn) as conn:
        conn.execute("alter table chat_messages add column attachments jsonb default '[]'")
        conn.execute("alter table chat_sessions add column pinned boolean not null default false")
        conn.execute("alter table profiles add column locale text default 'en'")
        conn.execute("create table public.user_saved_prompts (id serial primary key,"
                     " user_id uuid references profiles(id), prompt text)")
        conn.execute("update chat_messages set attachments = '[{\"f\": 1}]' where role = 'user'")
    adopt(prod)
    conn = prod.admin
    assert conn.execute("select count(*) from chat_messages where attachments = '[{\"f\": 1}]'"
                        ).fetchone() == (30,)
    assert conn.execute("select count(*) from public.user_saved_prompts").fetchone() == (0,)
    with psycopg.connect(prod.dsn) as mig:  # pgchat's own writes still work with them present
        chat.write_chat_exchange(mig, legacy_data.legacy_plan().users[0].id, "extra-1",
                                 {"id": "x-q", "role": "user", "content": "q",
                                  "timestamp": "2025-08-01T10:00:00Z"})
        assert mig.execute("select pinned from chat_sessions where id = 'extra-1'").fetchone() == (
            False,)


def test_a_view_with_other_columns_is_altered_never_replaced(prod: SupabaseDb) -> None:
    with psycopg.connect(prod.dsn) as conn:
        conn.execute("drop view api_user_summary")
        conn.execute("create view api_user_summary as select p.id, p.email,"
                     " count(s.id) as chats from profiles p left join chat_sessions s"
                     " on s.user_id = p.id group by p.id")
    adopt(prod)
    columns = prod.admin.execute(
        "select string_agg(attname, ',' order by attnum) from pg_attribute"
        " where attrelid = 'public.api_user_summary'::regclass and attnum > 0").fetchone()
    assert columns == ("id,email,chats",)
    options = prod.admin.execute("select reloptions from pg_class"
                                 " where oid = 'public.api_user_summary'::regclass").fetchone()
    assert options is not None and "security_invoker=on" in (options[0] or [])


def test_policies_of_any_name_on_owned_tables_are_replaced(prod: SupabaseDb) -> None:
    """Including one that already uses a pgchat policy name, with another rule."""
    with psycopg.connect(prod.dsn) as conn:
        conn.execute("create policy sessions_owner_all on chat_sessions for select using (true)")
        conn.execute('create policy "Moderators can view flagged messages" on chat_messages'
                     " for select using (metadata ? 'flagged')")
        conn.execute("create policy model_access_read on model_access for select using (true)")
    notes = adopt(prod)
    assert any('dropped policy "sessions_owner_all"' in n for n in notes)
    assert any('dropped policy "Moderators can view flagged messages"' in n for n in notes)
    assert policies(prod.admin, ("chat_sessions", "chat_messages", "user_usage_daily")) == \
        PGCHAT_POLICIES
    rule = prod.admin.execute("select qual from pg_policies where policyname = 'sessions_owner_all'"
                              ).fetchone()
    assert rule is not None and "auth.uid()" in rule[0]
    # Not an owned table: the app's policy of the same name as pgchat's old one is kept.
    assert ("model_access", "model_access_read") in policies(prod.admin, ("model_access",))


def test_a_users_own_write_of_its_counters_changes_nothing(prod: SupabaseDb) -> None:
    """The app's policies let users write their usage rows: still allowed, but pgchat's
    counters in them are neutralised (the guard), never refused."""
    adopt(prod)
    user = legacy_data.legacy_plan().users[0].id
    with psycopg.connect(prod.dsn) as conn:
        before = usage_days(conn, user)
        conn.commit()
        as_user(conn, user)
        conn.execute("update user_usage_daily set messages_sent = 0, input_tokens = 99999,"
                     " estimated_cost = 1.5 where user_id = %s", (user,))
        conn.execute("insert into user_usage_daily (user_id, usage_date, messages_sent)"
                     " values (%s, '2020-01-01', 1000)", (user,))
        conn.commit()
    with psycopg.connect(prod.dsn) as conn:
        after = usage_days(conn, user)
        assert {d: v for d, v in after.items() if d != date(2020, 1, 1)} == before
        assert after[date(2020, 1, 1)]["messages_sent"] == 0
        assert conn.execute("select count(*) from user_usage_daily where user_id = %s"
                            " and estimated_cost = 1.5", (user,)).fetchone() == (len(before),)


def test_the_apps_grants_stay_but_truncate_trigger_and_references(prod: SupabaseDb) -> None:
    """Production granted the API roles ALL (Supabase's defaults): TRUNCATE included, and anon.
    The app's grants are the app's; pgchat takes only what ignores row level security or is
    never an app write, on the three tables whose policies it owns (saved for the rollback)."""
    def held(role: str, table: str) -> list[str]:
        row = prod.admin.execute(
            "select string_agg(p, ',' order by p) from unnest(array['SELECT', 'INSERT',"
            " 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p"
            " where has_table_privilege(%s, %s, p)", (role, f"public.{table}")).fetchone()
        prod.admin.commit()
        return (row[0] or "").split(",") if row and row[0] else []

    assert "TRUNCATE" in held("anon", "chat_messages")  # before
    profiles = {role: held(role, "profiles") for role in ("anon", "authenticated")}
    adopt(prod)
    crud = ["DELETE", "INSERT", "SELECT", "UPDATE"]
    for table in ("chat_sessions", "chat_messages", "user_usage_daily"):
        for role in ("anon", "authenticated", "service_role"):
            assert held(role, table) == crud, (role, table)
    assert {role: held(role, "profiles") for role in ("anon", "authenticated")} == profiles
    migrate.rollback(prod.dsn, to="0001_supabase_standin")
    assert "TRUNCATE" in held("anon", "chat_messages")  # given back


APP_SESSION_TRIGGER = """
create function public.count_new_session() returns trigger language plpgsql as $$
begin
    perform public.track_user_usage(NEW.user_id, 0, 0, 0, 0, null, true, 0);
    return NEW;
end $$;
create trigger on_session_created after insert on public.chat_sessions
    for each row execute function public.count_new_session();
"""


def test_an_app_trigger_calling_the_legacy_track_user_usage_is_detached(
        prod: SupabaseDb) -> None:
    with psycopg.connect(prod.dsn) as conn:
        conn.execute(APP_SESSION_TRIGGER)
    notes = adopt(prod)
    assert any("detached trigger on_session_created on public.chat_sessions" in n
               and "count_new_session() calls track_user_usage" in n for n in notes), notes
    assert triggers(prod.admin, "chat_sessions") == {
        t for t in PGCHAT_TRIGGERS if t[0] == "chat_sessions"}
    user = legacy_data.legacy_plan().users[0].id
    with psycopg.connect(prod.dsn) as conn:  # a new session neither fails nor counts twice
        before = usage_stats(conn, user)["sessions_created"]
        conn.execute("insert into chat_sessions (id, user_id, created_at)"
                     " values ('after-adoption', %s, '2025-08-03T12:00:00Z')", (user,))
        conn.commit()
        assert usage_stats(conn, user)["sessions_created"] == before + 1
        assert [d for d in usage_drift(conn) if d[1] == date(2025, 8, 3)] == []
        day = usage_days(conn, user)[date(2025, 8, 3)]
        assert day["sessions_created"] == 1


def test_a_trigger_reaching_track_user_usage_through_another_function_is_detached(
        prod: SupabaseDb) -> None:
    with psycopg.connect(prod.dsn) as conn:
        conn.execute("create function public.book_it(u uuid) returns void language sql as"
                     " $$ select public.track_user_usage(u, 1) $$")
        conn.execute("create function public.on_note() returns trigger language plpgsql as"
                     " $$ begin perform public.book_it(NEW.user_id); return NEW; end $$")
        conn.execute("create trigger note_usage after update on public.chat_sessions"
                     " for each row execute function public.on_note()")
    notes = adopt(prod)
    assert any("detached trigger note_usage" in n and "calls book_it(), which calls"
               " track_user_usage" in n for n in notes), notes
    assert any("left function public.book_it(uuid) in place" in n for n in notes), notes


def test_a_competing_trigger_on_a_table_not_owned_is_refused_and_nothing_changes(
        prod: SupabaseDb, dump_schema: DumpSchema) -> None:
    """auth.users belongs to supabase_auth_admin: the migration role may create a trigger
    there (TRIGGER privilege) but cannot drop one, so pgchat refuses and names it."""
    with psycopg.connect(prod.dsn) as conn:
        conn.execute("create function public.count_sign_in() returns trigger language plpgsql"
                     " security definer as $$ begin"
                     " update public.profiles set usage_stats = usage_stats || '{\"logins\": 1}'"
                     " where id = NEW.id; return NEW; end $$")
        conn.execute("create trigger on_sign_in after update on auth.users"
                     " for each row execute function public.count_sign_in()")
    prod.admin.commit()
    before = dump_schema(prod.admin_dsn, exclude_schemas=("pgchat_migrations",))
    dry = run("migrate", "--dry-run", "--dsn", prod.dsn)
    assert dry.exit_code == 1
    assert "BLOCKS: trigger on_sign_in on auth.users" in dry.output
    with pytest.raises(MigrationError, match=r"trigger on_sign_in on auth\.users .*"
                                             r"writes profiles\.usage_stats"):
        migrate.migrate(prod.dsn)
    assert dump_schema(prod.admin_dsn, exclude_schemas=("pgchat_migrations",)) == before


def test_a_missing_required_column_is_refused_and_nothing_changes(
        prod: SupabaseDb, dump_schema: DumpSchema) -> None:
    with psycopg.connect(prod.dsn) as conn:
        conn.execute("alter table chat_messages drop column completion_id")
        conn.execute("alter table user_usage_daily drop column output_tokens")
    prod.admin.commit()
    before = dump_schema(prod.admin_dsn, exclude_schemas=("pgchat_migrations",))
    dry = run("migrate", "--dry-run", "--dsn", prod.dsn)
    assert dry.exit_code == 1
    assert "public.chat_messages.completion_id, public.user_usage_daily.output_tokens" \
        in dry.output
    assert "Traceback" not in dry.output and "database error" not in dry.output
    result = run("migrate", "--dsn", prod.dsn)
    assert result.exit_code == 1
    assert ("missing columns public.chat_messages.completion_id,"
            " public.user_usage_daily.output_tokens (add them") in result.output
    assert "Traceback" not in result.output
    assert dump_schema(prod.admin_dsn, exclude_schemas=("pgchat_migrations",)) == before


def test_a_missing_unique_key_is_refused(prod: SupabaseDb) -> None:
    with psycopg.connect(prod.dsn) as conn:
        conn.execute("alter table user_usage_daily drop constraint"
                     " user_usage_daily_user_id_usage_date_key")
    with pytest.raises(MigrationError, match=r"no unique key on public\.user_usage_daily"
                                             r" \(usage_date, user_id\)"):
        adopt(prod)


# --- rollbacks of an adopted database -----------------------------------------------------------


def test_rolling_back_the_baseline_restores_the_replaced_policies(prod: SupabaseDb) -> None:
    def rules() -> list[tuple[Any, ...]]:
        rows = prod.admin.execute(
            "select tablename, policyname, permissive, roles, cmd, qual, with_check"
            " from pg_policies where schemaname = 'public' order by 1, 2").fetchall()
        prod.admin.commit()
        return rows

    before = rules()
    prod.admin.commit()
    migrate.migrate(prod.dsn, to="0002_baseline")
    assert rules() != before
    assert migrate.rollback(prod.dsn, steps=1) == ["0002_baseline"]
    assert rules() == before


def test_rollback_all_of_an_adopted_database_gives_the_app_back_and_keeps_the_ledger(
        prod: SupabaseDb, dump_schema: DumpSchema) -> None:
    prod.admin.commit()
    app = dump_schema(prod.admin_dsn, exclude_schemas=("pgchat", "pgchat_migrations"))
    prod.admin.commit()
    adopt(prod)
    # A counted message deleted under pgchat: the ledger now holds what the rows no longer do.
    prod.admin.execute("delete from public.chat_messages where id = (select min(id)"
                       " from public.chat_messages where coalesce(error_message, '') = ''"
                       " and role in ('user', 'assistant'))")
    prod.admin.commit()
    rows = table_counts(prod.admin)
    ledger = prod.admin.execute("select count(*) from pgchat.usage_ledger").fetchone()
    assert ledger == (1,)
    prod.admin.commit()
    result = run("rollback", "--all", "--dsn", prod.dsn)
    assert result.exit_code == 0, result.output
    # The app's triggers, functions, policies and grants as they were; every row kept.
    assert dump_schema(prod.admin_dsn, exclude_schemas=("pgchat", "pgchat_migrations")) == app
    assert table_counts(prod.admin) == rows
    # pgchat's record stays, for a later adoption that counts nothing twice.
    assert prod.admin.execute("select count(*) from pgchat.usage_ledger").fetchone() == ledger
    prod.admin.commit()
    adopt(prod)  # again: nothing counted twice, the counters repaired as on first adoption
    assert run("usage", "rebuild", "--yes", "--dsn", prod.dsn).exit_code == 0
    assert usage_drift(prod.admin) == []


def test_the_apps_own_sync_function_is_replaced_and_restored_by_the_rollback(
        prod: SupabaseDb) -> None:
    def definition() -> str:
        row = prod.admin.execute("select pg_get_functiondef("
                                 "'public.sync_user_conversations(uuid, jsonb)'::regprocedure)"
                                 ).fetchone()
        prod.admin.commit()
        assert row is not None
        return str(row[0])

    production = definition()
    assert "pgchat_private" not in production
    notes = adopt(prod)
    assert any("replaces the app's function public.sync_user_conversations(uuid,jsonb)" in n
               for n in notes), notes
    assert "pgchat_private.sync_user_conversations" in definition()
    migrate.rollback(prod.dsn, to="0003_usage_ledger")
    assert definition() == production


def test_the_apps_profile_helpers_keep_their_grants(prod: SupabaseDb) -> None:
    # pgchat does not own the app's log_user_activity / handle_user_profile_sync: 0004 leaves
    # their EXECUTE grants as they were (pgchat risks reports them instead).
    query = ("select p.oid::regprocedure::text, p.proacl::text from pg_proc p"
             " where p.pronamespace = 'public'::regnamespace"
             " and p.proname in ('log_user_activity', 'handle_user_profile_sync') order by 1")
    before = prod.admin.execute(query).fetchall()
    prod.admin.commit()
    assert before
    adopt(prod)
    assert prod.admin.execute(query).fetchall() == before


def test_dry_run_names_the_takeover_the_constraints_and_the_rows_that_break_them(
        prod: SupabaseDb) -> None:
    # A legacy row the new rules refuse: 0006 would leave that constraint NOT VALID.
    prod.admin.execute("update chat_messages set input_tokens = -5"
                       " where id = (select min(id) from chat_messages)")
    prod.admin.commit()
    result = run("migrate", "--dry-run", "--dsn", prod.dsn)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "replaces the app's function public.sync_user_conversations(uuid, jsonb)" in out
    assert ("creates public.write_chat_exchange (SECURITY INVOKER) calling"
            " pgchat_private.write_chat_exchange") in out
    assert "adds constraint chat_messages_counts_range on public.chat_messages NOT VALID" \
        in out
    assert ("leaves chat_messages_counts_range NOT VALID: 1 existing row(s) of"
            " public.chat_messages break it") in out
    assert "validates chat_messages_id_length" in out
    assert "no plan available" not in out
