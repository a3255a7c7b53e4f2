"""A row the sync decided to insert and found taken at insert time is never silently left out.

The sync checks ids on one snapshot and inserts on later ones (after waiting for a lock). Each
test forces a commit into that gap: one connection holds a lock the sync must wait for, the
sync is seen waiting (pg_blocking_pids), a third connection commits a colliding id, the lock
is released. The conversation that lost its id is reported as failed, with the checks' reason,
and nothing of it is stored; the other conversations of the same upload are written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgchat.chat as chat
from pgchat import Conflict
from tests.helpers import make_session, make_user, message, session_drift, usage_drift
from tests.test_races import Racer, ids, wait_until_blocked


@pytest.fixture
def observer(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def holder(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn) as conn:
        yield conn


@pytest.fixture
def third(db_dsn: str) -> Iterator[psycopg.Connection]:
    """The connection that commits the colliding row while the sync waits."""
    with psycopg.connect(db_dsn) as conn:
        yield conn


def errors_of(report: chat.SyncReport) -> list[tuple[Any, Any, str]]:
    return [(e.conversation_id, e.message_id, e.reason) for e in report.errors]


def messages_of(conn: psycopg.Connection, session_id: str) -> set[str]:
    rows = conn.execute("select id from public.chat_messages where session_id = %s",
                        (session_id,)).fetchall()
    return {r[0] for r in rows}


UPLOAD = [
    {"id": "new-c", "messages": [
        message("m1", input_tokens=2),
        message("m2", "assistant", output_tokens=3, user_message_id="m1")]},
    {"id": "other-c", "messages": [message("o1", input_tokens=5)]},
]


def test_a_message_id_another_user_commits_while_the_sync_waits_fails_its_conversation(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        third: psycopg.Connection, observer: psycopg.Connection) -> None:
    alice, bob = make_user(db), make_user(db)
    bobs = make_session(db, bob)
    # alice's other tab holds her profile, as every write of hers does until it commits
    holder.execute("select 1 from public.profiles where id = %s for no key update", (alice,))
    racer = Racer(db_dsn, lambda conn: chat.sync_user_conversations(conn, alice, UPLOAD))
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    chat.write_chat_exchange(third, bob, bobs, message("m2"))  # bob takes the id meanwhile
    third.commit()
    holder.commit()
    report = racer.result()

    assert errors_of(report) == [("new-c", "m2", "message id already belongs to another user")]
    assert (report.conversations_failed, report.sessions_inserted, report.messages_inserted,
            report.messages_existing) == (1, 1, 1, 0)
    db.rollback()
    assert "new-c" not in ids(db, "chat_sessions")  # nothing partial: no session, no m1
    assert "m1" not in ids(db, "chat_messages")
    assert messages_of(db, "other-c") == {"o1"}  # the rest of the upload is written
    assert messages_of(db, bobs) == {"m2"}
    assert usage_drift(db) == [] and session_drift(db) == []


def hold_session(holder: psycopg.Connection, session_id: str) -> None:
    """Lock a session as a DELETE would: the sync waits before it inserts anything."""
    holder.execute("select 1 from public.chat_sessions where id = %s for update", (session_id,))


def test_a_conversation_id_another_user_commits_meanwhile_fails_that_conversation_only(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        third: psycopg.Connection, observer: psycopg.Connection) -> None:
    alice, bob = make_user(db), make_user(db)
    old = make_session(db, alice, "old-c")
    upload = [{"id": old, "messages": [message("x1")]}, *UPLOAD]
    hold_session(holder, old)
    racer = Racer(db_dsn, lambda conn: chat.sync_user_conversations(conn, alice, upload))
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    chat.write_chat_exchange(third, bob, "new-c", message("b1"))  # bob starts "new-c"
    third.commit()
    holder.commit()
    report = racer.result()

    assert errors_of(report) == [("new-c", None, "conversation id already belongs to another user")]
    db.rollback()
    assert messages_of(db, "new-c") == {"b1"}  # bob's, untouched
    assert messages_of(db, old) == {"x1"} and messages_of(db, "other-c") == {"o1"}
    assert usage_drift(db) == [] and session_drift(db) == []


def test_a_message_id_another_conversation_of_the_user_takes_meanwhile_fails_that_conversation(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        third: psycopg.Connection, observer: psycopg.Connection) -> None:
    alice = make_user(db)
    old = make_session(db, alice, "old-c")
    tab = make_session(db, alice, "tab-c")
    upload = [{"id": old, "messages": [message("x1")]}, *UPLOAD]
    hold_session(holder, old)
    racer = Racer(db_dsn, lambda conn: chat.sync_user_conversations(conn, alice, upload))
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    chat.write_chat_exchange(third, alice, tab, message("m1"))  # her other tab, same id
    third.commit()
    holder.commit()
    report = racer.result()

    assert errors_of(report) == [
        ("new-c", "m1", "message id already belongs to conversation tab-c")]
    db.rollback()
    assert "new-c" not in ids(db, "chat_sessions") and "m2" not in ids(db, "chat_messages")
    assert messages_of(db, tab) == {"m1"} and messages_of(db, "other-c") == {"o1"}
    assert usage_drift(db) == [] and session_drift(db) == []


def test_the_raw_sql_report_of_the_race_names_the_conversation(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        third: psycopg.Connection, observer: psycopg.Connection) -> None:
    """The same race through the SQL function itself: a report, never a partial write."""
    alice, bob = make_user(db), make_user(db)
    bobs = make_session(db, bob)
    holder.execute("select 1 from public.profiles where id = %s for no key update", (alice,))
    racer = Racer(db_dsn, lambda conn: conn.execute(
        "select public.sync_user_conversations(%s, %s::jsonb)",
        (alice, json.dumps(UPLOAD))).fetchone())
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    chat.write_chat_exchange(third, bob, bobs, message("o1"))
    third.commit()
    holder.commit()
    (report,) = racer.result()
    assert report["errors"] == [{"conversation_id": "other-c", "message_id": "o1",
                                 "reason": "message id already belongs to another user"}]
    assert report["messages_inserted"] == 2 and report["conversations_failed"] == 1
    db.rollback()
    assert messages_of(db, "new-c") == {"m1", "m2"} and "other-c" not in ids(db, "chat_sessions")
    assert usage_drift(db) == []


def test_the_same_users_concurrent_upload_of_the_same_conversation_is_still_a_conflict(
        db: psycopg.Connection, db_dsn: str, holder: psycopg.Connection,
        observer: psycopg.Connection) -> None:
    """The same user's concurrent upload of the same conversation is not another owner: the
    call is a conflict (40001, retry is safe), and the retry finds everything stored."""
    user = make_user(db)
    upload = [{"id": "n", "messages": [message("n-u")]}]
    chat.sync_user_conversations(holder, user, upload)  # not committed
    racer = Racer(db_dsn, lambda conn: chat.sync_user_conversations(conn, user, upload))
    wait_until_blocked(observer, racer, holder.info.backend_pid)
    holder.commit()
    with pytest.raises(Conflict, match="retry is safe"):
        racer.result()
    db.rollback()
    retry = chat.sync_user_conversations(db, user, upload)
    assert (retry.sessions_existing, retry.messages_existing, retry.errors) == (1, 1, [])
