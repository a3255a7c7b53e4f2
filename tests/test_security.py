"""Least privilege against the Supabase stand-in (roles anon / authenticated / service_role).

A test acts as an API caller the way PostgREST does: inside a transaction, `SET LOCAL ROLE`
plus the JWT claims in `request.jwt.claims`; the transaction is rolled back afterwards. The
catalog checks at the end are the Supabase advisor's: pinned search_path, (select auth.uid())
in policies, indexed foreign keys, RLS everywhere, no EXECUTE for PUBLIC/anon, a
security_invoker view.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pgchat.chat as chat
from pgchat import PermissionDenied
from tests.helpers import make_user, message, row_versions, usage_state


@contextmanager
def acting_as(conn: psycopg.Connection, role: str,
              user_id: uuid.UUID | None = None) -> Iterator[psycopg.Connection]:
    """One transaction as `role` with the JWT claims PostgREST would set; rolled back after."""
    conn.rollback()
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    claims: dict[str, str] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
    try:
        yield conn
    finally:
        conn.rollback()


@dataclass(frozen=True)
class Users:
    alice: uuid.UUID
    bob: uuid.UUID


@pytest.fixture
def users(db: psycopg.Connection) -> Users:
    """Alice and Bob, each with a conversation "<name>-c" of one exchange, usage and a log."""
    alice, bob = make_user(db), make_user(db)
    for name, user in (("alice", alice), ("bob", bob)):
        chat.write_chat_exchange(db, user, f"{name}-c", message(f"{name}-u", input_tokens=5),
                                 message(f"{name}-a", "assistant", output_tokens=7,
                                         user_message_id=f"{name}-u"))
    db.commit()
    return Users(alice, bob)


def exchange(user: uuid.UUID, session_id: str, suffix: str = "x") -> dict[str, Any]:
    return {"user_id": user, "session_id": session_id,
            "user_message": message(f"new-u-{suffix}"),
            "assistant_message": message(f"new-a-{suffix}", "assistant",
                                         user_message_id=f"new-u-{suffix}")}


# --- the functions: only for oneself ----------------------------------------------------------


def test_an_authenticated_user_may_write_for_itself(db: psycopg.Connection,
                                                    users: Users) -> None:
    with acting_as(db, "authenticated", users.alice):
        report = chat.sync_user_conversations(db, users.alice,
                                              [{"id": "alice-2", "messages": [message("m2")]}])
        assert (report.sessions_inserted, report.messages_inserted) == (1, 1)
        result = chat.write_chat_exchange(**exchange(users.alice, "alice-c"), conn=db)
        assert result.messages_written == 2
        assert chat.update_session_title(db, users.alice, "alice-c", "Mine") is True


CALLS_FOR_BOB = {
    "sync": lambda db, u: chat.sync_user_conversations(
        db, u.bob, [{"id": "planted", "messages": [message("planted-m")]}]),
    "sync into his conversation": lambda db, u: chat.sync_user_conversations(
        db, u.bob, [{"id": "bob-c", "messages": [message("planted-m")]}]),
    "exchange": lambda db, u: chat.write_chat_exchange(**exchange(u.bob, "bob-c"), conn=db),
    "exchange in a new conversation": lambda db, u: chat.write_chat_exchange(
        **exchange(u.bob, "planted"), conn=db),
    "title": lambda db, u: chat.update_session_title(db, u.bob, "bob-c", "hacked"),
}


@pytest.mark.parametrize("call", CALLS_FOR_BOB.values(), ids=CALLS_FOR_BOB.keys())
def test_an_authenticated_user_may_not_act_for_another(db: psycopg.Connection, users: Users,
                                                       call: Any) -> None:
    versions, usage = row_versions(db), usage_state(db, users.bob)
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(PermissionDenied, match="not allowed to act for user"):
        call(db, users)
    assert row_versions(db) == versions
    assert usage_state(db, users.bob) == usage


def test_the_refusal_is_sqlstate_42501(db: psycopg.Connection, users: Users) -> None:
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("select public.sync_user_conversations(%s, '[]')", (users.bob,))


def test_an_authenticated_caller_without_a_user_id_acts_for_nobody(
        db: psycopg.Connection, users: Users) -> None:
    with acting_as(db, "authenticated"), pytest.raises(PermissionDenied):
        chat.update_session_title(db, users.alice, "alice-c", "anyone?")


def test_an_authenticated_user_may_not_write_into_another_users_conversation(
        db: psycopg.Connection, users: Users) -> None:
    versions = row_versions(db)
    with acting_as(db, "authenticated", users.alice), pytest.raises(PermissionDenied):
        chat.write_chat_exchange(**exchange(users.alice, "bob-c"), conn=db)
    with acting_as(db, "authenticated", users.alice):
        report = chat.sync_user_conversations(
            db, users.alice, [{"id": "bob-c", "messages": [message("planted-m")]}])
        assert report.conversations_failed == 1 and report.messages_inserted == 0
    assert row_versions(db) == versions


def test_the_service_role_may_act_for_anyone(db: psycopg.Connection, users: Users) -> None:
    with acting_as(db, "service_role"):
        for name, user in (("alice", users.alice), ("bob", users.bob)):
            report = chat.sync_user_conversations(
                db, user, [{"id": f"{name}-2", "messages": [message(f"{name}-m2")]}])
            assert report.ok and report.sessions_inserted == 1
            assert chat.write_chat_exchange(**exchange(user, f"{name}-c", name), conn=db) \
                .messages_written == 2
            assert chat.update_session_title(db, user, f"{name}-c", "by the backend") is True
        assert db.execute("select count(*) from public.chat_sessions").fetchone() == (4,)


# --- the tables and the view: only one's own rows ---------------------------------------------


OWNER_QUERIES = {
    "chat_sessions": "select user_id from public.chat_sessions",
    "chat_messages": "select s.user_id from public.chat_messages m"
                     " join public.chat_sessions s on s.id = m.session_id",
    "user_usage_daily": "select user_id from public.user_usage_daily",
    "profiles": "select id from public.profiles",
    "user_activity_log": "select user_id from public.user_activity_log",
    "api_user_summary": "select id from public.api_user_summary",
}


@pytest.mark.parametrize("query", OWNER_QUERIES.values(), ids=OWNER_QUERIES.keys())
def test_a_user_reads_only_its_own_rows(db: psycopg.Connection, users: Users,
                                        query: str) -> None:
    everyone = {r[0] for r in db.execute(query).fetchall()}
    assert everyone == {users.alice, users.bob}  # both have rows there
    with acting_as(db, "authenticated", users.alice):
        assert {r[0] for r in db.execute(query).fetchall()} == {users.alice}


def test_the_summary_view_shows_only_the_callers_row(db: psycopg.Connection,
                                                     users: Users) -> None:
    with acting_as(db, "authenticated", users.bob):
        rows = db.execute("select id, messages_today, total_sessions"
                          " from public.api_user_summary").fetchall()
    assert [r[0] for r in rows] == [users.bob] and rows[0][2] == 1


def test_a_user_cannot_insert_into_another_users_data(db: psycopg.Connection,
                                                      users: Users) -> None:
    versions = row_versions(db)
    inserts = [
        ("insert into public.chat_messages (id, session_id, role, content)"
         " values ('planted', 'bob-c', 'user', 'x')", ()),
        ("insert into public.chat_sessions (id, user_id) values ('planted', %s)", (users.bob,)),
    ]
    for statement, args in inserts:
        with acting_as(db, "authenticated", users.alice), \
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            db.execute(statement, args)
    assert row_versions(db) == versions


UPDATES_AND_DELETES = {  # statement, rows it may change (alice's own)
    "rename his session": ("update public.chat_sessions set title = 'x' where id = 'bob-c'", 0),
    "edit his message": ("update public.chat_messages set content = 'x' where id = 'bob-u'", 0),
    "delete his message": ("delete from public.chat_messages where id = 'bob-u'", 0),
    "delete his session": ("delete from public.chat_sessions where id = 'bob-c'", 0),
    "edit every profile": ("update public.profiles set full_name = 'x'", 1),
    "deactivate every session": ("update public.chat_sessions set is_active = false", 1),
    "delete every message": ("delete from public.chat_messages", 2),
}


@pytest.mark.parametrize(("statement", "own_rows"), UPDATES_AND_DELETES.values(),
                         ids=UPDATES_AND_DELETES.keys())
def test_a_user_cannot_change_another_users_rows(db: psycopg.Connection, users: Users,
                                                 statement: str, own_rows: int) -> None:
    versions = row_versions(db)
    bob_profile = db.execute("select xmin::text, full_name from public.profiles where id = %s",
                             (users.bob,)).fetchone()
    with acting_as(db, "authenticated", users.alice):
        assert db.execute(statement).rowcount == own_rows
        db.commit()  # what she could do, she did: none of it may have reached bob's rows
    after = row_versions(db)
    assert {k: v for k, v in after.items() if k[1].startswith("bob-")} == \
        {k: v for k, v in versions.items() if k[1].startswith("bob-")}
    assert db.execute("select xmin::text, full_name from public.profiles where id = %s",
                      (users.bob,)).fetchone() == bob_profile


def test_a_user_cannot_hand_its_conversation_to_another(db: psycopg.Connection,
                                                        users: Users) -> None:
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        db.execute("update public.chat_sessions set user_id = %s where id = 'alice-c'",
                   (users.bob,))


@pytest.mark.parametrize("statement", [
    "update public.user_usage_daily set messages_sent = 0",
    "delete from public.user_usage_daily",
    "update public.user_activity_log set action = 'x'",
    "delete from public.user_activity_log",
])
def test_a_user_cannot_change_counters_or_the_log_even_its_own(
        db: psycopg.Connection, users: Users, statement: str) -> None:
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        db.execute(statement)


def test_a_user_cannot_add_to_its_counters(db: psycopg.Connection, users: Users) -> None:
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        db.execute("insert into public.user_usage_daily (user_id, usage_date, messages_sent)"
                   " values (auth.uid(), '2020-01-01', 1000)")


# TRUNCATE is not subject to row level security: only the privilege stands in its way.


def test_a_user_cannot_truncate_everyones_messages(db: psycopg.Connection,
                                                   users: Users) -> None:
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("truncate public.chat_messages")


def test_the_api_roles_hold_exactly_the_table_privileges_granted(
        db: psycopg.Connection) -> None:
    crud = "DELETE,INSERT,SELECT,UPDATE"
    intended = {
        ("anon", "model_access"): "SELECT",
        ("authenticated", "api_user_summary"): "SELECT",
        ("authenticated", "chat_messages"): crud,
        # its statistics are guarded (0005), not taken away column by column
        ("authenticated", "chat_sessions"): crud,
        ("authenticated", "model_access"): "SELECT",
        ("authenticated", "profiles"): "SELECT",  # UPDATE of some columns only: see below
        ("authenticated", "user_activity_log"): "SELECT",
        ("authenticated", "user_usage_daily"): "SELECT",
    }
    held = dict(((r[0], r[1]), r[2]) for r in db.execute("""
        select r, c.relname, string_agg(p, ',' order by p) from pg_class c
        cross join unnest(array['anon', 'authenticated']) r
        cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                'REFERENCES', 'TRIGGER']) p
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'v')
          and has_table_privilege(r, c.oid, p)
        group by 1, 2""").fetchall())
    assert held == intended


@pytest.mark.parametrize(("column", "allowed"), [
    ("full_name", True), ("ui_preferences", True), ("system_prompt", True),
    ("subscription_tier", False), ("credits", False), ("usage_stats", False), ("id", False),
])
def test_a_user_may_edit_its_settings_not_its_tier_credits_or_totals(
        db: psycopg.Connection, users: Users, column: str, allowed: bool) -> None:
    row = db.execute("select has_column_privilege('authenticated', 'public.profiles', %s,"
                     " 'UPDATE')", (column,)).fetchone()
    assert row == (allowed,)
    if not allowed:
        with acting_as(db, "authenticated", users.alice), \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(f"update public.profiles set {column} = {column} where id = auth.uid()")


# --- anon, and what authenticated must never reach --------------------------------------------


PUBLIC_FUNCTIONS = {
    "sync_user_conversations": "select public.sync_user_conversations(%s, '[]')",
    "write_chat_exchange": "select public.write_chat_exchange(%s, 'c', '{\"id\": \"m\"}')",
    "update_session_title": "select public.update_session_title(%s, 'c', 't')",
    "track_user_usage": "select public.track_user_usage(%s, 'k', current_date)",
}


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_anon_cannot_execute_the_functions(db: psycopg.Connection, users: Users,
                                           name: str) -> None:
    with acting_as(db, "anon", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege,
                          match=f"permission denied for function {name}"):
        db.execute(PUBLIC_FUNCTIONS[name], (users.alice,))


@pytest.mark.parametrize("relation", [*OWNER_QUERIES, "pgchat.usage_ledger"])
def test_anon_cannot_read_user_data(db: psycopg.Connection, users: Users, relation: str) -> None:
    name = relation if "." in relation else f"public.{relation}"
    with acting_as(db, "anon", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        db.execute(f"select count(*) from {name}")


def test_authenticated_cannot_book_usage_directly(db: psycopg.Connection, users: Users) -> None:
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege,
                          match="permission denied for function track_user_usage"):
        db.execute("select public.track_user_usage(%s, 'free-tokens', current_date,"
                   " p_input_tokens => 1000000)", (users.alice,))


@pytest.mark.parametrize("statement", [
    "select count(*) from pgchat.usage_ledger",
    "select pgchat.rebuild_usage()",
    "select * from pgchat.usage_drift()",
    "select pgchat.assert_acting_for(auth.uid())",
])
def test_authenticated_cannot_reach_pgchat_internals(db: psycopg.Connection, users: Users,
                                                     statement: str) -> None:
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        db.execute(statement)


def test_no_pgchat_function_is_executable_by_the_api_roles(db: psycopg.Connection) -> None:
    rows = db.execute(
        "select p.oid::regprocedure::text, r.rolname from pg_proc p"
        " cross join (values ('anon'), ('authenticated'), ('service_role')) r(rolname)"
        " where p.pronamespace = 'pgchat'::regnamespace"
        "   and has_function_privilege(r.rolname, p.oid, 'EXECUTE')").fetchall()
    assert rows == [], "pgchat functions executable by an API role: " + repr(rows)
    usage = db.execute("select has_schema_privilege(r, 'pgchat', 'USAGE')"
                       " from unnest(array['anon', 'authenticated', 'public']) r").fetchall()
    assert usage == [(False,), (False,), (False,)]


# --- the split: SECURITY INVOKER in public, SECURITY DEFINER in pgchat_private -----------------


IMPLEMENTATIONS = {  # the API function in public: its SECURITY DEFINER implementation
    "sync_user_conversations(uuid,jsonb)": "pgchat_private.sync_user_conversations(uuid,jsonb)",
    "write_chat_exchange(uuid,text,jsonb,jsonb,text)":
        "pgchat_private.write_chat_exchange(uuid,text,jsonb,jsonb,text)",
    "update_session_title(uuid,text,text)": "pgchat_private.update_session_title(uuid,text,text)",
}


def test_the_api_functions_run_as_the_caller_and_their_implementations_as_the_owner(
        db: psycopg.Connection) -> None:
    rows = db.execute(
        "select p.oid::regprocedure::text, p.prosecdef, n.nspname,"
        "       pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where p.oid::regprocedure::text = any(%s)",
        (list(IMPLEMENTATIONS) + list(IMPLEMENTATIONS.values()),)).fetchall()
    found = {r[0]: r[1:] for r in rows}
    assert set(found) == set(IMPLEMENTATIONS) | set(IMPLEMENTATIONS.values())
    for api, implementation in IMPLEMENTATIONS.items():
        assert found[api][:2] == (False, "public"), api
        assert found[implementation][:2] == (True, "pgchat_private"), implementation
        # Same parameter names, defaults and result: PostgREST calls them by name.
        assert found[api][2:] == found[implementation][2:], api
    definers_in_public = db.execute(
        "select p.oid::regprocedure::text from pg_proc p"
        " where p.pronamespace = 'public'::regnamespace and p.prosecdef"
        "   and (has_function_privilege('anon', p.oid, 'EXECUTE')"
        "        or has_function_privilege('authenticated', p.oid, 'EXECUTE'))").fetchall()
    assert definers_in_public == []


def test_execute_on_the_write_functions_is_granted_exactly(db: psycopg.Connection) -> None:
    held = db.execute("""
        select p.oid::regprocedure::text, r, has_function_privilege(r, p.oid, 'EXECUTE')
        from pg_proc p
        cross join unnest(array['anon', 'authenticated', 'service_role']) r
        where p.oid::regprocedure::text = any(%s)
        order by 1, 2""", (list(IMPLEMENTATIONS) + list(IMPLEMENTATIONS.values()),)).fetchall()
    assert len(held) == 18
    assert {(name, role) for name, role, ok in held if ok} == {
        (name, role) for name in (*IMPLEMENTATIONS, *IMPLEMENTATIONS.values())
        for role in ("authenticated", "service_role")}
    # Nobody holds it through PUBLIC: each grant is explicit (aclexplode grantee 0 is PUBLIC).
    public = db.execute(
        "select p.oid::regprocedure::text from pg_proc p,"
        " aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
        " where a.grantee = 0 and p.oid::regprocedure::text = any(%s)",
        (list(IMPLEMENTATIONS) + list(IMPLEMENTATIONS.values()),)).fetchall()
    assert public == []
    schema = db.execute("select r, has_schema_privilege(r, 'pgchat_private', 'USAGE'),"
                        "       has_schema_privilege(r, 'pgchat_private', 'CREATE')"
                        " from unnest(array['anon', 'authenticated', 'service_role', 'public']) r"
                        " order by 1").fetchall()
    assert schema == [("anon", False, False), ("authenticated", True, False),
                      ("public", False, False), ("service_role", True, False)]
    others = db.execute(
        "select p.oid::regprocedure::text from pg_proc p"
        " where p.pronamespace = 'pgchat_private'::regnamespace"
        "   and p.oid::regprocedure::text <> all(%s)", (list(IMPLEMENTATIONS.values()),)).fetchall()
    assert others == [], "pgchat_private holds only the three implementations"


DIRECT_CALLS = {
    "sync": "select pgchat_private.sync_user_conversations(%s, '[]')",
    "exchange": "select pgchat_private.write_chat_exchange(%s, 'bob-c', '{\"id\": \"m\"}')",
    "title": "select pgchat_private.update_session_title(%s, 'bob-c', 'hacked')",
}


@pytest.mark.parametrize("statement", DIRECT_CALLS.values(), ids=DIRECT_CALLS.keys())
def test_calling_an_implementation_directly_checks_the_caller_too(
        db: psycopg.Connection, users: Users, statement: str) -> None:
    versions = row_versions(db)
    with acting_as(db, "authenticated", users.alice), \
            pytest.raises(psycopg.errors.InsufficientPrivilege,
                          match="not allowed to act for user"):
        db.execute(statement, (users.bob,))
    with acting_as(db, "anon", users.bob), \
            pytest.raises(psycopg.errors.InsufficientPrivilege,
                          match="permission denied for schema pgchat_private"):
        db.execute(statement, (users.bob,))
    assert row_versions(db) == versions


@pytest.fixture
def authenticator(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A connection as PostgREST makes it: logged in as `authenticator`, a NOINHERIT login role
    that is a member of the API roles. Its session_user is not the functions' owner."""
    db.execute("""do $$ begin
        if not exists (select 1 from pg_roles where rolname = 'authenticator') then
            create role authenticator login noinherit;
        end if;
        grant anon, authenticated, service_role to authenticator;
    end $$""")
    db.commit()
    with psycopg.connect(make_conninfo(_dsn_of(db), user="authenticator")) as conn:
        yield conn


