"""Exactly-once usage: every write path books a message once, failed messages never, each on its
own UTC day; track_user_usage shares the triggers' idempotency keys.

The counters are read back from user_usage_daily and profiles.usage_stats and compared with the
values written; `pgchat.usage_drift()` (counters vs ledger) and `pgchat.session_stats_drift()`
(session statistics vs a recomputation) must stay empty after every write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgchat.errors import ValidationError
from pgchat.usage import track_usage
from pgchat_dev import scenario
from tests.helpers import (
    make_user,
    session_drift,
    usage_days,
    usage_drift,
    usage_stats,
    write_messages,
)

DAY = date(2025, 3, 1)
MODEL = "openai/gpt-4o-mini"
OTHER_MODEL = "deepseek/deepseek-r1-0528:free"
SESSION_CREATED = "2025-03-01T08:00:00Z"

QUESTION = {"id": "u1", "session_id": "s1", "role": "user", "content": "what is 2+2?",
            "input_tokens": 7, "total_tokens": 7, "message_timestamp": "2025-03-01T12:00:00Z"}
ANSWER = {"id": "a1", "session_id": "s1", "role": "assistant", "content": "4", "model": MODEL,
          "user_message_id": "u1",
          "output_tokens": 30, "total_tokens": 30, "elapsed_time": 75,
          "message_timestamp": "2025-03-01T12:00:05Z"}

# What the exchange above adds to DAY (the session was created on DAY too).
EXCHANGE_DAY = {"messages_sent": 1, "messages_received": 1, "input_tokens": 7,
                "output_tokens": 30, "total_tokens": 37, "models_used": {MODEL: 1},
                "sessions_created": 1, "active_seconds": 75, "active_minutes": 1}
EXCHANGE_TOTALS = {"total_messages": 2, "total_tokens": 37, "sessions_created": 1}
EMPTY_DAY = {"messages_sent": 0, "messages_received": 0, "input_tokens": 0, "output_tokens": 0,
             "total_tokens": 0, "models_used": {}, "sessions_created": 0, "active_seconds": 0,
             "active_minutes": 0}


def add_session(conn: psycopg.Connection, user_id: UUID, session_id: str = "s1",
                created_at: str = SESSION_CREATED) -> None:
    conn.execute(
        "INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at,"
        " last_activity) VALUES (%s, %s, 'chat', %s, %s, %s)",
        (session_id, user_id, created_at, created_at, created_at))


def day(conn: psycopg.Connection, user_id: UUID, usage_date: date = DAY) -> dict[str, Any]:
    return usage_days(conn, user_id).get(usage_date, EMPTY_DAY)


def assert_consistent(conn: psycopg.Connection) -> None:
    assert usage_drift(conn) == []
    assert session_drift(conn) == []


def ledger(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """What was counted: the ledger's rows and the stored events it does not cover."""
    return conn.execute(
        "SELECT kind, event_key, usage_date, messages_sent, messages_received, input_tokens,"
        " output_tokens, model, active_seconds, source FROM pgchat.counted_events"
        " ORDER BY kind, event_key, source").fetchall()


def ledger_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """The ledger itself: what is counted and no longer stored as it was counted."""
    return conn.execute(
        "SELECT kind, event_key, source FROM pgchat.usage_ledger ORDER BY kind, event_key"
    ).fetchall()


@pytest.fixture
def user(db: psycopg.Connection) -> UUID:
    return make_user(db)


@pytest.fixture
def session(db: psycopg.Connection, user: UUID) -> str:
    add_session(db, user)
    db.commit()
    return "s1"


# --- the write paths ---------------------------------------------------------------------------


