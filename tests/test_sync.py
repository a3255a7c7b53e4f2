"""public.sync_user_conversations: the insert-only upload of the browser's conversations.

What it must do (the issue): insert new sessions and messages; give an existing session of the
same user only the messages it lacks; never update an existing row; skip failed messages; treat
anything of another user as a conflict; write each conversation whole or not at all, with a
precise reason per problem; reject a payload that is not a list of conversations cleanly.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import pgchat.chat as chat
from pgchat import Conflict, ValidationError
from pgchat_dev import demo, scenario
from tests.helpers import make_user, message, row_versions, session_drift, usage_drift, usage_state

REPORT_FIELDS = {
    "conversations_received", "conversations_failed", "sessions_inserted", "sessions_existing",
    "messages_inserted", "messages_existing", "messages_skipped_failed", "errors",
}


def sync(conn: psycopg.Connection, user_id: uuid.UUID, payload: Any) -> dict[str, Any]:
    """The SQL function itself, as supabase-js or the backend calls it; returns its report."""
    row = conn.execute("select public.sync_user_conversations(%s, %s)",
                       (user_id, Jsonb(payload))).fetchone()
    assert row is not None
    report: dict[str, Any] = row[0]
    assert set(report) == REPORT_FIELDS
    return report


def counts(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "errors"}


def stored_messages(conn: psycopg.Connection, session_id: str) -> list[str]:
    rows = conn.execute("select id from public.chat_messages where session_id = %s order by id",
                        (session_id,)).fetchall()
    return [r[0] for r in rows]


def session_owner(conn: psycopg.Connection, session_id: str) -> uuid.UUID | None:
    row = conn.execute("select user_id from public.chat_sessions where id = %s",
                       (session_id,)).fetchone()
    return None if row is None else row[0]


def conversation(conversation_id: str, *messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": conversation_id, "title": f"about {conversation_id}",
            "messages": list(messages)} | fields


def good(conversation_id: str) -> dict[str, Any]:
    """A valid conversation of one exchange, ids prefixed by the conversation id."""
    return conversation(conversation_id, message(f"{conversation_id}-u"),
                        message(f"{conversation_id}-a", "assistant",
                                user_message_id=f"{conversation_id}-u", output_tokens=9))


def successful(conversations: list[dict[str, Any]]) -> int:
    return sum(1 for c in conversations for m in c["messages"]
               if not (m.get("error") or m.get("error_message")))


# --- the shapes it accepts ---------------------------------------------------------------------


def test_the_array_and_the_wrapped_form_are_the_same_upload(db: psycopg.Connection) -> None:
    alice, bob = make_user(db), make_user(db)
    as_array = sync(db, alice, [good("c1")])
    wrapped = sync(db, bob, {"conversations": [good("c2")]})
    assert counts(as_array) == counts(wrapped) == {
        "conversations_received": 1, "conversations_failed": 0, "sessions_inserted": 1,
        "sessions_existing": 0, "messages_inserted": 2, "messages_existing": 0,
        "messages_skipped_failed": 0}
    assert as_array["errors"] == wrapped["errors"] == []
    assert stored_messages(db, "c2") == ["c2-a", "c2-u"]


def test_an_empty_list_is_an_empty_report(db: psycopg.Connection) -> None:
    report = sync(db, make_user(db), [])
    assert report == dict.fromkeys(REPORT_FIELDS - {"errors"}, 0) | {"errors": []}


@pytest.mark.parametrize("payload", [
    {"conversation": []}, {"conversations": {"id": "c1"}}, {"conversations": "c1"},
    "c1", 7, True, None, {},
], ids=repr)
def test_a_payload_that_is_not_a_list_of_conversations_is_refused(
        db: psycopg.Connection, payload: Any) -> None:
    user = make_user(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        sync(db, user, payload)
    assert "payload must be an array of conversations" in str(raised.value.diag.message_primary)
    db.rollback()
    with pytest.raises(ValidationError, match="payload must be an array"):
        chat.sync_user_conversations(db, user, payload if isinstance(payload, dict) else
                                     {"conversations": payload})


def test_a_sql_null_payload_is_refused_cleanly(db: psycopg.Connection) -> None:
    user = make_user(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("select public.sync_user_conversations(%s, null)", (user,))


def test_an_unknown_user_is_a_validation_error(db: psycopg.Connection) -> None:
    with pytest.raises(ValidationError, match="unknown user"):
        chat.sync_user_conversations(db, uuid.uuid4(), [good("c1")])


# --- inserting, and never updating ------------------------------------------------------------


def test_the_sign_in_upload_stores_every_successful_message(db: psycopg.Connection) -> None:
    user = make_user(db)
    story = scenario.story("s")
    report = sync(db, user, story)
    assert report == {
        "conversations_received": 3, "conversations_failed": 0, "sessions_inserted": 3,
        "sessions_existing": 0, "messages_inserted": successful(story), "messages_existing": 0,
        "messages_skipped_failed": 2, "errors": []}
    for conv in story:
        wanted = sorted(m["id"] for m in conv["messages"] if not m.get("error"))
        assert stored_messages(db, conv["id"]) == wanted
    db.commit()
    # the exact counters of the seeds' story: every successful message once, on its UTC day
    truth = scenario.truth(story)
    assert demo.read_counters(db, user) == demo.true_counters(truth)
    assert demo.read_days(db, user) == dict(truth.days)
    assert usage_drift(db) == [] and session_drift(db) == []


def test_the_fields_of_a_new_session_and_message_are_stored(db: psycopg.Connection) -> None:
    user = make_user(db)
    reply = message("m2", "assistant", content="**hi**", timestamp="2025-07-21T10:00:05.250Z",
                    input_tokens=4, output_tokens=30, total_tokens=34, elapsed_time=2.6,
                    model="moonshotai/kimi-k2:free", user_message_id="m1",
                    contentType="markdown", completion_id="gen-1")
    sync(db, user, [conversation("c1", message("m1", input_tokens=4), reply, title="Hello",
                                 createdAt="2025-07-21T09:59:00Z",
                                 updatedAt="2025-07-21T10:00:05Z")])
    session = db.execute("select user_id, title, created_at, message_count, total_tokens,"
                         " last_model from public.chat_sessions where id = 'c1'").fetchone()
    assert session == (user, "Hello", datetime(2025, 7, 21, 9, 59, tzinfo=UTC), 2, 38,
                       "moonshotai/kimi-k2:free")
    row = db.execute(
        "select session_id, role, content, input_tokens, output_tokens, total_tokens,"
        " elapsed_time, model, user_message_id, content_type, completion_id, message_timestamp,"
        " error_message from public.chat_messages where id = 'm2'").fetchone()
    assert row == ("c1", "assistant", "**hi**", 4, 30, 34, 3, "moonshotai/kimi-k2:free", "m1",
                   "markdown", "gen-1", datetime(2025, 7, 21, 10, 0, 5, 250000, tzinfo=UTC), None)


def test_a_session_without_title_or_dates_gets_defaults(db: psycopg.Connection) -> None:
    user = make_user(db)
    sync(db, user, [{"id": "c1", "messages": [message("m1", timestamp="2025-07-20T08:00:00Z")]}])
    row = db.execute("select title, created_at from public.chat_sessions where id = 'c1'"
                     ).fetchone()
    assert row == ("New Chat", datetime(2025, 7, 20, 8, 0, tzinfo=UTC))


def test_failed_messages_are_skipped_and_counted(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = sync(db, user, [conversation(
        "c1", message("ok"), message("flagged", error=True),
        message("with-reason", error_message="timeout"),
        message("not-failed", error=False, error_message=""))])
    assert (report["messages_inserted"], report["messages_skipped_failed"]) == (2, 2)
    assert report["errors"] == []
    assert stored_messages(db, "c1") == ["not-failed", "ok"]


def test_a_second_upload_with_everything_changed_updates_no_row(db: psycopg.Connection) -> None:
    user = make_user(db)
    story = scenario.story("s")
    sync(db, user, story)
    db.commit()
    versions, usage = row_versions(db), usage_state(db, user)
    changed = copy.deepcopy(story)
    for conv in changed:
        conv |= {"title": "renamed", "createdAt": "2024-01-01T00:00:00Z",
                 "updatedAt": "2026-01-01T00:00:00Z"}
        for m in conv["messages"]:
            m |= {"content": "edited", "input_tokens": 999, "output_tokens": 999,
                  "total_tokens": 1998, "model": "other/model", "timestamp": "2026-01-01T00:00:00Z"}
    report = sync(db, user, {"conversations": changed})
    db.commit()
    assert report == {
        "conversations_received": 3, "conversations_failed": 0, "sessions_inserted": 0,
        "sessions_existing": 3, "messages_inserted": 0, "messages_existing": successful(story),
        "messages_skipped_failed": 2, "errors": []}
    assert row_versions(db) == versions
    assert usage_state(db, user) == usage
    assert db.execute("select count(*) from public.chat_sessions where title = 'renamed'"
                      ).fetchone() == (0,)


def test_an_existing_session_gains_only_the_messages_it_lacks(db: psycopg.Connection) -> None:
    user = make_user(db)
    sync(db, user, [conversation("c1", message("m1"), message("m2", "assistant"))])
    db.commit()
    before = row_versions(db)
    later = conversation("c1", message("m1", content="edited"), message("m2", "assistant"),
                         message("m3", timestamp="2025-07-22T10:00:00Z"),
                         message("m4", "assistant", timestamp="2025-07-22T10:00:01Z"),
                         title="renamed")
    report = sync(db, user, [later])
    db.commit()
    assert counts(report) == {
        "conversations_received": 1, "conversations_failed": 0, "sessions_inserted": 0,
        "sessions_existing": 1, "messages_inserted": 2, "messages_existing": 2,
        "messages_skipped_failed": 0}
    after = row_versions(db)
    assert {k: after[k] for k in before if k[0] == "chat_messages"} == \
        {k: v for k, v in before.items() if k[0] == "chat_messages"}
    assert stored_messages(db, "c1") == ["m1", "m2", "m3", "m4"]
    row = db.execute("select title, message_count, (select content from public.chat_messages"
                     " where id = 'm1') from public.chat_sessions where id = 'c1'").fetchone()
    assert row == ("about c1", 4, "user says m1")
    assert session_drift(db) == []


# --- conflicts with other users' data ---------------------------------------------------------


def test_a_conversation_of_another_user_is_a_conflict(db: psycopg.Connection) -> None:
    alice, mallory = make_user(db), make_user(db)
    sync(db, alice, [good("c1")])
    db.commit()
    before = row_versions(db)
    taken = conversation("c1", message("c1-u", content="mine now"), message("c1-new"),
                         title="stolen")
    report = sync(db, mallory, [taken, good("c2")])
    assert counts(report) == {
        "conversations_received": 2, "conversations_failed": 1, "sessions_inserted": 1,
        "sessions_existing": 0, "messages_inserted": 2, "messages_existing": 0,
        "messages_skipped_failed": 0}
    assert {"conversation_id": "c1", "message_id": None,
            "reason": "conversation id already belongs to another user"} in report["errors"]
    assert {e["conversation_id"] for e in report["errors"]} == {"c1"}
    after = row_versions(db)
    assert {k: after[k] for k in before} == before  # nothing of alice's changed
    assert stored_messages(db, "c1") == ["c1-a", "c1-u"]  # and nothing was added to it
    assert session_owner(db, "c1") == alice and session_owner(db, "c2") == mallory


def test_a_message_id_of_another_user_is_a_conflict(db: psycopg.Connection) -> None:
    alice, mallory = make_user(db), make_user(db)
    sync(db, alice, [good("c1")])
    db.commit()
    before = row_versions(db)
    report = sync(db, mallory, [conversation("m-conv", message("fresh"), message("c1-u"))])
    assert report["errors"] == [{"conversation_id": "m-conv", "message_id": "c1-u",
                                 "reason": "message id already belongs to another user"}]
    assert (report["conversations_failed"], report["sessions_inserted"],
            report["messages_inserted"]) == (1, 0, 0)
    assert session_owner(db, "m-conv") is None
    assert row_versions(db) == before


def test_a_message_id_of_another_conversation_of_the_same_user_is_refused(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    sync(db, user, [good("c1")])
    report = sync(db, user, [conversation("c2", message("c2-u"), message("c1-a", "assistant"))])
    assert report["errors"] == [{"conversation_id": "c2", "message_id": "c1-a",
                                 "reason": "message id already belongs to conversation c1"}]
    assert session_owner(db, "c2") is None and stored_messages(db, "c1") == ["c1-a", "c1-u"]


# --- invalid input: a precise reason, the conversation not written, the others written -------


BAD_MESSAGES: list[tuple[str, Any, str | None, str]] = [
    # (case, the bad message, the message id the error names, the reason, or a part of it)
    ("no id", {"role": "user", "content": "x", "timestamp": "2025-07-21T10:00:00Z"}, None,
     "message #2 has no id"),
    ("empty id", message(""), "", "message #2 has no id"),
    ("blank id", message("   "), "", "message #2 has no id"),
    ("numeric id", message("x") | {"id": 17}, None, "message #2 has no id"),
    ("unknown role", message("bad", "robot"), "bad", 'unknown role "robot"'),
    ("no role", {"id": "bad", "content": "x", "timestamp": "2025-07-21T10:00:00Z"}, "bad",
     "unknown role null"),
    ("no content", message("bad") | {"content": None}, "bad", "content must be a string"),
    ("no timestamp", {"id": "bad", "role": "user", "content": "x"}, "bad", "missing timestamp"),
    ("30 February", message("bad", timestamp="2025-02-30T10:00:00Z"), "bad",
     'unparseable timestamp "2025-02-30T10:00:00Z"'),
    ("29 February, not a leap year", message("bad", timestamp="2025-02-29"), "bad",
     "unparseable timestamp"),
    ("empty timestamp", message("bad", timestamp=""), "bad", 'unparseable timestamp ""'),
    ("numeric timestamp", message("bad", timestamp=1753092000), "bad",
     "unparseable timestamp 1753092000"),
    ("words for a timestamp", message("bad", timestamp="yesterday"), "bad",
     "unparseable timestamp"),
    ("negative input tokens", message("bad", input_tokens=-1), "bad",
     "input_tokens must be an integer from 0 to 10000000, got -1"),
    ("fractional output tokens", message("bad", output_tokens=1.5), "bad",
     "output_tokens must be an integer from 0 to 10000000, got 1.5"),
    ("tokens as a string", message("bad", input_tokens="5"), "bad",
     'input_tokens must be an integer from 0 to 10000000, got "5"'),
    ("tokens beyond integer", message("bad", output_tokens=2**31), "bad",
     "output_tokens must be an integer from 0 to 10000000, got 2147483648"),
    ("negative total", message("bad", total_tokens=-3), "bad", "total_tokens must be"),
    ("negative elapsed time", message("bad", elapsed_time=-2), "bad", "elapsed_time must be"),
    ("unknown content type", message("bad", contentType="html"), "bad", "contentType must be"),
    ("model not a string", message("bad", model=["x"]), "bad", "model must be a string"),
    ("model too long", message("bad", model="m" * 101), "bad", "model is longer than 100"),
    ("error not a boolean", message("bad", error="yes"), "bad", "error must be true or false"),
    ("error_message not a string", message("bad", error_message=5), "bad",
     "error_message must be a string"),
    ("not an object", ["bad"], None, "message #2 is not a JSON object"),
]


def test_each_invalid_message_fails_its_conversation_only(db: psycopg.Connection) -> None:
    """One call, one conversation per case (a valid message, then the bad one), and good
    conversations around them: each bad one gets its reason, the good ones are written."""
    user = make_user(db)
    cases = {f"c{i}": case for i, case in enumerate(BAD_MESSAGES)}

    def own_id(cid: str, value: Any) -> Any:  # "bad" -> "c7-bad": no id is shared by two cases
        if isinstance(value, dict) and value.get("id") == "bad":
            return value | {"id": f"{cid}-bad"}
        return f"{cid}-bad" if value == "bad" else value

    payload = [good("first"), *[conversation(cid, message(f"{cid}-ok"), own_id(cid, bad))
                                for cid, (_, bad, _, _) in cases.items()], good("last")]
    report = sync(db, user, payload)
    got = {e["conversation_id"]: e for e in report["errors"]}
    assert len(report["errors"]) == len(cases)
    for cid, (name, _, message_id, reason) in cases.items():
        assert got[cid]["message_id"] == own_id(cid, message_id), name
        assert reason in got[cid]["reason"], (name, got[cid]["reason"])
    assert counts(report) == {
        "conversations_received": len(cases) + 2, "conversations_failed": len(cases),
        "sessions_inserted": 2, "sessions_existing": 0, "messages_inserted": 4,
        "messages_existing": 0, "messages_skipped_failed": 0}
    assert db.execute("select array_agg(id order by id) from public.chat_sessions").fetchone() \
        == (["first", "last"],)
    assert stored_messages(db, "first") and stored_messages(db, "last")


BAD_CONVERSATIONS: list[tuple[str, Any, str | None, str]] = [
    ("no id", {"title": "x", "messages": [message("m")]}, None, "conversation #2 has no id"),
    ("empty id", {"id": "", "messages": [message("m")]}, "", "conversation #2 has no id"),
    ("numeric id", {"id": 42, "messages": [message("m")]}, None, "conversation #2 has no id"),
    ("messages not a list", {"id": "c1", "messages": {"id": "m"}}, "c1",
     "messages must be an array"),
    ("title not a string", {"id": "c1", "title": 5, "messages": []}, "c1",
     "title must be a string"),
    ("title too long", {"id": "c1", "title": "t" * 256, "messages": []}, "c1",
     "title is longer than 255"),
    ("createdAt unparseable", {"id": "c1", "createdAt": "2025-02-30", "messages": []}, "c1",
     'unparseable createdAt "2025-02-30"'),
    ("updatedAt unparseable", {"id": "c1", "updatedAt": {"at": 1}, "messages": []}, "c1",
     "unparseable updatedAt"),
    ("a string", "c1", None, "conversation #2 is not a JSON object"),
    ("a number", 3, None, "conversation #2 is not a JSON object"),
    ("null", None, None, "conversation #2 is not a JSON object"),
    ("a list", [good("c1")], None, "conversation #2 is not a JSON object"),
]


@pytest.mark.parametrize(("bad", "conversation_id", "reason"), [
    pytest.param(*case[1:], id=case[0])
    for case in BAD_CONVERSATIONS])
def test_an_invalid_conversation_is_reported_and_the_others_written(
        db: psycopg.Connection, bad: Any, conversation_id: str | None, reason: str) -> None:
    user = make_user(db)
    report = sync(db, user, [good("before"), bad, good("after")])
    assert report["errors"] == [{"conversation_id": conversation_id, "message_id": None,
                                 "reason": report["errors"][0]["reason"]}]
    assert reason in report["errors"][0]["reason"]
    assert (report["conversations_received"], report["conversations_failed"],
            report["sessions_inserted"], report["messages_inserted"]) == (3, 1, 2, 4)
    assert db.execute("select count(*) from public.chat_sessions").fetchone() == (2,)
    assert db.execute("select count(*) from public.chat_messages").fetchone() == (4,)


def test_a_conversation_id_twice_in_the_payload_fails_both(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = sync(db, user, [good("c1"), conversation("c1", message("other")), good("c2")])
    assert report["errors"] == [
        {"conversation_id": "c1", "message_id": None,
         "reason": "conversation id appears more than once in the payload"}] * 2
    assert (report["conversations_failed"], report["sessions_inserted"]) == (2, 1)
    assert session_owner(db, "c1") is None and stored_messages(db, "c2") == ["c2-a", "c2-u"]


def test_a_message_id_twice_in_a_conversation_fails_it(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = sync(db, user, [conversation("c1", message("m1"), message("m1", "assistant")),
                             good("c2")])
    assert report["errors"] == [
        {"conversation_id": "c1", "message_id": "m1",
         "reason": "message id appears more than once in the payload"}] * 2
    assert session_owner(db, "c1") is None and session_owner(db, "c2") == user


def test_a_message_id_in_two_conversations_fails_both(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = sync(db, user, [conversation("c1", message("m1"), message("shared")),
                             conversation("c2", message("shared")), good("c3")])
    assert [(e["conversation_id"], e["message_id"]) for e in report["errors"]] == [
        ("c1", "shared"), ("c2", "shared")]
    assert (report["conversations_failed"], report["sessions_inserted"],
            report["messages_inserted"]) == (2, 1, 2)
    assert stored_messages(db, "c1") == [] and session_owner(db, "c2") is None


def test_every_problem_of_a_conversation_is_listed_in_order(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = sync(db, user, [conversation(
        "c1", message("a", "robot"), message("b"), message("c", input_tokens=-5))])
    assert [(e["conversation_id"], e["message_id"]) for e in report["errors"]] == [
        ("c1", "a"), ("c1", "c")]
    assert report["conversations_failed"] == 1


def test_conversation_ids_that_differ_only_by_spaces_are_duplicates(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    report = sync(db, user, [good("c1"), conversation(" c1", message("other")), good("c2")])
    assert [e["conversation_id"] for e in report["errors"]] == ["c1", "c1"]
    assert session_owner(db, "c2") == user


@pytest.mark.parametrize("messages", [
    [message("m1", input_tokens=2**31 - 1, output_tokens=1)],
    [message("m1", input_tokens=10_000_001)],
], ids=["near 2^31", "just over the cap"])
def test_token_counts_over_the_cap_fail_only_their_conversation(
        db: psycopg.Connection, messages: list[dict[str, Any]]) -> None:
    user = make_user(db)
    report = sync(db, user, [conversation("c1", *messages), good("c2")])
    assert [e["conversation_id"] for e in report["errors"]] == ["c1"]
    assert session_owner(db, "c2") == user


def test_a_nul_character_fails_its_conversation(db: psycopg.Connection) -> None:
    # jsonb cannot hold a NUL: the client reports that conversation (tests/test_sync_hostile.py).
    user = make_user(db)
    report = chat.sync_user_conversations(
        db, user, [conversation("c1", message("m1", content="a\0b"))])
    assert (report.conversations_failed, report.messages_inserted) == (1, 0)
    assert "NUL" in report.errors[0].reason


# --- timestamps -------------------------------------------------------------------------------


def test_timestamps_without_offset_are_utc_whatever_the_session_time_zone(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    db.execute("set time zone 'America/New_York'")
    sync(db, user, [conversation(
        "c1", message("naive", timestamp="2025-07-21T23:30:00"),
        message("offset", timestamp="2025-07-21T23:30:00-05:00"),
        message("date-only", timestamp="2025-07-20"),
        message("compact-offset", timestamp="2025-07-21 23:30+0530"),
        message("leap-day", timestamp="2024-02-29T01:00:00.5Z"))])
    rows = dict(db.execute("select id, message_timestamp from public.chat_messages").fetchall())
    assert rows == {
        "naive": datetime(2025, 7, 21, 23, 30, tzinfo=UTC),
        "offset": datetime(2025, 7, 22, 4, 30, tzinfo=UTC),
        "date-only": datetime(2025, 7, 20, tzinfo=UTC),
        "compact-offset": datetime(2025, 7, 21, 18, 0, tzinfo=UTC),
        "leap-day": datetime(2024, 2, 29, 1, 0, 0, 500000, tzinfo=UTC),
    }
    assert demo.read_days(db, user) == {date(2024, 2, 29): 1, date(2025, 7, 20): 1,
                                        date(2025, 7, 21): 2, date(2025, 7, 22): 1}


# --- size and concurrency ---------------------------------------------------------------------


def test_five_hundred_conversations_of_forty_messages_in_one_call(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    payload = [conversation(f"c{i}", *[
        message(f"c{i}-m{j}", "user" if j % 2 == 0 else "assistant",
                timestamp=f"2025-07-21T10:{j:02d}:00Z", input_tokens=3, output_tokens=5,
                model="m") for j in range(40)]) for i in range(500)]
    started = time.perf_counter()
    report = sync(db, user, payload)
    db.commit()
    print(f"sync of 500 x 40 messages: {time.perf_counter() - started:.2f} s")
    assert counts(report) == {
        "conversations_received": 500, "conversations_failed": 0, "sessions_inserted": 500,
        "sessions_existing": 0, "messages_inserted": 20_000, "messages_existing": 0,
        "messages_skipped_failed": 0}
    assert demo.read_counters(db, user) == demo.Counters(
        messages_sent=10_000, messages_received=10_000, input_tokens=30_000,
        output_tokens=50_000, sessions_created=500, profile_messages=20_000,
        profile_tokens=80_000, profile_sessions=500)


def test_a_concurrent_upload_of_the_same_conversation_is_a_safe_conflict(
        db: psycopg.Connection, db_dsn: str,
        autocommit_conn: Callable[[str], psycopg.Connection]) -> None:
    user = make_user(db)
    sync(db, user, [good("c1")])  # not committed yet: the other upload must wait for it
    outcome: list[BaseException | chat.SyncReport] = []

    def other_upload() -> None:
        with psycopg.connect(db_dsn) as other:
            try:
                outcome.append(chat.sync_user_conversations(other, user, [good("c1")]))
            except BaseException as exc:  # handed over to the test's thread
                outcome.append(exc)

    thread = threading.Thread(target=other_upload)
    thread.start()
    watcher = autocommit_conn(db_dsn)
    for _ in range(400):  # until the other upload waits for our uncommitted session row
        waiting = watcher.execute("select count(*) from pg_stat_activity where datname ="
                                  " current_database() and wait_event_type = 'Lock'").fetchone()
        if waiting == (1,):
            break
        time.sleep(0.025)
    assert waiting == (1,), "the concurrent upload never waited for the first one"
    db.commit()
    thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    with psycopg.connect(db_dsn) as retry:  # it wrote nothing: retrying is safe
        report = chat.sync_user_conversations(retry, user, [good("c1")])
    assert (report.sessions_existing, report.messages_existing, report.errors) == (1, 2, [])
