"""Hosted Supabase's permission model: migrate, every function and every rollback work as a
migration role that is no superuser and does not own auth.users (tests/supabase.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgchat.chat as chat
from pgchat import migrate
from pgchat.cli import main
from tests.conftest import SupabaseDb
from tests.helpers import migration_ids, session_drift, usage_drift, usage_stats
from tests.supabase import AUTH_ADMIN, MIGRATOR

DumpSchema = Callable[..., str]


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_the_migration_role_is_set_up_like_supabases_postgres(supabase_empty: SupabaseDb) -> None:
    conn = supabase_empty.admin
    row = conn.execute("select rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolreplication,"
                       " rolbypassrls from pg_roles where rolname = %s", (MIGRATOR,)).fetchone()
    assert row == (False, True, True, True, True, True)
    members = conn.execute(
        "select r from unnest(array['anon', 'authenticated', 'service_role', %s]) r"
        " where pg_has_role(%s, r, 'MEMBER') order by 1", (AUTH_ADMIN, MIGRATOR)).fetchall()
    assert [m[0] for m in members] == ["anon", "authenticated", "service_role"]
    owners = conn.execute("select nspowner::regrole::text, (select relowner::regrole::text"
                          " from pg_class where oid = 'auth.users'::regclass)"
                          " from pg_namespace where nspname = 'auth'").fetchone()
    assert owners == ("supabase_admin", AUTH_ADMIN)
    conn.commit()
    # What makes the model bite: a trigger on auth.users can be created, not dropped.
    with psycopg.connect(supabase_empty.dsn) as mig:
        mig.execute("create function public.noop() returns trigger language plpgsql"
                    " as $$ begin return NEW; end $$")
        mig.execute("create trigger noop after insert on auth.users"
                    " for each row execute function public.noop()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
            mig.execute("drop trigger noop on auth.users")


def test_migrate_and_rollback_all_work_as_the_migration_role(
        supabase_empty: SupabaseDb, supabase_migrated: SupabaseDb,
        dump_schema: DumpSchema) -> None:
    supabase_empty.admin.commit()
    supabase_migrated.admin.commit()
    never = dump_schema(supabase_empty.admin_dsn, exclude_schemas=("pgchat_migrations",))
    applied = run("migrate", "--dsn", supabase_empty.dsn)
    assert applied.exit_code == 0, applied.output
    assert "created table public.chat_sessions" in applied.output

    rolled = run("rollback", "--all", "--dsn", supabase_empty.dsn)
    assert rolled.exit_code == 0, rolled.output
    assert f"rolled back {len(migration_ids())} migration(s)" in rolled.output
    assert dump_schema(supabase_empty.admin_dsn, exclude_schemas=("pgchat_migrations",)) == never

    assert migrate.migrate(supabase_empty.dsn) == migration_ids()
    assert dump_schema(supabase_empty.admin_dsn) == dump_schema(supabase_migrated.admin_dsn)


def test_each_rollback_step_works_as_the_migration_role(supabase_migrated: SupabaseDb) -> None:
    supabase_migrated.admin.commit()
    for mid in reversed(migration_ids()):
        assert migrate.rollback(supabase_migrated.dsn, steps=1) == [mid]
    trigger = supabase_migrated.admin.execute(
        "select count(*) from pg_trigger where tgrelid = 'auth.users'::regclass").fetchone()
    assert trigger == (0,)  # the sign-up trigger went with its function


def test_every_function_works_as_the_migration_role(supabase_migrated: SupabaseDb) -> None:
    user = uuid.uuid4()
    supabase_migrated.admin.execute(
        "insert into auth.users (id, email) values (%s, 'dora@example.com')", (user,))
    supabase_migrated.admin.commit()
    with psycopg.connect(supabase_migrated.dsn) as conn:
        report = chat.sync_user_conversations(conn, user, [{"id": "d1", "title": "t", "messages": [
            {"id": "d1-q", "role": "user", "content": "q", "input_tokens": 2,
             "timestamp": "2025-08-01T10:00:00Z"}]}])
        assert report.ok
        chat.write_chat_exchange(conn, user, "d1",
                                 {"id": "d1-q2", "role": "user", "content": "q2",
                                  "timestamp": "2025-08-01T10:01:00Z"},
                                 {"id": "d1-a2", "role": "assistant", "content": "a2",
                                  "output_tokens": 5, "user_message_id": "d1-q2",
                                  "timestamp": "2025-08-01T10:01:03Z"})
        assert chat.update_session_title(conn, user, "d1", "renamed")
        booked = conn.execute("select public.track_user_usage(%s, 'ext-1', '2025-08-01', 1)",
                              (user,)).fetchone()
        assert booked == (True,)
        conn.commit()
        assert usage_stats(conn, user)["total_messages"] == 4
        assert usage_drift(conn) == [] and session_drift(conn) == []
        assert conn.execute("select pgchat.rebuild_usage()").fetchone() == (0,)
        conn.execute("delete from public.profiles where id = %s", (user,))  # GDPR erase
        assert conn.execute("select count(*) from pgchat.usage_ledger").fetchone() == (0,)
    for command in (("usage", "verify"), ("usage", "rebuild", "--yes"), ("status",)):
        result = run(*command, "--dsn", supabase_migrated.dsn)
        assert result.exit_code == 0, result.output
