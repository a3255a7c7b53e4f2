"""Lost races end in pgchat.Conflict (SQLSTATE 40001: nothing written, retry is safe).

Each interleaving is forced, not hoped for: one connection holds a lock in an open transaction,
the other call starts and is seen waiting on that lock (pg_blocking_pids), then the first
commits. The caller check is proven against forged JWT claims in the same spirit.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgchat.chat as chat
from pgchat import Conflict, PermissionDenied
from tests.helpers import make_user, message, session_drift, usage_drift, usage_state


class Racer:
    """A call run on its own connection in a thread; `result()` returns it or raises."""

    def __init__(self, dsn: str, call: Callable[[psycopg.Connection], Any]) -> None:
        self.conn = psycopg.connect(dsn)
        self.pid = self.conn.info.backend_pid
        self._call = call
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            value = self._call(self.conn)
            self.conn.commit()
            self._outcome.append((True, value))
        except Exception as exc:  # handed to the test thread
            self.conn.rollback()
            self._outcome.append((False, exc))

    def result(self) -> Any:
        self._thread.join(timeout=30)
        assert self._outcome, "the racing call did not finish"
        self.conn.close()
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


def wait_until_blocked(observer: psycopg.Connection, racer: Racer, by_pid: int) -> None:
    """Return once `racer` waits on a lock that `by_pid` holds (no fixed sleep)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = observer.execute("select %s = any(pg_blocking_pids(%s))",
                               (by_pid, racer.pid)).fetchone()
        if row and row[0]:
            return
        assert not racer._outcome, f"finished without waiting: {racer._outcome}"
        time.sleep(0.005)
    raise AssertionError("the racing call never waited on the lock")


@pytest.fixture
def observer(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def holder(db_dsn: str) -> Iterator[psycopg.Connection]:
    """The connection that opens a transaction and holds its locks."""
    with psycopg.connect(db_dsn) as conn:
        yield conn


def one_exchange(db: psycopg.Connection) -> uuid.UUID:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c", message("u1", input_tokens=5),
                             message("a1", "assistant", output_tokens=7, user_message_id="u1"))
    db.commit()
    return user


def new_exchange(user: uuid.UUID) -> Callable[[psycopg.Connection], Any]:
    return lambda conn: chat.write_chat_exchange(
        conn, user, "c", message("u2", input_tokens=11),
        message("a2", "assistant", output_tokens=13, user_message_id="u2"))


def ids(conn: psycopg.Connection, table: str) -> set[str]:
    query = sql.SQL("select id from public.{}").format(sql.Identifier(table))
    return {r[0] for r in conn.execute(query).fetchall()}


# --- an exchange racing a DELETE of its session ------------------------------------------------


def test_an_exchange_racing_the_delete_of_its_session_is_a_conflict(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        observer: psycopg.Connection) -> None:
    user = one_exchange(db)
    holder.execute("delete from public.chat_sessions where id = 'c'")
    racer = Racer(db_dsn, new_exchange(user))
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    with pytest.raises(Conflict, match="conversation c was deleted by a concurrent call; "
                                       "nothing was written, retry is safe"):
        racer.result()
    db.rollback()
    assert ids(db, "chat_sessions") == set() and ids(db, "chat_messages") == set()
    assert usage_drift(db) == [] and session_drift(db) == []
    # The retry the message promises is safe: it starts the conversation again, counted once.
    assert new_exchange(user)(db).session_created is True
    db.commit()
    assert ids(db, "chat_messages") == {"u2", "a2"} and usage_drift(db) == []


def test_the_raw_sql_error_of_that_race_is_40001(db: psycopg.Connection, db_dsn: str,
                                                 holder: psycopg.Connection,
                                                 observer: psycopg.Connection) -> None:
    user = one_exchange(db)
    holder.execute("delete from public.chat_sessions where id = 'c'")
    racer = Racer(db_dsn, lambda conn: conn.execute(
        "select public.write_chat_exchange(%s, 'c', %s::jsonb)",
        (user, json.dumps(message("u2")))).fetchone())
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    with pytest.raises(psycopg.errors.SerializationFailure, match="retry is safe"):
        racer.result()


def test_a_delete_waits_for_an_exchange_that_locked_first(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        observer: psycopg.Connection) -> None:
    user = one_exchange(db)
    new_exchange(user)(holder)  # written, not committed: it holds the session FOR KEY SHARE
    racer = Racer(db_dsn, lambda conn: conn.execute(
        "delete from public.chat_sessions where id = 'c'").rowcount)
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    assert racer.result() == 1
    assert ids(db, "chat_messages") == set() and usage_drift(db) == []


# --- a re-sync racing another ------------------------------------------------------------------


def upload(user: uuid.UUID, conv_id: str = "n",
           *messages: dict[str, Any]) -> Callable[[psycopg.Connection], chat.SyncReport]:
    msgs = list(messages) or [message("n-u", input_tokens=2),
                              message("n-a", "assistant", output_tokens=3, user_message_id="n-u")]
    return lambda conn: chat.sync_user_conversations(conn, user, [{"id": conv_id,
                                                                   "messages": msgs}])


def test_a_resync_racing_another_for_a_new_conversation_is_a_conflict(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        observer: psycopg.Connection) -> None:
    user = make_user(db)
    assert upload(user)(holder).sessions_inserted == 1  # not committed yet
    racer = Racer(db_dsn, upload(user))
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    with pytest.raises(Conflict, match="conversation n was created by a concurrent call; "
                                       "nothing was written, retry is safe") as caught:
        racer.result()
    assert "duplicate key" not in str(caught.value)
    db.rollback()
    before = usage_state(db, user)
    retry = upload(user)(db)  # the retry: everything exists, nothing new
    db.commit()
    assert (retry.sessions_existing, retry.messages_existing, retry.messages_inserted) == (1, 2, 0)
    assert usage_state(db, user) == before and usage_drift(db) == []


