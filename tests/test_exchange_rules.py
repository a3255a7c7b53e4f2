"""write_chat_exchange's rules that issue 19 and 20 asked for: an unknown user in the sync's
words, retries that report and move nothing, one trimming rule for every id on every path,
and errors that name the conversation, the message and the field."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

import pgchat.chat as chat
from pgchat import ValidationError
from tests.helpers import make_session, make_user, message, row_versions, usage_drift


def ts_of(conn: psycopg.Connection, message_id: str) -> datetime:
    row = conn.execute("select message_timestamp from public.chat_messages where id = %s",
                       (message_id,)).fetchone()
    assert row is not None, f"no message {message_id}"
    return row[0]


# --- an unknown user (19.6) -------------------------------------------------------------------


def test_an_unknown_user_gets_the_syncs_words_and_sqlstate_23503(db: psycopg.Connection) -> None:
    stranger = uuid.uuid4()
    with pytest.raises(ValidationError, match=f"^write_chat_exchange: unknown user {stranger}$"):
        chat.write_chat_exchange(db, stranger, "c1", message("u1"), None)
    db.rollback()
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as raised:
        db.execute("select public.write_chat_exchange(%s, 'c1', %s::jsonb)",
                   (stranger, json.dumps(message("u1"))))
    db.rollback()
    assert raised.value.diag.message_primary == f"write_chat_exchange: unknown user {stranger}"
    assert raised.value.diag.constraint_name is None  # pgchat's refusal, not a raw foreign key
    assert row_versions(db) == {}


def test_a_null_user_is_unknown_and_writes_nowhere(db: psycopg.Connection) -> None:
    alice = make_user(db)
    chat.write_chat_exchange(db, alice, "c1", message("u1"))
    db.commit()
    versions = row_versions(db)
    for session_id in ("c1", "c2"):  # an existing conversation (someone's) and a new one
        with pytest.raises(psycopg.errors.ForeignKeyViolation,
                           match="write_chat_exchange: unknown user null"):
            db.execute("select public.write_chat_exchange(NULL, %s, %s::jsonb)",
                       (session_id, json.dumps(message("planted"))))
        db.rollback()
    assert row_versions(db) == versions


# --- retries (19.7) ---------------------------------------------------------------------------


@pytest.fixture
def observer(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        yield conn


def test_eight_identical_concurrent_retries_without_timestamps_write_once(
        db: psycopg.Connection, db_dsn: str, observer: psycopg.Connection) -> None:
    user = make_user(db)
    bare_question, bare_answer = {"id": "u1", "content": "hi"}, {"id": "a1", "content": "hello"}
    # Hold the user's profile so that the eight start together, each seeing nothing stored.
    holder = psycopg.connect(db_dsn)
    holder.execute("select 1 from public.profiles where id = %s for no key update", (user,))
    results: list[Any] = []
    conns = [psycopg.connect(db_dsn) for _ in range(8)]

    def call(conn: psycopg.Connection) -> None:
        try:
            results.append(chat.write_chat_exchange(conn, user, "c1", bare_question, bare_answer))
            conn.commit()
        except Exception as exc:  # handed to the test thread
            results.append(exc)

    threads = [threading.Thread(target=call, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    pids = [c.info.backend_pid for c in conns]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = observer.execute("select count(*) from unnest(%s::int[]) p"
                               " where cardinality(pg_blocking_pids(p)) > 0", (pids,)).fetchone()
        if row and row[0] == 8:
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the eight calls never all waited")
    holder.commit()
    holder.close()
    for t in threads:
        t.join(timeout=30)
    for c in conns:
        c.close()

    assert all(isinstance(r, chat.ExchangeResult) for r in results), results
    assert sorted(r.messages_written for r in results) == [0] * 7 + [2]
    assert sorted(r.session_created for r in results) == [False] * 7 + [True]
    db.rollback()
    booked = db.execute("select event_key, usage_date from pgchat.counted_events"
                        " where kind = 'message' order by 1").fetchall()
    assert [k for k, _ in booked] == ["a1", "u1"]
    for key, day in booked:  # the stored date is the booked date
        assert ts_of(db, key).astimezone(UTC).date() == day
    assert usage_drift(db) == []


def test_a_retry_does_not_move_a_counted_message_across_midnight(db: psycopg.Connection) -> None:
    user = make_user(db)
    late = "2025-07-21T23:59:59Z"
    chat.write_chat_exchange(db, user, "c1", message("u1", timestamp=late),
                             message("a1", "assistant", timestamp=late, user_message_id="u1"))
    db.commit()
    before, versions = ts_of(db, "u1"), row_versions(db)
    retry = chat.write_chat_exchange(
        db, user, "c1", message("u1", timestamp="2025-07-22T00:00:01Z"),
        message("a1", "assistant", timestamp="2025-07-22T00:00:02Z", user_message_id="u1"))
    db.commit()
    assert retry.messages_written == 0
    assert ts_of(db, "u1") == before and row_versions(db) == versions
    days = db.execute("select distinct usage_date::text from pgchat.counted_events"
                      " where kind = 'message'").fetchall()
    assert days == [("2025-07-21",)]
    assert usage_drift(db) == []


def test_a_failed_attempt_takes_its_retrys_timestamp(db: psycopg.Connection) -> None:
    """Not counted yet, so nothing was booked on the failed attempt's date: the retry that
    succeeds is booked on its own timestamp."""
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c1", message("u1", timestamp="2025-07-21T23:59:59Z",
                                                     error_message="provider timeout"))
    db.commit()
    chat.write_chat_exchange(db, user, "c1", message("u1", timestamp="2025-07-22T00:00:05Z"),
                             message("a1", "assistant", timestamp="2025-07-22T00:00:09Z",
                                     user_message_id="u1"))
    db.commit()
    assert ts_of(db, "u1") == datetime(2025, 7, 22, 0, 0, 5, tzinfo=UTC)
    days = db.execute("select distinct usage_date::text from pgchat.counted_events"
                      " where kind = 'message'").fetchall()
    assert days == [("2025-07-22",)] and usage_drift(db) == []


# --- one trimming rule for every id (19.7) ----------------------------------------------------


def ids_of(conn: psycopg.Connection) -> tuple[list[Any], list[Any]]:
    sessions = conn.execute("select id from public.chat_sessions order by 1").fetchall()
    msgs = conn.execute("select id, session_id, user_message_id from public.chat_messages"
                        " order by 1").fetchall()
    return sessions, msgs


def test_the_exchange_trims_ids_as_the_sync_does(db: psycopg.Connection) -> None:
    user = make_user(db)

    def q(message_id: str, **fields: Any) -> dict[str, Any]:
        return message(message_id, content="hi") | fields

    def a(message_id: str, to: str) -> dict[str, Any]:
        return message(message_id, "assistant", content="hello", user_message_id=to)

    first = chat.write_chat_exchange(db, user, " c1 ", q(" u1 "), a("a1 ", " u1"))
    assert first == chat.ExchangeResult(session_created=True, messages_written=2)
    report = chat.sync_user_conversations(db, user, [
        {"id": "c1  ", "messages": [q("u1"), a(" a1", "u1 "),
                                    q(" u2 ", timestamp="2025-07-21T10:01:00Z")]}])
    assert (report.sessions_existing, report.messages_existing, report.messages_inserted,
            report.errors) == (1, 2, 1, [])
    again = chat.write_chat_exchange(db, user, "c1", q("u1"), a("a1", "u1"))
    assert again == chat.ExchangeResult(session_created=False, messages_written=0)
    assert chat.update_session_title(db, user, " c1", "Renamed") is True
    assert ids_of(db) == ([("c1",)], [("a1", "c1", "u1"), ("u1", "c1", None), ("u2", "c1", None)])
    assert usage_drift(db) == []


def test_a_user_message_id_with_spaces_links_its_reply(db: psycopg.Connection) -> None:
    """The reply's default user_message_id is the user message id, trimmed like it: no
    misleading "user_message_id must be the user message id"."""
    user = make_user(db)
    result = chat.write_chat_exchange(db, user, "c1", message("  u1"),
                                      {"id": "a1", "content": "hello",
                                       "timestamp": "2025-07-21T10:00:03Z"})
    assert result.messages_written == 2
    assert ids_of(db)[1] == [("a1", "c1", "u1"), ("u1", "c1", None)]


def test_an_id_of_spaces_only_is_missing_everywhere(db: psycopg.Connection) -> None:
    user = make_user(db)
    with pytest.raises(ValidationError, match="p_session_id is required"):
        chat.write_chat_exchange(db, user, "   ", message("u1"))
    db.rollback()
    with pytest.raises(ValidationError, match=r"message #1: message #1 has no id"):
        chat.write_chat_exchange(db, user, "c1", message("   "))
    db.rollback()
    report = chat.sync_user_conversations(db, user, [{"id": "  ", "messages": [message("m")]}])
    assert [e.reason for e in report.errors] == ["conversation #1 has no id"]


# --- errors name the conversation, the message and the field (issue 20) ----------------------


EXCHANGE_ERRORS: list[tuple[str, Any, Any, str]] = [
    ("input tokens", message("u1", input_tokens=-1), None,
     "conversation c1, message u1: input_tokens must be an integer from 0 to 10000000, got -1"),
    ("reply output tokens", message("u1"),
     message("a1", "assistant", output_tokens="many", user_message_id="u1"),
     "conversation c1, message a1: output_tokens must be an integer from 0 to 10000000,"
     ' got "many"'),
    ("elapsed_ms", message("u1"),
     message("a1", "assistant", elapsed_ms=-5, user_message_id="u1"),
     "conversation c1, message a1: elapsed_ms must be a number of milliseconds"),
    ("model", message("u1"), message("a1", "assistant", model=7, user_message_id="u1"),
     "conversation c1, message a1: model must be a string"),
    ("content", message("u1", content=None), None,
     "conversation c1, message u1: content must be a string"),
    ("timestamp", message("u1", timestamp="yesterday"), None,
     'conversation c1, message u1: unparseable timestamp "yesterday"'),
    ("another conversation's id", message("old-u"), None,
     "conversation c1, message old-u: message id already belongs to conversation old"),
]


@pytest.mark.parametrize(("user_message", "reply", "error"),
                         [case[1:] for case in EXCHANGE_ERRORS],
                         ids=[case[0] for case in EXCHANGE_ERRORS])
def test_every_exchange_error_names_the_conversation_the_message_and_the_field(
        db: psycopg.Connection, user_message: Any, reply: Any, error: str) -> None:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "old", message("old-u"))
    db.commit()
    with pytest.raises(ValidationError) as raised:
        chat.write_chat_exchange(db, user, "c1", user_message, reply)
    assert str(raised.value).startswith(f"write_chat_exchange: {error}")


def test_a_nul_in_an_exchange_names_the_conversation_the_message_and_the_field(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    with pytest.raises(ValidationError, match=r"^conversation 'c1', user_message \(message 'u1'\)"
                                              r"\.content contains a NUL character"):
        chat.write_chat_exchange(db, user, "c1", message("u1", content="a\x00b"))
    assert db.execute("SELECT count(*) FROM chat_messages").fetchone() == (0,)


def test_a_nul_in_a_synced_message_names_the_conversation_the_message_and_the_field(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    make_session(db, user, "c0")
    report = chat.sync_user_conversations(db, user, [
        {"id": "c1", "messages": [message("m1"), message("m2", model="x\x00")]},
        {"id": "c2", "messages": [message("m3")]}])
    assert [(e.conversation_id, e.message_id) for e in report.errors] == [("c1", "m2")]
    assert report.errors[0].reason.startswith("model contains a NUL character")
    assert report.messages_inserted == 1
