"""public.write_chat_exchange and public.update_session_title, and the seeds' scenarios.

write_chat_exchange is what the chat API calls after each reply: the user message, the
assistant message (linked by user_message_id) and, if new, the session, in one transaction.
A repeat changes nothing; a failed attempt is stored and counts nothing; its retry (same user
message id) updates that row in place and counts once. update_session_title moves updated_at
only when the title changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
import pytest

import pgchat.chat as chat
from pgchat import PermissionDenied, ValidationError
from pgchat_dev import demo, scenario
from tests.helpers import make_user, message, row_versions, session_drift, usage_drift, usage_state


def stored(conn: psycopg.Connection, message_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "select session_id, role, content, input_tokens, output_tokens, user_message_id,"
        " error_message, xmin::text from public.chat_messages where id = %s",
        (message_id,)).fetchone()
    keys = ("session_id", "role", "content", "input_tokens", "output_tokens",
            "user_message_id", "error_message", "xmin")
    return None if row is None else dict(zip(keys, row, strict=True))


def session(conn: psycopg.Connection, session_id: str) -> tuple[Any, ...]:
    """(user_id, title, updated_at, xmin, message_count) of a session that must exist."""
    row = conn.execute("select user_id, title, updated_at, xmin::text, message_count"
                       " from public.chat_sessions where id = %s", (session_id,)).fetchone()
    assert row is not None, f"no session {session_id}"
    return tuple(row)


def question(message_id: str = "u1", **fields: Any) -> dict[str, Any]:
    return message(message_id, input_tokens=12) | fields


def answer(message_id: str = "a1", to: str = "u1", **fields: Any) -> dict[str, Any]:
    return message(message_id, "assistant", timestamp="2025-07-21T10:00:07Z", output_tokens=300,
                   model="google/gemini-2.5-flash-lite", elapsed_time=7,
                   user_message_id=to) | fields


def ledger_keys(conn: psycopg.Connection, user_id: uuid.UUID) -> list[str]:
    rows = conn.execute("select event_key from pgchat.counted_events where user_id = %s"
                        " order by event_key", (user_id,)).fetchall()
    return [r[0] for r in rows]


# --- write_chat_exchange ----------------------------------------------------------------------


def test_a_first_exchange_creates_the_session_and_links_the_reply(db: psycopg.Connection) -> None:
    user = make_user(db)
    result = chat.write_chat_exchange(db, user, "c1", question(), answer(), "Greetings")
    assert result == chat.ExchangeResult(session_created=True, messages_written=2)
    assert session(db, "c1")[:2] == (user, "Greetings")
    reply = stored(db, "a1")
    assert reply is not None
    assert (reply["session_id"], reply["role"], reply["user_message_id"]) == ("c1", "assistant",
                                                                              "u1")
    db.commit()
    assert demo.read_counters(db, user) == demo.Counters(
        messages_sent=1, messages_received=1, input_tokens=12, output_tokens=300,
        sessions_created=1, profile_messages=2, profile_tokens=312, profile_sessions=1)
    assert ledger_keys(db, user) == ["a1", "c1", "u1"]


def test_the_same_exchange_again_changes_nothing(db: psycopg.Connection) -> None:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c1", question(), answer())
    db.commit()
    versions, usage = row_versions(db), usage_state(db, user)
    again = chat.write_chat_exchange(db, user, "c1", question(), answer())
    db.commit()
    assert again == chat.ExchangeResult(session_created=False, messages_written=0)
    assert row_versions(db) == versions
    assert usage_state(db, user) == usage


def test_an_exchange_without_timestamps_is_stamped_now_and_repeats_as_a_no_op(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    bare_question, bare_answer = {"id": "u1", "content": "hi"}, {"id": "a1", "content": "hello"}
    first = chat.write_chat_exchange(db, user, "c1", bare_question, bare_answer)
    now = db.execute("select now()").fetchone()
    assert first.messages_written == 2
    assert now is not None
    assert db.execute("select array_agg(distinct message_timestamp) from public.chat_messages"
                      ).fetchone() == ([now[0]],)
    db.commit()
    versions = row_versions(db)
    repeat = chat.write_chat_exchange(db, user, "c1", bare_question, bare_answer)
    assert repeat.messages_written == 0
    assert row_versions(db) == versions


def test_a_later_exchange_joins_the_session_and_keeps_its_title(db: psycopg.Connection) -> None:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c1", question(), answer(), "First title")
    result = chat.write_chat_exchange(
        db, user, "c1", question("u2", timestamp="2025-07-21T11:00:00Z"),
        answer("a2", "u2", timestamp="2025-07-21T11:00:05Z"), "Ignored title")
    assert result == chat.ExchangeResult(session_created=False, messages_written=2)
    assert session(db, "c1")[1] == "First title"
    assert session(db, "c1")[4] == 4
    assert session_drift(db) == []


def test_a_question_without_a_reply_is_stored_and_counted_alone(db: psycopg.Connection) -> None:
    user = make_user(db)
    result = chat.write_chat_exchange(db, user, "c1", question())
    assert result == chat.ExchangeResult(session_created=True, messages_written=1)
    db.commit()
    counters = demo.read_counters(db, user)
    assert (counters.messages_sent, counters.messages_received, counters.input_tokens) == (1, 0, 12)


INVALID_EXCHANGES: list[tuple[str, str, Any, Any, str | None, str]] = [
    # (case, session id, user message, reply, title, part of the error)
    ("user message without id", "c1", {"content": "x"}, None, None, "#1 has no id"),
    ("reply without id", "c1", question(), {"content": "x", "output_tokens": 3}, None,
     "#2 has no id"),
    ("reply to another message", "c1", question(), answer(to="u-other"), None,
     "user_message_id must be the user message id"),
    ("reply with a null user_message_id", "c1", question(), answer(user_message_id=None), None,
     "user_message_id must be the user message id"),
    ("reply with the user message id", "c1", question(), answer("u1"), None,
     "needs an id of its own"),
    ("reply from the user", "c1", question(), answer(role="user"), None,
     "the reply must have role assistant"),
    ("question from the assistant", "c1", question(role="assistant"), None, None,
     "the first message must have role user"),
    ("user message id of another conversation", "c1", question("old-u"), None, None,
     "already belongs to conversation old"),
    ("reply id of another conversation", "c1", question(), answer("old-a"), None,
     "already belongs to conversation old"),
    ("user message not an object", "c1", [question()], None, None, "must be JSON objects"),
    ("reply not an object", "c1", question(), "a1", None, "must be JSON objects"),
    ("negative tokens", "c1", question(input_tokens=-4), None, None, "input_tokens must be"),
    ("bad timestamp", "c1", question(timestamp="2025-02-30T10:00:00Z"), None, None,
     "unparseable timestamp"),
    ("no session id", "  ", question(), None, None, "p_session_id is required"),
    ("title too long", "c1", question(), None, "t" * 256, "title is longer than 255"),
]


@pytest.mark.parametrize(("session_id", "user_message", "reply", "title", "error"),
                         [case[1:] for case in INVALID_EXCHANGES],
                         ids=[case[0] for case in INVALID_EXCHANGES])
def test_an_invalid_exchange_writes_nothing(
        db: psycopg.Connection, session_id: str, user_message: Any, reply: Any,
        title: str | None, error: str) -> None:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "old", question("old-u"), answer("old-a", "old-u"))
    db.commit()
    versions, usage = row_versions(db), usage_state(db, user)
    with pytest.raises(ValidationError, match=error):
        chat.write_chat_exchange(db, user, session_id, user_message, reply, title)
    db.rollback()
    assert row_versions(db) == versions  # no session created, no message written or changed
    assert usage_state(db, user) == usage


def test_an_unknown_user_is_a_validation_error(db: psycopg.Connection) -> None:
    with pytest.raises(ValidationError):
        chat.write_chat_exchange(db, uuid.uuid4(), "c1", question(), answer())


def test_writing_into_a_conversation_of_another_user_is_refused(db: psycopg.Connection) -> None:
    alice, mallory = make_user(db), make_user(db)
    chat.write_chat_exchange(db, alice, "c1", question(), answer())
    db.commit()
    versions = row_versions(db)
    with pytest.raises(PermissionDenied, match="belongs to another user"):
        chat.write_chat_exchange(db, mallory, "c1", question("u2"), answer("a2", "u2"))
    db.rollback()
    with pytest.raises(PermissionDenied):  # not even by reusing alice's own message ids
        chat.write_chat_exchange(db, mallory, "c1", question(content="overwritten"), answer())
    db.rollback()
    assert row_versions(db) == versions


def test_a_message_id_of_another_user_is_refused(db: psycopg.Connection) -> None:
    alice, mallory = make_user(db), make_user(db)
    chat.write_chat_exchange(db, alice, "c1", question(), answer())
    db.commit()
    versions = row_versions(db)
    with pytest.raises(PermissionDenied, match="belongs to another user"):
        chat.write_chat_exchange(db, mallory, "m1", question(), None)
    db.rollback()
    assert row_versions(db) == versions


def test_the_refusal_does_not_reveal_another_users_conversation(db: psycopg.Connection) -> None:
    alice, mallory = make_user(db), make_user(db)
    chat.write_chat_exchange(db, alice, "alice-secret-chat", question(), answer())
    db.commit()
    with pytest.raises(PermissionDenied) as raised:
        chat.write_chat_exchange(db, mallory, "m1", question(), None)
    assert "alice-secret-chat" not in str(raised.value)


def test_a_reply_cannot_overwrite_an_earlier_message_of_the_session(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c1", question(), answer())
    db.commit()
    versions = row_versions(db)
    with pytest.raises(ValidationError):
        chat.write_chat_exchange(db, user, "c1", question("u2"),
                                 answer("u1", "u2", content="not a question"))
    db.rollback()
    assert row_versions(db) == versions


# --- update_session_title ---------------------------------------------------------------------


def test_a_title_edit_moves_updated_at_and_the_same_title_writes_nothing(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c1", question(), answer(), "Old title")
    db.commit()
    _, _, updated_before, _, _ = session(db, "c1")
    assert chat.update_session_title(db, user, "c1", "New title") is True
    db.commit()
    _, title, updated_after, xmin, _ = session(db, "c1")
    assert title == "New title" and updated_after > updated_before
    assert chat.update_session_title(db, user, "c1", "New title") is False
    db.commit()
    assert session(db, "c1") == (user, "New title", updated_after, xmin, 2)


@pytest.mark.parametrize("title", ["", "   ", "t" * 256])
def test_an_empty_or_too_long_title_is_refused(db: psycopg.Connection, title: str) -> None:
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c1", question(), None, "Kept")
    db.commit()
    with pytest.raises(ValidationError, match="1 to 255 characters"):
        chat.update_session_title(db, user, "c1", title)
    db.rollback()
    assert session(db, "c1")[1] == "Kept"


def test_renaming_a_missing_or_foreign_conversation_gives_the_same_answer(
        db: psycopg.Connection) -> None:
    alice, mallory = make_user(db), make_user(db)
    chat.write_chat_exchange(db, alice, "c1", question(), None, "Alice's")
    db.commit()
    messages = []
    for session_id in ("c1", "nowhere"):
        with pytest.raises(ValidationError) as raised:
            chat.update_session_title(db, mallory, session_id, "Mine")
        db.rollback()
        messages.append(str(raised.value).replace(session_id, "<id>"))
    assert messages[0] == messages[1]
    assert session(db, "c1")[1] == "Alice's"


# --- the seeds' scenarios, with the exact counters --------------------------------------------


@pytest.fixture
def plan() -> demo.Plan:
    return demo.make_plan("seed")


@pytest.fixture
def signed_in(db: psycopg.Connection, plan: demo.Plan) -> uuid.UUID:
    """A user whose browser conversations (the seeds' story) were uploaded at sign-in."""
    user = make_user(db)
    report = chat.sync_user_conversations(db, user, plan.conversations)
    assert report.ok and report.sessions_inserted == 3, report
    db.commit()
    return user


def assert_truth(conn: psycopg.Connection, user: uuid.UUID, truth: scenario.Truth) -> None:
    assert demo.read_counters(conn, user) == demo.true_counters(truth)
    assert demo.read_days(conn, user) == dict(truth.days)
    models = conn.execute("select models_used from public.user_usage_daily where user_id = %s",
                          (user,)).fetchall()
    used: dict[str, int] = {}
    for (day,) in models:
        for model, uses in day.items():
            used[model] = used.get(model, 0) + uses
    assert used == dict(truth.models)
    assert usage_drift(conn) == [] and session_drift(conn) == []


def test_the_sign_in_upload_counts_the_truth(db: psycopg.Connection, plan: demo.Plan,
                                             signed_in: uuid.UUID) -> None:
    assert_truth(db, signed_in, plan.truth_before_retry)


def test_the_same_upload_again_changes_nothing(db: psycopg.Connection, plan: demo.Plan,
                                              signed_in: uuid.UUID) -> None:
    versions, usage = row_versions(db), usage_state(db, signed_in)
    for _ in range(3):
        report = chat.sync_user_conversations(db, signed_in, plan.conversations)
        db.commit()
        assert (report.sessions_inserted, report.messages_inserted) == (0, 0)
        assert report.sessions_existing == 3 and report.messages_skipped_failed == 2
    assert row_versions(db) == versions
    assert usage_state(db, signed_in) == usage
    assert_truth(db, signed_in, plan.truth_before_retry)


def test_a_failed_message_then_its_retry_counts_once(db: psycopg.Connection, plan: demo.Plan,
                                                    signed_in: uuid.UUID) -> None:
    usage = usage_state(db, signed_in)
    failed = chat.write_chat_exchange(db, signed_in, plan.retry_session, plan.failed_message)
    db.commit()
    assert failed == chat.ExchangeResult(session_created=False, messages_written=1)
    row = stored(db, plan.failed_message["id"])
    assert row is not None and row["error_message"] == plan.failed_message["error_message"]
    assert usage_state(db, signed_in) == usage  # stored, counted nothing
    assert_truth(db, signed_in, plan.truth_before_retry)

    retried = chat.write_chat_exchange(db, signed_in, plan.retry_session, plan.retried_message,
                                       plan.reply)
    db.commit()
    assert retried == chat.ExchangeResult(session_created=False, messages_written=2)
    after = stored(db, plan.failed_message["id"])
    assert after is not None and after["error_message"] is None
    assert after["xmin"] != row["xmin"]  # the same row, updated in place
    assert db.execute("select count(*) from public.chat_messages where id = %s",
                      (plan.retried_message["id"],)).fetchone() == (1,)
    assert_truth(db, signed_in, plan.truth_after_retry)

    versions = row_versions(db)
    again = chat.write_chat_exchange(db, signed_in, plan.retry_session, plan.retried_message,
                                     plan.reply)
    db.commit()
    assert again.messages_written == 0 and row_versions(db) == versions
    assert_truth(db, signed_in, plan.truth_after_retry)


def test_a_conversation_deleted_then_uploaded_again_counts_nothing_new(
        db: psycopg.Connection, plan: demo.Plan, signed_in: uuid.UUID) -> None:
    deleted = plan.deleted
    usage = usage_state(db, signed_in)
    db.execute("delete from public.chat_sessions where id = %s", (deleted["id"],))
    db.commit()
    assert db.execute("select count(*) from public.chat_messages where session_id = %s",
                      (deleted["id"],)).fetchone() == (0,)
    assert usage_state(db, signed_in) == usage  # consumption is not un-consumed

    report = chat.sync_user_conversations(db, signed_in, [deleted])
    db.commit()
    back = [m for m in deleted["messages"] if not m.get("error")]
    assert (report.sessions_inserted, report.messages_inserted) == (1, len(back))
    assert db.execute("select count(*) from public.chat_messages where session_id = %s",
                      (deleted["id"],)).fetchone() == (len(back),)
    assert usage_state(db, signed_in) == usage  # the ledger remembers: no counter moves
    assert_truth(db, signed_in, plan.truth_before_retry)


def test_the_title_edit_of_the_scenario(db: psycopg.Connection, plan: demo.Plan,
                                        signed_in: uuid.UUID) -> None:
    conversation_id = plan.conversations[0]["id"]
    before = session(db, conversation_id)
    assert before[2] < datetime.now(before[2].tzinfo)
    assert chat.update_session_title(db, signed_in, conversation_id, "Renamed") is True
    db.commit()
    assert session(db, conversation_id)[2] > before[2]
    assert_truth(db, signed_in, plan.truth_before_retry)  # a rename counts nothing
