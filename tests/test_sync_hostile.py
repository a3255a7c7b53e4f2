"""Hostile and heavy payloads for the sign-in sync: each bad value fails its own conversation.

A NUL, a lone surrogate, NaN, a too-long id, a timestamp outside the window, a token total past
what a session holds: the conversation that holds it is reported (with the reason), and the
valid conversations beside it are written.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import psycopg
import pytest

import pgchat.chat as chat
from pgchat import PermissionDenied
from pgchat.chat import SyncReport
from tests.helpers import make_user, message, session_drift, usage_drift


def noise(length: int, seed: str = "") -> str:
    """An id of `length` characters that does not compress (a repeated character would: then
    the old btree limit was never reached)."""
    out, k = "", 0
    while len(out) < length:
        out += base64.b64encode(hashlib.sha256(f"{seed}{k}".encode()).digest()).decode()[:43]
        k += 1
    return out[:length]


LONG_CONV, LONG_MSG, LONG_REF = noise(3000, "c"), noise(8000, "m"), noise(8000, "q")


def conversation(conv_id: str, *messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": conv_id, "title": "a chat", "messages": list(messages)} | fields


def good(k: int) -> dict[str, Any]:
    return conversation(f"good-{k}", message(f"good-{k}-u", input_tokens=3),
                        message(f"good-{k}-a", "assistant", output_tokens=4,
                                user_message_id=f"good-{k}-u"))


def written(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("select id from public.chat_sessions").fetchall()}


def assert_isolated(conn: psycopg.Connection, report: SyncReport, bad_id: str | None,
                    reason: str) -> None:
    """The bad conversation failed with `reason`; good-0 and good-1 were written whole."""
    assert report.conversations_received == 3 and report.conversations_failed == 1
    assert [e.conversation_id for e in report.errors] == [bad_id]
    assert reason in report.errors[0].reason, report.errors[0].reason
    assert report.sessions_inserted == 2 and report.messages_inserted == 4
    assert written(conn) == {"good-0", "good-1"}
    assert usage_drift(conn) == [] and session_drift(conn) == []


HOSTILE_MESSAGES = {
    "NUL in the content": ({"content": "a\0b"}, "content contains a NUL character"),
    "NUL in the model": ({"role": "assistant", "model": "x\0"}, "model contains a NUL"),
    "lone high surrogate": ({"content": "broken \ud800 text"}, "lone surrogate (\\ud800)"),
    "lone low surrogate in a field name": ({"\udc00": 1}, "lone surrogate (\\udc00)"),
    "NaN tokens": ({"input_tokens": float("nan")}, "input_tokens must be a finite number"),
    "infinite elapsed time": ({"role": "assistant", "elapsed_time": float("inf")},
                              "elapsed_time must be a finite number"),
}


@pytest.mark.parametrize(("fields", "reason"), HOSTILE_MESSAGES.values(),
                         ids=HOSTILE_MESSAGES.keys())
def test_a_value_jsonb_cannot_hold_fails_only_its_conversation(
        db: psycopg.Connection, fields: dict[str, Any], reason: str) -> None:
    user = make_user(db)
    bad = conversation("bad", message("bad-1"), message("bad-2") | fields)
    report = chat.sync_user_conversations(db, user, [good(0), bad, good(1)])
    assert report.errors[0].message_id == "bad-2"
    assert_isolated(db, report, "bad", reason)


def test_a_nul_in_a_title_fails_only_its_conversation(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = chat.sync_user_conversations(
        db, user, [good(0), conversation("bad", message("bad-1"), title="t\0"), good(1)])
    assert_isolated(db, report, "bad", "title contains a NUL character")


def test_the_wrapped_form_is_checked_the_same_way(db: psycopg.Connection) -> None:
    user = make_user(db)
    payload = {"conversations": [good(0), conversation("bad", message("m", content="\0")),
                                 good(1)]}
    assert_isolated(db, chat.sync_user_conversations(db, user, payload), "bad", "NUL")


BAD_IN_SQL = {
    "3,000-character conversation id": (
        lambda: conversation(LONG_CONV, message("long-conv-m")),
        LONG_CONV, "conversation id is longer than 255 characters (3000)"),
    "8,000-character message id": (
        lambda: conversation("bad", message(LONG_MSG)), "bad",
        "message id is longer than 255 characters (8000)"),
    "8,000-character user_message_id": (
        lambda: conversation("bad", message("bad-a", "assistant", user_message_id=LONG_REF)),
        "bad", "user_message_id is longer than 255 characters"),
    "year 1000": (lambda: conversation("bad", message("bad-m", timestamp="1000-01-01T00:00:00Z")),
                  "bad", "outside the accepted window"),
    "9999-12-31": (lambda: conversation("bad", message("bad-m", timestamp="9999-12-31T23:59:59Z")),
                   "bad", "outside the accepted window"),
    "createdAt in 9999": (lambda: conversation("bad", message("bad-m"),
                                               createdAt="9999-12-31T00:00:00Z"),
                          "bad", "createdAt \"9999-12-31T00:00:00Z\" is outside the accepted"),
    "updatedAt in year 1000": (lambda: conversation("bad", message("bad-m"),
                                                    updatedAt="1000-01-01T00:00:00Z"),
                               "bad", "updatedAt \"1000-01-01T00:00:00Z\" is outside"),
    "-500 input tokens": (lambda: conversation("bad", message("bad-m", input_tokens=-500)),
                          "bad", "input_tokens must be an integer from 0 to 10000000, got -500"),
    "2,000,000,000 input tokens": (
        lambda: conversation("bad", message("bad-m", input_tokens=2_000_000_000)),
        "bad", "input_tokens must be an integer from 0 to 10000000, got 2000000000"),
}


@pytest.mark.parametrize(("make", "bad_id", "reason"), BAD_IN_SQL.values(), ids=BAD_IN_SQL.keys())
def test_a_bad_id_number_or_time_fails_only_its_conversation(
        db: psycopg.Connection, make: Any, bad_id: str, reason: str) -> None:
    user = make_user(db)
    report = chat.sync_user_conversations(db, user, [good(0), make(), good(1)])
    assert_isolated(db, report, bad_id, reason)
    assert db.execute("select count(*) from public.user_usage_daily where usage_date"
                      " not between '2000-01-01' and current_date + 1").fetchone() == (0,)


def test_a_conversation_whose_tokens_would_pass_the_session_bound_fails_alone(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    heavy = conversation("heavy", *[message(f"h{k}", input_tokens=10_000_000)
                                    for k in range(215)])
    report = chat.sync_user_conversations(db, user, [good(0), heavy, good(1)])
    assert_isolated(db, report, "heavy", "would hold 2150000000 tokens, more than the 2147483647")


def test_the_raw_sql_call_reports_a_bad_conversation_and_writes_the_rest(
        db: psycopg.Connection) -> None:
    # What a REST (PostgREST) caller sends: JSON text, straight to the function.
    user = make_user(db)
    payload = [good(0), conversation(LONG_CONV, message("m1")), good(1)]
    row = db.execute("select public.sync_user_conversations(%s, %s::jsonb)",
                     (user, json.dumps(payload))).fetchone()
    assert row is not None
    report = SyncReport.from_json(row[0])
    assert_isolated(db, report, LONG_CONV, "longer than 255 characters")


def test_many_bad_conversations_beside_good_ones(db: psycopg.Connection) -> None:
    user = make_user(db)
    payload = [conversation(f"bad-{k}", message(f"bad-{k}-m", input_tokens=-1)) for k in range(300)]
    payload += [good(k) for k in range(300)]
    report = chat.sync_user_conversations(db, user, payload)
    assert report.conversations_failed == 300 and report.sessions_inserted == 300
    assert report.messages_inserted == 600 and len(report.errors) == 300
    assert usage_drift(db) == [] and session_drift(db) == []


def test_client_side_rejections_still_require_the_caller_to_act_for_itself(
        db: psycopg.Connection) -> None:
    # Every bad conversation is dropped by the client; the call still reaches the caller check.
    alice, bob = make_user(db), make_user(db)
    db.execute("set local role authenticated")
    db.execute("select set_config('request.jwt.claims', %s, true)",
               (json.dumps({"role": "authenticated", "sub": str(alice)}),))
    with pytest.raises(PermissionDenied, match="not allowed to act for user"):
        chat.sync_user_conversations(db, bob, [conversation("c", message("m", content="\0"))])
    db.rollback()