def as_chat_message(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A chat_messages row in the frontend's ChatMessage shape (what the functions take)."""
    msg = {"id": row["id"], "role": row["role"], "content": row["content"],
           "timestamp": row["message_timestamp"], "input_tokens": row.get("input_tokens", 0),
           "output_tokens": row.get("output_tokens", 0),
           "total_tokens": row.get("total_tokens", 0), "elapsed_time": row.get("elapsed_time", 0),
           "model": row.get("model")}
    return msg | changes


def via_exchange(conn: psycopg.Connection, user_id: UUID) -> None:
    conn.execute("SELECT public.write_chat_exchange(%s, 's1', %s, %s)",
                 (user_id, Jsonb(as_chat_message(QUESTION)), Jsonb(as_chat_message(ANSWER))))


def via_sync(conn: psycopg.Connection, user_id: UUID) -> None:
    report = scenario.pgchat_upload(conn, user_id, [{
        "id": "s1", "title": "chat", "createdAt": SESSION_CREATED,
        "messages": [as_chat_message(QUESTION), as_chat_message(ANSWER)]}])
    assert report["errors"] == []


def via_legacy_route(conn: psycopg.Connection, user_id: UUID) -> None:
    """The legacy sync route's upsert of every message (ON CONFLICT DO UPDATE of every column)."""
    scenario.legacy_write_messages(conn, "s1", [
        as_chat_message(QUESTION), as_chat_message(ANSWER, user_message_id="u1")])


def recreate_session(conn: psycopg.Connection, user_id: UUID) -> None:
    """The conversation is cleared (its messages cascade) and uploaded again."""
    conn.execute("DELETE FROM public.chat_sessions WHERE id = 's1'")
    add_session(conn, user_id)
    write_messages(conn, [QUESTION, ANSWER])


Rewrite = Callable[[psycopg.Connection, UUID], None]

REWRITES: dict[str, Rewrite] = {
    "insert_on_conflict_do_nothing": lambda c, u: write_messages(c, [QUESTION, ANSWER], "nothing"),
    "upsert_same_data": lambda c, u: write_messages(c, [QUESTION, ANSWER], "update"),
    "upsert_changed_content_and_tokens": lambda c, u: write_messages(c, [
        QUESTION | {"content": "edited", "input_tokens": 700, "total_tokens": 700},
        ANSWER | {"content": "edited", "output_tokens": 3000, "total_tokens": 3000,
                  "model": OTHER_MODEL, "elapsed_time": 999}], "update"),
    "update_content": lambda c, u: c.execute(
        "UPDATE public.chat_messages SET content = content || ' (edited)'"),
    "update_tokens_and_model": lambda c, u: c.execute(
        "UPDATE public.chat_messages SET input_tokens = input_tokens + 100,"
        " output_tokens = output_tokens + 100, total_tokens = total_tokens + 100,"
        " model = CASE WHEN role = 'assistant' THEN %s END", (OTHER_MODEL,)),
    "delete_and_reinsert": lambda c, u: (
        c.execute("DELETE FROM public.chat_messages WHERE session_id = 's1'"),
        write_messages(c, [QUESTION, ANSWER])),
    "clear_conversation_and_upload_again": recreate_session,
    "delete_then_sync": lambda c, u: (
        c.execute("DELETE FROM public.chat_sessions WHERE id = 's1'"), via_sync(c, u)),
    "sync_user_conversations": via_sync,
    "write_chat_exchange": via_exchange,
    "legacy_sync_route_upsert": via_legacy_route,
}


@pytest.mark.parametrize("rewrite", REWRITES.values(), ids=REWRITES.keys())
def test_rewriting_an_exchange_never_counts_it_again(
    db: psycopg.Connection, user: UUID, session: str, rewrite: Rewrite
) -> None:
    write_messages(db, [QUESTION, ANSWER])
    db.commit()
    assert day(db, user) == EXCHANGE_DAY

    for _ in range(3):
        rewrite(db, user)
        db.commit()
        assert day(db, user) == EXCHANGE_DAY
        assert usage_stats(db, user) == EXCHANGE_TOTALS
        assert_consistent(db)
    assert set(usage_days(db, user)) == {DAY}
    assert [(k, key) for k, key, *_ in ledger(db)] == [
        ("message", "a1"), ("message", "u1"), ("session", "s1")]


def rows_written(conn: psycopg.Connection) -> int:
    """Rows this transaction has inserted, updated or deleted so far in public and pgchat."""
    row = conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)"
                       " FROM pg_stat_xact_user_tables WHERE schemaname IN ('public', 'pgchat')"
                       ).fetchone()
    assert row is not None
    return int(row[0])