def test_the_raw_sql_error_of_the_resync_race_is_40001_not_23505(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        observer: psycopg.Connection) -> None:
    user = make_user(db)
    payload = json.dumps([{"id": "n", "messages": [message("n-u")]}])
    statement = "select public.sync_user_conversations(%s, %s::jsonb)"
    holder.execute(statement, (user, payload))
    racer = Racer(db_dsn, lambda conn: conn.execute(statement, (user, payload)).fetchone())
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    with pytest.raises(psycopg.errors.SerializationFailure, match="retry is safe"):
        racer.result()


def test_a_resync_racing_another_for_new_messages_of_an_existing_conversation(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        observer: psycopg.Connection) -> None:
    user = one_exchange(db)
    more = upload(user, "c", message("u1"), message("u9", input_tokens=4))
    assert more(holder).messages_inserted == 1
    racer = Racer(db_dsn, more)
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    with pytest.raises(Conflict, match=r"1 message\(s\) of this upload were written by a"
                                       " concurrent call; nothing was written, retry is safe"):
        racer.result()
    db.rollback()
    assert more(db).messages_existing == 2 and usage_drift(db) == []


def test_a_sync_racing_the_delete_of_an_existing_conversation_is_a_conflict(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        observer: psycopg.Connection) -> None:
    user = one_exchange(db)
    holder.execute("delete from public.chat_sessions where id = 'c'")
    racer = Racer(db_dsn, upload(user, "c", message("u9")))
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    with pytest.raises(Conflict, match="conversation c was deleted by a concurrent call"):
        racer.result()
    db.rollback()
    assert ids(db, "chat_messages") == set() and usage_drift(db) == []


# --- the caller check trusts the role in effect, not the claims --------------------------------


@contextmanager
def as_role(conn: psycopg.Connection, role: str | None,
            claims: dict[str, str]) -> Iterator[psycopg.Connection]:
    conn.rollback()
    if role is not None:
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
    try:
        yield conn
    finally:
        conn.rollback()


@pytest.fixture
def pair(db: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    alice, bob = make_user(db), make_user(db)
    chat.write_chat_exchange(db, bob, "bob-c", message("bob-u"))
    db.commit()
    return alice, bob


FORGED = {
    "service_role claim": lambda alice: {"role": "service_role", "sub": str(alice)},
    "service_role claim, no sub": lambda alice: {"role": "service_role"},
    "no claims at all": lambda alice: {},
}


@pytest.mark.parametrize("claims", FORGED.values(), ids=FORGED.keys())
@pytest.mark.parametrize("call", ["sync", "exchange", "title"])
def test_a_forged_claim_role_under_set_role_authenticated_is_refused(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID], claims: Any,
        call: str) -> None:
    alice, bob = pair
    calls = {
        "sync": lambda: chat.sync_user_conversations(
            db, bob, [{"id": "planted", "messages": [message("planted-m")]}]),
        "exchange": lambda: chat.write_chat_exchange(db, bob, "bob-c", message("planted-m")),
        "title": lambda: chat.update_session_title(db, bob, "bob-c", "hacked"),
    }
    before = (ids(db, "chat_sessions"), ids(db, "chat_messages"), usage_state(db, bob))
    with as_role(db, "authenticated", claims(alice)), \
            pytest.raises(PermissionDenied, match="not allowed to act for user"):
        calls[call]()
    assert (ids(db, "chat_sessions"), ids(db, "chat_messages"), usage_state(db, bob)) == before


@pytest.fixture
def wrappers(db: psycopg.Connection) -> None:
    """A SECURITY DEFINER function calling the check, and a SECURITY INVOKER one calling it:
    the shape of the public API once its definers move to a private schema."""
    db.execute("""
        create function public.t_definer(p uuid) returns void language sql security definer
            set search_path = '' as $$ select pgchat.assert_acting_for(p) $$;
        create function public.t_invoker(p uuid) returns void language sql security invoker
            set search_path = '' as $$ select public.t_definer(p) $$;
        revoke all on function public.t_definer(uuid), public.t_invoker(uuid) from public;
        grant execute on function public.t_definer(uuid), public.t_invoker(uuid)
            to authenticated, service_role;""")
    db.commit()


@pytest.mark.usefixtures("wrappers")
@pytest.mark.parametrize("function", ["t_definer", "t_invoker"])
def test_the_check_is_right_inside_a_definer_and_behind_an_invoker(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID], function: str) -> None:
    alice, bob = pair
    call = sql.SQL("select public.{}(%s)").format(sql.Identifier(function))
    with as_role(db, "authenticated", {"role": "service_role", "sub": str(alice)}):
        db.execute(call, (alice,))  # as itself: fine
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
            db.execute(call, (bob,))
    with as_role(db, "service_role", {"role": "authenticated", "sub": str(alice)}):
        db.execute(call, (bob,))  # the role in effect is service_role: acts for anyone
    with as_role(db, None, {"role": "authenticated", "sub": str(alice)}):
        db.execute(call, (bob,))  # a database role (the backend's login): acts for anyone


def test_the_service_role_and_database_roles_still_act_for_anyone(
        db: psycopg.Connection, pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    alice, bob = pair
    with as_role(db, "service_role", {"role": "service_role"}):
        assert chat.update_session_title(db, bob, "bob-c", "by the backend") is True
    with as_role(db, None, {}):
        assert chat.sync_user_conversations(
            db, alice, [{"id": "a-c", "messages": [message("a-m")]}]).sessions_inserted == 1