def _dsn_of(conn: psycopg.Connection) -> str:
    info = conn.info
    return make_conninfo(host=info.host, port=info.port, dbname=info.dbname)


def test_through_postgrest_a_user_writes_for_itself_only(
        db: psycopg.Connection, authenticator: psycopg.Connection, users: Users) -> None:
    api = authenticator
    # Logged in but not switched to an API role (NOINHERIT), without claims: the identity check
    # would take it for a backend role; the wrapper's EXECUTE privilege is what refuses it.
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match="permission denied for function sync_user_conversations"):
        api.execute("select public.sync_user_conversations(%s, '[]')", (users.bob,))
    api.rollback()
    with acting_as(api, "authenticated", users.alice):
        assert api.execute("select session_user::text, current_user::text").fetchone() == \
            ("authenticator", "authenticated")
        assert chat.write_chat_exchange(**exchange(users.alice, "alice-c"), conn=api) \
            .messages_written == 2
        assert chat.update_session_title(api, users.alice, "alice-c", "Mine") is True
        api.commit()
    versions, usage = row_versions(db), usage_state(db, users.bob)
    for call in CALLS_FOR_BOB.values():
        with acting_as(api, "authenticated", users.alice), \
                pytest.raises(PermissionDenied, match="not allowed to act for user"):
            call(api, users)
    with acting_as(api, "anon", users.bob), \
            pytest.raises(psycopg.errors.InsufficientPrivilege,
                          match="permission denied for function sync_user_conversations"):
        api.execute("select public.sync_user_conversations(%s, '[]')", (users.bob,))
    assert (row_versions(db), usage_state(db, users.bob)) == (versions, usage)
    with acting_as(api, "service_role"):
        assert chat.update_session_title(api, users.bob, "bob-c", "by the backend") is True
        api.commit()
    db.rollback()
    assert db.execute("select title from public.chat_sessions where id in ('alice-c', 'bob-c')"
                      " order by id").fetchall() == [("Mine",), ("by the backend",)]