UNCHANGED_REWRITES = ("insert_on_conflict_do_nothing", "upsert_same_data",
                      "sync_user_conversations")


def test_rewriting_unchanged_rows_writes_no_row_anywhere(
    db: psycopg.Connection, user: UUID
) -> None:
    via_exchange(db, user)
    db.commit()
    written = {}
    for name in (*UNCHANGED_REWRITES, "write_chat_exchange"):
        with db.transaction(force_rollback=True):
            before = rows_written(db)
            REWRITES[name](db, user)
            written[name] = rows_written(db) - before
    assert written == dict.fromkeys((*UNCHANGED_REWRITES, "write_chat_exchange"), 0)


FIRST_WRITES: dict[str, Rewrite] = {
    "plain_insert": lambda c, u: (add_session(c, u), write_messages(c, [QUESTION, ANSWER])),
    "write_chat_exchange": via_exchange,
    "sync_user_conversations": via_sync,
    "legacy_sync_route_upsert": lambda c, u: (add_session(c, u), via_legacy_route(c, u)),
}


def test_every_write_path_counts_an_exchange_once(db: psycopg.Connection, user: UUID) -> None:
    observed = {}
    for name, first_write in FIRST_WRITES.items():  # each on a clean slate
        with db.transaction(force_rollback=True):
            first_write(db, user)
            observed[name] = (day(db, user), usage_stats(db, user), usage_drift(db),
                              session_drift(db))
    assert observed == {name: (EXCHANGE_DAY, EXCHANGE_TOTALS, [], []) for name in FIRST_WRITES}


def test_the_first_successful_version_is_what_counts(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [ANSWER])
    write_messages(db, [ANSWER | {"output_tokens": 5000, "total_tokens": 5000,
                                  "model": OTHER_MODEL, "elapsed_time": 3600}], "update")
    db.commit()
    counted = day(db, user)
    assert (counted["output_tokens"], counted["models_used"], counted["active_seconds"]) == (
        30, {MODEL: 1}, 75)
    # The first version's values, kept in the ledger when the row changed them.
    assert ledger(db)[0] == ("message", "a1", DAY, 0, 1, 0, 30, MODEL, 75, "changed")
    assert ledger_rows(db) == [("message", "a1", "changed")]
    # The session statistics follow the row as it is now.
    row = db.execute("SELECT total_tokens, last_model FROM public.chat_sessions").fetchone()
    assert row == (5000, OTHER_MODEL)
    assert_consistent(db)


def test_the_ledger_survives_deleting_messages_and_sessions(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION, ANSWER])
    db.commit()
    before = ledger(db)

    db.execute("DELETE FROM public.chat_messages WHERE id = 'a1'")
    db.execute("DELETE FROM public.chat_sessions WHERE id = 's1'")
    db.commit()

    assert db.execute("SELECT count(*) FROM public.chat_messages").fetchone() == (0,)
    assert [r[:-1] for r in ledger(db)] == [r[:-1] for r in before]
    assert {r[-1] for r in before} == {"stored"}
    assert ledger_rows(db) == [("message", "a1", "deleted"), ("message", "u1", "deleted"),
                               ("session", "s1", "deleted")]
    assert day(db, user) == EXCHANGE_DAY
    assert usage_stats(db, user) == EXCHANGE_TOTALS
    assert usage_drift(db) == []


