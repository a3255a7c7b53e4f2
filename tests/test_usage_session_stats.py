"""Session statistics (update_session_stats, refresh_sessions, update_session_timestamp).

message_count, total_tokens, last_message_preview (200 characters), last_model and
last_message_timestamp exclude failed messages, break timestamp ties by the highest message id,
and always equal a recomputation (`pgchat.session_stats_drift()` is empty). A statement that
changes nothing visible writes nothing to chat_sessions; updated_at / last_activity move to the
newest message's time when messages arrive, to now() when the session itself is edited, and not
at all when nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgchat_dev import scenario
from tests.helpers import make_user, session_drift, write_messages

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CREATED = datetime(2025, 1, 1, tzinfo=UTC)


def msg(mid: str, ts: str = "2025-03-01T12:00:00Z", **values: Any) -> dict[str, Any]:
    return {"id": mid, "session_id": "s1", "content": f"content of {mid}",
            "message_timestamp": ts, **values}


def stats(conn: psycopg.Connection, session_id: str = "s1") -> dict[str, Any]:
    row = conn.execute(
        "SELECT message_count, total_tokens, last_message_preview, last_model,"
        " last_message_timestamp FROM public.chat_sessions WHERE id = %s",
        (session_id,)).fetchone()
    assert row is not None
    keys = ("message_count", "total_tokens", "last_message_preview", "last_model",
            "last_message_timestamp")
    return dict(zip(keys, row, strict=True))


def times(conn: psycopg.Connection) -> tuple[datetime, datetime]:
    row = conn.execute(
        "SELECT updated_at, last_activity FROM public.chat_sessions WHERE id = 's1'").fetchone()
    assert row is not None
    return row[0], row[1]


def now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def user(db: psycopg.Connection) -> UUID:
    return make_user(db)


@pytest.fixture
def session(db: psycopg.Connection, user: UUID) -> str:
    """Session s1, created (and last updated) on 2025-01-01."""
    db.execute("INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at,"
               " last_activity) VALUES ('s1', %s, 'chat', %s, %s, %s)",
               (user, CREATED, CREATED, CREATED))
    db.commit()
    return "s1"


# --- what the statistics say --------------------------------------------------------------------


def test_statistics_of_an_exchange(db: psycopg.Connection, session: str) -> None:
    write_messages(db, [
        msg("u1", role="user", input_tokens=7, total_tokens=7),
        msg("a1", "2025-03-01T12:00:09Z", role="assistant", model="m/1", output_tokens=30,
            total_tokens=30),
    ])
    assert stats(db) == {"message_count": 2, "total_tokens": 37,
                         "last_message_preview": "content of a1", "last_model": "m/1",
                         "last_message_timestamp": datetime(2025, 3, 1, 12, 0, 9, tzinfo=UTC)}
    assert session_drift(db) == []


def test_failed_messages_are_left_out_of_every_statistic(
    db: psycopg.Connection, session: str
) -> None:
    write_messages(db, [msg("u1", total_tokens=7)])
    write_messages(db, [msg("a1", "2025-03-01T12:05:00Z", role="assistant", model="m/1",
                            total_tokens=99, error_message="timeout")])
    write_messages(db, [msg("zz", role="assistant", model="m/2", total_tokens=5,
                            error_message="timeout")])  # a tie that would win by id
    assert stats(db) == {"message_count": 1, "total_tokens": 7,
                         "last_message_preview": "content of u1", "last_model": None,
                         "last_message_timestamp": T0}
    assert session_drift(db) == []


def test_a_timestamp_tie_goes_to_the_highest_message_id(
    db: psycopg.Connection, session: str
) -> None:
    observed, expected = {}, {}
    for order in (("m-a", "m-b", "m-c"), ("m-c", "m-b", "m-a"), ("m-b", "m-c", "m-a")):
        for one_statement in (True, False):
            with db.transaction(force_rollback=True):
                rows = [msg(mid, model=mid) for mid in order]
                for batch in [rows] if one_statement else [[r] for r in rows]:
                    write_messages(db, batch)
                last = stats(db)["last_message_preview"], stats(db)["last_model"]
                db.execute("DELETE FROM public.chat_messages WHERE id = 'm-c'")
                observed[order, one_statement] = (*last, stats(db)["last_model"],
                                                  session_drift(db))
                expected[order, one_statement] = ("content of m-c", "m-c", "m-b", [])
    assert observed == expected


def test_the_preview_is_the_first_200_characters(db: psycopg.Connection, session: str) -> None:
    long = "é" * 150 + "x" * 150  # characters, not bytes
    write_messages(db, [msg("u1", content=long)])
    assert stats(db)["last_message_preview"] == long[:200]
    write_messages(db, [msg("u1", content="short")], "update")
    assert stats(db)["last_message_preview"] == "short"
    assert session_drift(db) == []


def edit_newest_timestamp_backwards(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE public.chat_messages SET message_timestamp = '2025-02-01T00:00:00Z'"
                 " WHERE id = 'm3'")


WRITES: dict[str, Callable[[psycopg.Connection], object]] = {
    "delete_the_newest": lambda c: c.execute("DELETE FROM public.chat_messages WHERE id = 'm3'"),
    "delete_all": lambda c: c.execute("DELETE FROM public.chat_messages"),
    "move_the_newest_back_in_time": edit_newest_timestamp_backwards,
    "fail_the_newest": lambda c: c.execute(
        "UPDATE public.chat_messages SET error_message = 'x' WHERE id = 'm3'"),
    "retry_a_failed_one": lambda c: c.execute(
        "UPDATE public.chat_messages SET error_message = NULL WHERE id = 'm2'"),
    "edit_every_token_count": lambda c: c.execute(
        "UPDATE public.chat_messages SET total_tokens = total_tokens * 3 + 1"),
    "move_a_message_to_another_session": lambda c: c.execute(
        "UPDATE public.chat_messages SET session_id = 's2' WHERE id IN ('m1', 'm3')"),
    "upsert_changed": lambda c: write_messages(c, [
        msg("m1", "2025-03-09T00:00:00Z", total_tokens=1000, model="new"),
        msg("m4", "2025-03-09T00:00:00Z", total_tokens=1)], "update"),
    "delete_a_session": lambda c: c.execute("DELETE FROM public.chat_sessions WHERE id = 's2'"),
}


def test_statistics_equal_a_recomputation_after_every_kind_of_write(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    db.execute("INSERT INTO public.chat_sessions (id, user_id) VALUES ('s2', %s)", (user,))
    write_messages(db, [
        msg("m1", "2025-03-01T10:00:00Z", total_tokens=10, model="a"),
        msg("m2", "2025-03-01T11:00:00Z", total_tokens=20, error_message="failed"),
        msg("m3", "2025-03-01T12:00:00Z", total_tokens=30, model="c"),
        msg("s2-m", "2025-03-01T13:00:00Z", session_id="s2", total_tokens=40),
    ])
    drift = {}
    for name, write in WRITES.items():
        with db.transaction(force_rollback=True):
            write(db)
            drift[name] = session_drift(db)
    assert drift == {name: [] for name in WRITES}


def test_deleting_a_session_with_messages_leaves_the_others_alone(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    db.execute("INSERT INTO public.chat_sessions (id, user_id) VALUES ('s2', %s)", (user,))
    write_messages(db, [msg("m1", total_tokens=10), msg("m2", session_id="s2", total_tokens=5)])
    db.commit()
    before = stats(db, "s2")

    db.execute("DELETE FROM public.chat_sessions WHERE id = 's1'")
    db.commit()
    assert db.execute("SELECT id FROM public.chat_messages").fetchall() == [("m2",)]
    assert stats(db, "s2") == before
    assert session_drift(db) == []


# --- a statement that changes nothing visible writes nothing --------------------------------------


def session_writes(conn: psycopg.Connection) -> tuple[str, int]:
    """(xmin of s1, rows this transaction has updated in chat_sessions so far)."""
    row = conn.execute(
        "SELECT s.xmin::text, coalesce((SELECT n_tup_upd FROM pg_stat_xact_user_tables"
        "  WHERE relid = 'public.chat_sessions'::regclass), 0)"
        " FROM public.chat_sessions s WHERE s.id = 's1'").fetchone()
    assert row is not None
    return row[0], int(row[1])


NO_OPS: dict[str, Callable[[psycopg.Connection], object]] = {
    "upsert_of_the_same_rows": lambda c: write_messages(c, BASE_ROWS, "update"),
    "insert_on_conflict_do_nothing": lambda c: write_messages(c, BASE_ROWS, "nothing"),
    "update_set_content_to_itself": lambda c: c.execute(
        "UPDATE public.chat_messages SET content = content"),
    "edit_an_older_message": lambda c: c.execute(
        "UPDATE public.chat_messages SET content = 'edited' WHERE id = 'old'"),
    "edit_a_failed_message": lambda c: c.execute(
        "UPDATE public.chat_messages SET content = 'x', total_tokens = 999 WHERE id = 'failed'"),
    "insert_a_failed_message": lambda c: write_messages(c, [msg(
        "failed-2", "2025-03-05T00:00:00Z", total_tokens=50, error_message="timeout")]),
    "delete_a_failed_message": lambda c: c.execute(
        "DELETE FROM public.chat_messages WHERE id = 'failed'"),
    "update_matching_no_row": lambda c: c.execute(
        "UPDATE public.chat_messages SET content = 'x' WHERE id = 'nope'"),
    "set_the_session_title_to_itself": lambda c: c.execute(
        "UPDATE public.chat_sessions SET title = title"),
    "update_session_title_unchanged": lambda c: c.execute(
        "SELECT public.update_session_title(user_id, id, 'chat') FROM public.chat_sessions"),
}
BASE_ROWS = [
    msg("old", "2025-03-01T10:00:00Z", total_tokens=3, content="old " * 80),
    msg("new", "2025-03-01T12:00:00Z", total_tokens=4, model="m"),
    msg("failed", "2025-03-01T13:00:00Z", total_tokens=5, error_message="timeout"),
]


def test_a_statement_that_changes_nothing_visible_writes_nothing_to_the_session(
    db: psycopg.Connection, session: str
) -> None:
    write_messages(db, BASE_ROWS)
    db.commit()
    before = stats(db), times(db)
    changed = {}
    for name, statement in NO_OPS.items():
        with db.transaction(force_rollback=True):
            xmin, updated = session_writes(db)
            statement(db)
            changed[name] = {"xmin": session_writes(db)[0] != xmin,
                             "rows_updated": session_writes(db)[1] - updated,
                             "values": (stats(db), times(db)) != before,
                             "drift": session_drift(db)}
    assert changed == {name: {"xmin": False, "rows_updated": 0, "values": False, "drift": []}
                       for name in NO_OPS}


def test_a_visible_change_is_written_once(db: psycopg.Connection, session: str) -> None:
    """The control for the test above: the same measurement sees a real write."""
    write_messages(db, BASE_ROWS)
    db.commit()
    with db.transaction(force_rollback=True):
        xmin, updated = session_writes(db)
        db.execute("UPDATE public.chat_messages SET content = 'edited' WHERE id = 'new'")
        after_xmin, after_updated = session_writes(db)
        assert stats(db)["last_message_preview"] == "edited"
    assert after_xmin != xmin
    assert after_updated == updated + 1


def test_an_upsert_of_the_same_rows_rewrites_no_message(
    db: psycopg.Connection, session: str
) -> None:
    write_messages(db, BASE_ROWS)
    db.commit()
    before = db.execute("SELECT n_tup_upd FROM pg_stat_xact_user_tables"
                        " WHERE relid = 'public.chat_messages'::regclass").fetchone()
    write_messages(db, BASE_ROWS, "update")
    after = db.execute("SELECT n_tup_upd FROM pg_stat_xact_user_tables"
                       " WHERE relid = 'public.chat_messages'::regclass").fetchone()
    assert after == before


# --- updated_at / last_activity -------------------------------------------------------------------


def test_messages_arriving_move_updated_at_to_the_newest_message_time(
    db: psycopg.Connection, session: str
) -> None:
    write_messages(db, [msg("m1", "2025-03-01T12:00:00Z")])
    assert times(db) == (T0, T0)

    write_messages(db, [msg("m0", "2025-02-01T00:00:00Z")])  # older: never moves back
    assert times(db) == (T0, T0)

    write_messages(db, [msg("m2", "2025-03-02T08:30:00+02:00")])
    newest = datetime(2025, 3, 2, 6, 30, tzinfo=UTC)
    assert times(db) == (newest, newest)

    db.execute("DELETE FROM public.chat_messages WHERE id = 'm2'")  # never back either
    assert times(db) == (newest, newest)
    assert stats(db)["last_message_timestamp"] == T0


def test_a_failed_message_arriving_does_not_move_updated_at(
    db: psycopg.Connection, session: str
) -> None:
    write_messages(db, [msg("m1", "2025-03-09T00:00:00Z", error_message="timeout")])
    assert times(db) == (CREATED, CREATED)


def test_uploading_last_weeks_conversation_does_not_make_it_new(
    db: psycopg.Connection, user: UUID
) -> None:
    scenario.pgchat_upload(db, user, [{"id": "s1", "createdAt": "2025-03-01T09:00:00Z",
                                       "messages": [
        {"id": "u", "role": "user", "content": "q", "timestamp": "2025-03-01T09:00:00Z"},
        {"id": "a", "role": "assistant", "content": "a", "timestamp": "2025-03-01T09:00:30Z"},
    ]}])
    last = datetime(2025, 3, 1, 9, 0, 30, tzinfo=UTC)
    assert times(db) == (last, last)


def test_a_no_op_update_of_the_session_leaves_updated_at(
    db: psycopg.Connection, session: str
) -> None:
    db.execute("UPDATE public.chat_sessions SET title = 'chat', is_active = true")
    assert times(db) == (CREATED, CREATED)


def test_a_title_change_moves_updated_at_to_now(db: psycopg.Connection, session: str) -> None:
    db.execute("UPDATE public.chat_sessions SET title = 'renamed'")
    assert times(db) == (now(db), now(db))
    assert now(db) > CREATED


def test_update_session_title_writes_only_a_real_change(
    db: psycopg.Connection, user: UUID, session: str
) -> None:
    rename = "SELECT public.update_session_title(%s, 's1', %s)"
    assert db.execute(rename, (user, "chat")).fetchone() == (False,)
    assert times(db) == (CREATED, CREATED)
    assert db.execute(rename, (user, "renamed")).fetchone() == (True,)
    assert times(db) == (now(db), now(db))


def test_a_writer_that_sets_updated_at_itself_keeps_its_value(
    db: psycopg.Connection, session: str
) -> None:
    chosen = datetime(2025, 2, 2, tzinfo=UTC)
    db.execute("UPDATE public.chat_sessions SET title = 'renamed', updated_at = %s,"
               " last_activity = %s", (chosen, chosen))
    assert times(db) == (chosen, chosen)


def test_write_chat_exchange_into_a_new_session(db: psycopg.Connection, user: UUID) -> None:
    db.execute("SELECT public.write_chat_exchange(%s, 's1', %s, %s)", (
        user,
        Jsonb({"id": "u", "content": "q", "timestamp": "2025-03-01T11:59:00Z",
               "input_tokens": 3}),
        Jsonb({"id": "a", "content": "a" * 300, "timestamp": "2025-03-01T12:00:00Z",
               "output_tokens": 4, "model": "m/1"})))
    assert stats(db) == {"message_count": 2, "total_tokens": 7, "last_message_preview": "a" * 200,
                         "last_model": "m/1", "last_message_timestamp": T0}
    assert times(db) == (T0, T0)
    assert session_drift(db) == []
