"""Who may act for whom (pgchat.assert_acting_for), custom JWT roles included.

Supabase lets a project mint JWTs with a role of its own, created `IN ROLE authenticated`
and switched to by PostgREST (SET ROLE) like `authenticated`. Such a role is an end user's:
it acts only as auth.uid(). A role that is also a member of service_role, and a database
role that is a member of neither API role (a backend's own login), act for anyone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgchat.chat as chat
from pgchat import PermissionDenied
from tests.helpers import make_user, message, row_versions


@pytest.fixture
def make_role(db: psycopg.Connection) -> Iterator[Callable[[str], str]]:
    """`make_role("IN ROLE authenticated")`: a new NOLOGIN role (cluster-wide), dropped after."""
    made: list[str] = []

    def make(options: str) -> str:
        name = f"pgchat_test_{uuid.uuid4().hex[:10]}"
        db.execute(sql.SQL("create role {} nologin " + options).format(sql.Identifier(name)))
        db.commit()
        made.append(name)
        return name

    yield make
    db.rollback()
    for name in made:
        db.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
    db.commit()


@pytest.fixture
def pair(db: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    alice, bob = make_user(db), make_user(db)
    chat.write_chat_exchange(db, bob, "bob-c", message("bob-u"))
    db.commit()
    return alice, bob


def grant_api(db: psycopg.Connection, role: str) -> None:
    """EXECUTE on the three write functions (wrapper and implementation), as a project may
    grant its own role: then only the function's own check stands between it and others."""
    ident = sql.Identifier(role)
    db.execute(sql.SQL("grant usage on schema pgchat_private to {}").format(ident))
    for schema in ("public", "pgchat_private"):
        db.execute(sql.SQL(
            "grant execute on function {s}.sync_user_conversations(uuid, jsonb),"
            " {s}.write_chat_exchange(uuid, text, jsonb, jsonb, text),"
            " {s}.update_session_title(uuid, text, text) to {r}").format(
            s=sql.Identifier(schema), r=ident))
    db.commit()


def as_role(db: psycopg.Connection, role: str, sub: uuid.UUID | None) -> None:
    """Act as PostgREST does for a request: SET ROLE from the JWT and its claims."""
    db.rollback()
    db.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    claims = {"role": role} | ({"sub": str(sub)} if sub else {})
    db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


CALLS: dict[str, Callable[[psycopg.Connection, uuid.UUID], Any]] = {
    "sync": lambda db, user: chat.sync_user_conversations(
        db, user, [{"id": f"planted-{user}", "messages": [message(f"planted-{user}")]}]),
    "exchange": lambda db, user: chat.write_chat_exchange(
        db, user, f"ex-{user}", message(f"ex-m-{user}")),
    "title": lambda db, user: chat.update_session_title(db, user, "bob-c", "renamed"),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("membership", ["IN ROLE authenticated", "IN ROLE anon"])
def test_a_custom_jwt_role_acts_only_as_its_own_user(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID],
        make_role: Callable[[str], str], membership: str, call: str) -> None:
    alice, bob = pair
    role = make_role(membership)
    grant_api(db, role)  # anon has no EXECUTE of its own: the check must hold without it
    before = row_versions(db)
    as_role(db, role, alice)
    with pytest.raises(PermissionDenied, match=f"not allowed to act for user {bob}"):
        CALLS[call](db, bob)
    db.rollback()
    as_role(db, role, None)  # no sub at all
    with pytest.raises(PermissionDenied, match="not allowed to act for user"):
        CALLS[call](db, bob)
    db.rollback()
    assert row_versions(db) == before


def test_a_custom_jwt_role_still_acts_for_its_own_user(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID],
        make_role: Callable[[str], str]) -> None:
    alice, _ = pair
    role = make_role("IN ROLE authenticated")
    as_role(db, role, alice)
    report = chat.sync_user_conversations(db, alice, [{"id": "a-c", "messages": [message("a-m")]}])
    assert report.sessions_inserted == 1 and report.errors == []
    assert chat.write_chat_exchange(db, alice, "a-c", message("a-m2")).messages_written == 1


def test_a_member_of_a_member_of_authenticated_is_an_end_user_too(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID],
        make_role: Callable[[str], str]) -> None:
    alice, bob = pair
    middle = make_role("IN ROLE authenticated")
    role = make_role(f'IN ROLE "{middle}"')
    as_role(db, role, alice)
    with pytest.raises(PermissionDenied):
        CALLS["exchange"](db, bob)


def test_a_role_that_is_also_a_member_of_service_role_acts_for_anyone(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID],
        make_role: Callable[[str], str]) -> None:
    """Supabase's login role `postgres` is a member of anon, authenticated and service_role:
    it is the backend, and must keep acting for anyone."""
    alice, bob = pair
    role = make_role("IN ROLE authenticated, anon, service_role")
    as_role(db, role, alice)
    assert chat.update_session_title(db, bob, "bob-c", "by the backend") is True


def test_a_database_role_outside_the_api_roles_acts_for_anyone(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID],
        make_role: Callable[[str], str]) -> None:
    alice, bob = pair
    role = make_role("")
    grant_api(db, role)
    as_role(db, role, alice)
    assert chat.update_session_title(db, bob, "bob-c", "by a backend role") is True
    report = chat.sync_user_conversations(db, bob, [{"id": "b2", "messages": [message("b2-m")]}])
    assert report.sessions_inserted == 1