def test_deleting_a_user_deletes_its_ledger_and_counters_only(db: psycopg.Connection) -> None:
    gone, kept = make_user(db), make_user(db)
    for n, owner in enumerate((gone, kept)):
        add_session(db, owner, f"s{n}")
        write_messages(db, [QUESTION | {"id": f"u{n}", "session_id": f"s{n}"}])
    db.commit()

    db.execute("DELETE FROM auth.users WHERE id = %s", (gone,))
    db.commit()

    owners = db.execute("SELECT DISTINCT user_id FROM pgchat.counted_events").fetchall()
    assert owners == [(kept,)]
    assert usage_days(db, gone) == {}
    assert day(db, kept)["messages_sent"] == 1
    assert usage_drift(db) == []


def test_a_user_writing_through_rls_is_counted_once(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    """The Supabase client path: role authenticated, the user's JWT claims, RLS on."""
    db.execute("SET LOCAL ROLE authenticated")
    db.execute("SELECT set_config('request.jwt.claims', %s, true)",
               (json.dumps({"sub": str(user), "role": "authenticated"}),))
    write_messages(db, [QUESTION, ANSWER])
    write_messages(db, [QUESTION | {"content": "edited", "input_tokens": 99}, ANSWER], "update")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
        db.execute("SELECT count(*) FROM pgchat.usage_ledger")  # the ledger is not theirs to read
    db.commit()
    assert day(db, user) == EXCHANGE_DAY
    assert_consistent(db)


def test_system_messages_never_count(db: psycopg.Connection, user: UUID, session: str) -> None:
    write_messages(db, [{"id": "sys", "session_id": "s1", "role": "system",
                         "content": "be nice", "input_tokens": 5, "total_tokens": 5}])
    db.commit()
    assert day(db, user) == EMPTY_DAY | {"sessions_created": 1}
    assert [k for k, *_ in ledger(db)] == ["session"]


# --- failed messages ---------------------------------------------------------------------------

FAILED_ANSWER = ANSWER | {"error_message": "upstream provider timeout"}
QUESTION_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ANSWER_AT = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)
QUESTION_ONLY_DAY = EMPTY_DAY | {"messages_sent": 1, "input_tokens": 7, "total_tokens": 7,
                                 "sessions_created": 1}


def session_stats(conn: psycopg.Connection) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT message_count, total_tokens, last_message_preview, last_model,"
        " last_message_timestamp FROM public.chat_sessions WHERE id = 's1'").fetchone()
    assert row is not None
    return tuple(row)


def test_a_failed_message_adds_nothing_to_usage_or_session_statistics(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION, FAILED_ANSWER])
    db.commit()
    assert day(db, user) == QUESTION_ONLY_DAY
    assert usage_stats(db, user) == {"total_messages": 1, "total_tokens": 7, "sessions_created": 1}
    assert session_stats(db) == (1, 7, "what is 2+2?", None, QUESTION_AT)
    assert_consistent(db)


RETRIES: dict[str, Rewrite] = {
    "update_error_message_to_null": lambda c, u: c.execute(
        "UPDATE public.chat_messages SET error_message = NULL WHERE id = 'a1'"),
    "update_error_message_to_empty": lambda c, u: c.execute(
        "UPDATE public.chat_messages SET error_message = '' WHERE id = 'a1'"),
    "upsert_without_error": lambda c, u: write_messages(c, [ANSWER], "update"),
    "delete_and_insert_without_error": lambda c, u: (
        c.execute("DELETE FROM public.chat_messages WHERE id = 'a1'"), write_messages(c, [ANSWER])),
}


def test_a_successful_retry_counts_once(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION, FAILED_ANSWER])
    observed = {}
    for name, retry in RETRIES.items():
        with db.transaction(force_rollback=True):
            for attempt in range(3):
                retry(db, user)
                observed[name, attempt] = (day(db, user), usage_stats(db, user),
                                           session_stats(db), usage_drift(db), session_drift(db))
    after_retry = (EXCHANGE_DAY, EXCHANGE_TOTALS, (2, 37, "4", MODEL, ANSWER_AT),
                   [], [])
    assert observed == {(name, attempt): after_retry for name in RETRIES for attempt in range(3)}