# --- advisor-style checks on the catalog ------------------------------------------------------


def test_every_function_has_a_pinned_search_path(db: psycopg.Connection) -> None:
    offenders = db.execute(
        "select p.oid::regprocedure::text from pg_proc p"
        " where p.pronamespace in ('public'::regnamespace, 'pgchat'::regnamespace,"
        "                        'pgchat_private'::regnamespace)"
        "   and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')"
        " order by 1").fetchall()
    assert offenders == [], f"functions without a pinned search_path: {offenders}"


def test_every_security_definer_function_has_a_pinned_search_path(
        db: psycopg.Connection) -> None:
    definers = db.execute(
        "select p.oid::regprocedure::text, p.proconfig from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where p.prosecdef and n.nspname not in ('pg_catalog', 'information_schema')"
        " order by 1").fetchall()
    assert {name for name, _ in definers} >= set(IMPLEMENTATIONS.values())
    offenders = [name for name, config in definers
                 if not any(c.startswith("search_path=") for c in config or [])]
    assert offenders == [], f"SECURITY DEFINER without a pinned search_path: {offenders}"


def test_policies_evaluate_auth_uid_once_per_statement(db: psycopg.Connection) -> None:
    policies = db.execute("select schemaname || '.' || tablename || ' ' || policyname,"
                          " coalesce(qual, '') || ' ' || coalesce(with_check, '')"
                          " from pg_policies").fetchall()
    calling = [(name, text) for name, text in policies if "auth.uid()" in text]
    assert len(calling) >= 6
    offenders = [name for name, text in calling
                 if text.count("auth.uid()") != text.count("( SELECT auth.uid()")]
    assert offenders == [], f"policies calling auth.uid() per row: {offenders}"


