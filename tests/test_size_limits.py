"""Content sizes are capped (issue 19 risk): a backend's memory peaks at 20-25x what it parses.

The limits (0004, top of the file, with why): a message's content 2 MB (UTF-8 bytes), a
conversation 8 MB of JSON, an upload's conversations taken in order up to 16 MB of JSON, one
call's payload 64 MB. Past a limit, that conversation is refused with a reason naming the
field and the limit; the other conversations of the same upload are written.
"""

from __future__ import annotations

import psycopg
import pytest

import pgchat.chat as chat
from pgchat import LimitReached, ValidationError
from tests.helpers import make_user, message, row_versions, session_drift, usage_drift

MB = 1024 * 1024


def big(message_id: str, size: int, **fields: object) -> dict[str, object]:
    return message(message_id, content="x" * size) | fields


def messages_of(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("select id from public.chat_messages").fetchall()}


def test_a_message_of_exactly_2_mb_is_taken(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = chat.sync_user_conversations(db, user, [{"id": "c1", "messages": [big("m", 2 * MB)]}])
    assert report.errors == [] and report.messages_inserted == 1


def test_a_message_past_2_mb_fails_its_conversation_only(db: psycopg.Connection) -> None:
    user = make_user(db)
    # 2 MB of UTF-8 in fewer characters: the limit counts bytes
    content = "é" * (MB + 1)
    report = chat.sync_user_conversations(db, user, [
        {"id": "c1", "messages": [message("ok"), message("m", content=content)]},
        {"id": "c2", "messages": [message("fine")]}])
    assert [(e.conversation_id, e.message_id, e.reason) for e in report.errors] == [
        ("c1", "m", f"content is {2 * MB + 2} bytes, more than the 2 MB (2097152 bytes)"
                    " a message may hold")]
    assert messages_of(db) == {"fine"} and usage_drift(db) == []


def test_a_conversation_past_8_mb_fails_alone(db: psycopg.Connection) -> None:
    user = make_user(db)
    msgs = [big(f"m{i}", 2 * MB - 100, timestamp=f"2025-07-21T10:0{i}:00Z") for i in range(5)]
    report = chat.sync_user_conversations(db, user, [
        {"id": "huge", "messages": msgs}, {"id": "c2", "messages": [message("fine")]}])
    assert [(e.conversation_id, e.message_id) for e in report.errors] == [("huge", None)]
    assert report.errors[0].reason.startswith("the conversation is ")
    assert report.errors[0].reason.endswith(
        "bytes of JSON, more than the 8 MB (8388608 bytes) one conversation may have")
    assert messages_of(db) == {"fine"}


def test_an_upload_past_16_mb_writes_what_came_before_and_asks_for_the_rest_later(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    upload = [{"id": f"c{i:02}", "messages": [big(f"m{i:02}", 3 * MB // 2)]} for i in range(12)]
    report = chat.sync_user_conversations(db, user, upload)
    # 1.5 MB each: ten fit in 16 MB, the eleventh passes it
    assert [e.conversation_id for e in report.errors] == ["c10", "c11"]
    assert all("send it again in a later call" in e.reason for e in report.errors)
    assert messages_of(db) == {f"m{i:02}" for i in range(10)}
    db.commit()
    again = chat.sync_user_conversations(db, user, upload[10:])  # the later call
    assert again.errors == [] and again.messages_inserted == 2
    assert usage_drift(db) == [] and session_drift(db) == []


def test_a_call_past_64_mb_is_refused_whole_before_parsing(db: psycopg.Connection) -> None:
    user = make_user(db)
    with pytest.raises(LimitReached, match=r"the upload is \d+ bytes, more than the 64 MB"):
        chat.sync_user_conversations(db, user, [{"id": "c1", "messages": [big("m", 65 * MB)]}])
    db.rollback()
    assert row_versions(db) == {}


def test_an_exchange_past_2_mb_is_refused_naming_the_message(db: psycopg.Connection) -> None:
    user = make_user(db)
    with pytest.raises(ValidationError, match=r"^write_chat_exchange: conversation c1, message a1:"
                                              r" content is 2097153 bytes, more than the 2 MB"):
        chat.write_chat_exchange(db, user, "c1", message("u1"),
                                 big("a1", 2 * MB + 1, role="assistant", user_message_id="u1"))
    db.rollback()
    assert row_versions(db) == {}
    result = chat.write_chat_exchange(db, user, "c1", message("u1"),
                                      big("a1", 2 * MB, role="assistant", user_message_id="u1"))
    assert result.messages_written == 2