def test_a_failed_retry_of_a_failed_message_still_counts_nothing(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION, FAILED_ANSWER])
    write_messages(db, [FAILED_ANSWER | {"error_message": "rate limited", "output_tokens": 9}],
                   "update")
    db.commit()
    assert day(db, user) == QUESTION_ONLY_DAY
    assert_consistent(db)


def test_write_chat_exchange_failed_attempt_then_retry_counts_once(
    db: psycopg.Connection, user: UUID
) -> None:
    question = as_chat_message(QUESTION)
    failed = db.execute("SELECT public.write_chat_exchange(%s, 's1', %s)",
                        (user, Jsonb(question | {"error": True}))).fetchone()
    db.commit()
    assert failed == ({"session_created": True, "messages_written": 1},)
    assert day(db, user) == EMPTY_DAY | {"sessions_created": 1}
    assert session_stats(db) == (0, 0, None, None, None)

    for _ in range(3):
        via_exchange(db, user)
        db.commit()
        assert day(db, user) == EXCHANGE_DAY
        assert_consistent(db)


def test_editing_what_a_counted_message_does_not_count_writes_nothing_to_the_ledger(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    """A stored successful message is its own record of being counted: an edit of its content
    (or a rewrite of the same values) moves no counter and stores nothing in the ledger."""
    write_messages(db, [QUESTION, ANSWER])
    db.commit()
    counted = (EXCHANGE_DAY, EXCHANGE_TOTALS)
    assert (day(db, user), usage_stats(db, user)) == counted
    db.execute("UPDATE public.chat_messages SET content = content || ' (edited)'"
               " WHERE id = 'a1'")
    db.execute("SELECT public.write_chat_exchange(%s, 's1', %s)",
               (user, Jsonb(as_chat_message(QUESTION, content="edited question"))))
    db.commit()
    assert (day(db, user), usage_stats(db, user)) == counted
    assert [r for r in ledger(db) if r[0] == "message"] == [
        ("message", "a1", DAY, 0, 1, 0, 30, MODEL, 75, "stored"),
        ("message", "u1", DAY, 1, 0, 7, 0, None, 0, "stored"),
    ]
    assert ledger_rows(db) == []
    assert_consistent(db)


def test_a_failed_message_that_succeeds_by_update_is_booked_once_by_the_trigger(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION, ANSWER | {"error_message": "timeout"}])
    db.commit()
    for _ in range(2):
        db.execute("UPDATE public.chat_messages SET error_message = NULL WHERE id = 'a1'")
        db.commit()
    assert day(db, user) == EXCHANGE_DAY
    assert [r[-1] for r in ledger(db) if r[1] == "a1"] == ["stored"]
    assert ledger_rows(db) == []
    assert_consistent(db)


def test_a_counted_message_marked_failed_later_keeps_its_usage_but_leaves_the_statistics(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION, ANSWER])
    db.execute("UPDATE public.chat_messages SET error_message = 'flagged' WHERE id = 'a1'")
    db.commit()
    assert day(db, user) == EXCHANGE_DAY  # consumption happened: it is not taken back
    assert session_stats(db) == (1, 7, "what is 2+2?", None, QUESTION_AT)
    assert_consistent(db)


# --- the day usage lands on --------------------------------------------------------------------


MIDNIGHT_CASES = {  # message_timestamp -> the UTC day its usage belongs to
    "2025-03-01T23:30:00-05:00": date(2025, 3, 2),
    "2025-03-02T00:30:00+02:00": date(2025, 3, 1),
    "2025-03-01T23:59:59.999999+00:00": date(2025, 3, 1),
    "2025-03-02T00:00:00Z": date(2025, 3, 2),
    "2025-03-02T09:15:00+14:00": date(2025, 3, 1),
}