def test_every_foreign_key_is_indexed(db: psycopg.Connection) -> None:
    offenders = db.execute("""
        select c.conrelid::regclass::text || ' ' || c.conname from pg_constraint c
        where c.contype = 'f'
          and c.connamespace in ('public'::regnamespace, 'pgchat'::regnamespace)
          and not exists (
              select 1 from pg_index i
              where i.indrelid = c.conrelid
                and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
                and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
        order by 1""").fetchall()
    assert offenders == [], f"foreign keys without an index leading with their columns: {offenders}"


def test_row_level_security_is_enabled_on_every_public_table(db: psycopg.Connection) -> None:
    tables = db.execute("select relname, relrowsecurity from pg_class"
                        " where relnamespace = 'public'::regnamespace and relkind in ('r', 'p')"
                        " order by 1").fetchall()
    assert len(tables) >= 6
    assert [name for name, rls in tables if not rls] == []


def test_no_function_is_executable_by_public_or_anon(db: psycopg.Connection) -> None:
    offenders = db.execute("""
        select p.oid::regprocedure::text, grantee from pg_proc p
        cross join lateral (
            select 'PUBLIC' as grantee
            from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
            where a.grantee = 0 and a.privilege_type = 'EXECUTE'
            union
            select 'anon' where has_function_privilege('anon', p.oid, 'EXECUTE')) g
        where p.pronamespace in ('public'::regnamespace, 'pgchat'::regnamespace,
                                 'pgchat_private'::regnamespace)
        order by 1""").fetchall()
    assert offenders == [], f"functions executable by PUBLIC or anon: {offenders}"


def test_the_summary_view_runs_with_the_callers_rights(db: psycopg.Connection) -> None:
    row = db.execute("select reloptions from pg_class"
                     " where oid = 'public.api_user_summary'::regclass").fetchone()
    assert row is not None and "security_invoker=true" in (row[0] or [])