def test_usage_lands_on_the_utc_date_of_the_message_whatever_the_session_time_zone(
    db: psycopg.Connection
) -> None:
    observed, expected = {}, {}
    for time_zone in ("UTC", "America/New_York", "Asia/Tokyo"):
        db.execute("SELECT set_config('TimeZone', %s, false)", (time_zone,))
        for timestamp, utc_day in MIDNIGHT_CASES.items():
            owner = make_user(db)  # one user per case: each case has its counters to itself
            sid = f"s-{owner}"
            add_session(db, owner, sid)
            write_messages(db, [QUESTION | {"id": f"u-{owner}", "session_id": sid,
                                            "message_timestamp": timestamp}])
            days = usage_days(db, owner)
            observed[time_zone, timestamp] = [d for d, v in days.items() if v["messages_sent"]]
            expected[time_zone, timestamp] = [utc_day]
    assert observed == expected


def test_the_question_and_its_answer_can_land_on_different_days(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION | {"message_timestamp": "2025-03-01T18:59:50-05:00"},
                        ANSWER | {"message_timestamp": "2025-03-01T19:00:10-05:00"}])
    db.commit()
    days = usage_days(db, user)
    assert (days[date(2025, 3, 1)]["messages_sent"], days[date(2025, 3, 1)]["messages_received"]
            ) == (1, 0)
    assert (days[date(2025, 3, 2)]["messages_sent"], days[date(2025, 3, 2)]["models_used"]) == (
        0, {MODEL: 1})
    assert_consistent(db)


def test_a_session_counts_on_the_utc_date_it_was_created(db: psycopg.Connection) -> None:
    db.execute("SELECT set_config('TimeZone', 'America/Los_Angeles', false)")
    cases = {"2025-03-01T22:00:00-05:00": date(2025, 3, 2),
             "2025-03-02T01:00:00+03:00": date(2025, 3, 1)}
    observed = {}
    for n, created_at in enumerate(cases):
        owner = make_user(db)
        add_session(db, owner, f"s{n}", created_at)
        observed[created_at] = {d: v["sessions_created"] for d, v in usage_days(db, owner).items()}
    assert observed == {ts: {d: 1} for ts, d in cases.items()}


def test_re_creating_a_deleted_session_does_not_count_it_again(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    for _ in range(3):
        db.execute("DELETE FROM public.chat_sessions WHERE id = 's1'")
        add_session(db, user)
        db.execute(
            "INSERT INTO public.chat_sessions (id, user_id, created_at) VALUES ('s1', %s, now())"
            " ON CONFLICT (id) DO NOTHING", (user,))
        db.commit()
    assert day(db, user)["sessions_created"] == 1
    assert usage_stats(db, user)["sessions_created"] == 1


def test_a_multi_row_insert_over_several_days_and_users_counts_each_row_once(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    other = make_user(db)
    add_session(db, other, "s2", "2025-03-02T08:00:00Z")
    rows = [QUESTION | {"id": f"q{n}", "session_id": "s1" if n % 2 else "s2",
                        "message_timestamp": f"2025-03-0{1 + n % 3}T23:30:00-01:00"}
            for n in range(12)]
    write_messages(db, rows)
    write_messages(db, rows, "update")
    db.commit()
    mine = {d: v["messages_sent"] for d, v in usage_days(db, user).items() if v["messages_sent"]}
    theirs = {d: v["messages_sent"] for d, v in usage_days(db, other).items()
              if v["messages_sent"]}
    assert mine == {date(2025, 3, 2): 2, date(2025, 3, 3): 2, date(2025, 3, 4): 2}
    assert theirs == {date(2025, 3, 2): 2, date(2025, 3, 3): 2, date(2025, 3, 4): 2}
    assert_consistent(db)


# --- active time -------------------------------------------------------------------------------


def test_active_seconds_sum_assistant_elapsed_time_and_minutes_round_down(
    db: psycopg.Connection
) -> None:
    cases = {(59,): 0, (59, 61): 2, (60, 59): 1, (3599, 1): 60}
    observed = {}
    for n, elapsed in enumerate(cases):
        owner = make_user(db)
        add_session(db, owner, f"s{n}")
        # A user message's elapsed_time is not active time.
        write_messages(db, [QUESTION | {"id": f"u{n}", "session_id": f"s{n}", "elapsed_time": 500}])
        for k, seconds in enumerate(elapsed):  # one statement each: the counter adds up
            write_messages(db, [ANSWER | {"id": f"a{n}-{k}", "session_id": f"s{n}",
                                          "elapsed_time": seconds}])
        counted = day(db, owner)
        observed[elapsed] = (counted["active_seconds"], counted["active_minutes"])
    assert observed == {elapsed: (sum(elapsed), minutes) for elapsed, minutes in cases.items()}
    assert usage_drift(db) == []


# --- track_user_usage --------------------------------------------------------------------------


def test_track_usage_counts_a_key_once(db: psycopg.Connection, user: UUID) -> None:
    counts = {"messages_received": 1, "output_tokens": 40, "model_used": MODEL,
              "active_seconds": 130}
    assert track_usage(db, user, "evt-1", DAY, **counts) is True
    assert track_usage(db, user, "evt-1", DAY, **counts) is False
    assert track_usage(db, user, "evt-1", date(2025, 3, 9), **counts) is False
    db.commit()
    assert usage_days(db, user) == {DAY: EMPTY_DAY | {
        "messages_received": 1, "output_tokens": 40, "total_tokens": 40,
        "models_used": {MODEL: 1}, "active_seconds": 130, "active_minutes": 2}}
    assert usage_stats(db, user) == {"total_messages": 1, "total_tokens": 40,
                                     "sessions_created": 0}
    assert usage_drift(db) == []


def test_track_usage_moves_the_profile_by_the_same_delta_as_the_day(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [QUESTION, ANSWER])
    db.commit()
    before_day, before_totals = day(db, user), usage_stats(db, user)

    assert track_usage(db, user, "evt-2", DAY, messages_sent=2, input_tokens=11,
                       messages_received=1, output_tokens=13, model_used=MODEL)
    db.commit()
    after_day, after_totals = day(db, user), usage_stats(db, user)
    assert after_day["messages_sent"] - before_day["messages_sent"] == 2
    assert after_day["total_tokens"] - before_day["total_tokens"] == 24
    assert after_day["models_used"] == {MODEL: 2}
    assert {k: after_totals[k] - before_totals[k] for k in after_totals} == {
        "total_messages": 3, "total_tokens": 24, "sessions_created": 0}


def test_a_message_booked_by_the_trigger_and_reported_by_track_usage_counts_once(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    write_messages(db, [ANSWER])
    assert track_usage(db, user, "a1", DAY, messages_received=1, output_tokens=30,
                       model_used=MODEL) is False
    db.commit()
    assert day(db, user)["messages_received"] == 1
    assert day(db, user)["models_used"] == {MODEL: 1}
    assert usage_drift(db) == []


def test_a_message_reported_by_track_usage_first_is_not_counted_again_by_the_trigger(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    assert track_usage(db, user, "a1", DAY, messages_received=1, output_tokens=30,
                       model_used=MODEL, active_seconds=75) is True
    write_messages(db, [ANSWER])
    write_messages(db, [ANSWER], "update")
    db.commit()
    assert day(db, user) == EXCHANGE_DAY | {"messages_sent": 0, "input_tokens": 0,
                                            "total_tokens": 30}
    assert [(row[1], row[-1]) for row in ledger(db)] == [
        ("a1", "track_user_usage"), ("s1", "stored")]
    assert_consistent(db)


def test_sessions_created_counts_once_per_session_id(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    assert track_usage(db, user, "s1", DAY, session_created=True) is False
    assert track_usage(db, user, "s-other", DAY, session_created=True) is True
    assert track_usage(db, user, "s-other", DAY, session_created=True) is False
    db.commit()
    assert day(db, user)["sessions_created"] == 2
    assert usage_stats(db, user)["sessions_created"] == 2
    assert usage_drift(db) == []


def test_track_usage_rejects_negative_counts(db: psycopg.Connection, user: UUID) -> None:
    for field in ("messages_sent", "messages_received", "input_tokens", "output_tokens",
                  "active_seconds"):
        with pytest.raises(ValidationError, match="must not be negative"):
            track_usage(db, user, "evt-neg", DAY, **{field: -1})
        db.rollback()
    assert db.execute("SELECT count(*) FROM pgchat.usage_ledger").fetchone() == (0,)


def test_track_usage_rejects_an_unknown_user(db: psycopg.Connection) -> None:
    stranger = uuid4()
    with pytest.raises(ValidationError, match=f"unknown user {stranger}"):
        track_usage(db, stranger, "evt-x", DAY, messages_sent=1)


def test_track_usage_rejects_a_missing_key_or_date(db: psycopg.Connection, user: UUID) -> None:
    cases: list[tuple[Any, Any]] = [("", DAY), (None, DAY), ("evt", None)]
    for key, usage_date in cases:
        with pytest.raises(ValidationError, match="are required"):
            track_usage(db, user, key, usage_date, messages_sent=1)
        db.rollback()


def test_track_usage_missing_key_is_refused_by_the_database(
    db: psycopg.Connection, user: UUID
) -> None:
    """Refused at the SQL level too (22004), and nothing is booked."""
    with pytest.raises(psycopg.Error, match="p_event_key and p_usage_date are required"):
        db.execute("SELECT public.track_user_usage(%s, '', %s, 1)", (user, DAY))
    db.rollback()
    assert db.execute("SELECT count(*) FROM pgchat.usage_ledger").fetchone() == (0,)


def test_track_usage_rejects_unknown_fields(db: psycopg.Connection, user: UUID) -> None:
    """The counts are typed keyword arguments (mypy flags a wrong one, tests/test_packaging.py);
    at run time an unknown one is a TypeError before anything is sent."""
    with pytest.raises(TypeError, match="tokens"):
        track_usage(db, user, "evt", DAY, tokens=3)  # type: ignore[call-arg]
    assert db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_the_legacy_keyless_track_user_usage_is_gone(db: psycopg.Connection, user: UUID) -> None:
    """An old caller fails loudly instead of counting twice."""
    with pytest.raises(psycopg.errors.UndefinedFunction):
        db.execute("SELECT public.track_user_usage(%s, 1, 0, 5, 0, NULL::varchar, false, 0)",
                   (user,))


# --- api_user_summary --------------------------------------------------------------------------


def test_api_user_summary_reports_today_from_the_counters(
    db: psycopg.Connection, user: UUID
) -> None:
    db.execute("SELECT set_config('TimeZone', 'UTC', false)")  # current_date = the UTC date
    db.execute("INSERT INTO public.chat_sessions (id, user_id) VALUES ('today', %s)", (user,))
    write_messages(db, [
        QUESTION | {"id": "t-u", "session_id": "today", "message_timestamp": "now"},
        ANSWER | {"id": "t-a", "session_id": "today", "message_timestamp": "now"},
        QUESTION | {"id": "old", "session_id": "today"},  # 2025-03-01: not today
    ])
    write_messages(db, [ANSWER | {"id": "t-a", "session_id": "today",
                                  "message_timestamp": "now"}], "update")
    # Same transaction: now() and current_date are the same instant.
    row = db.execute("SELECT messages_today, tokens_today, total_sessions,"
                     " usage_stats ->> 'total_messages' FROM public.api_user_summary"
                     " WHERE id = %s", (user,)).fetchone()
    assert row == (2, 37, 1, "3")
