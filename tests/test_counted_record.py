"""The record of what was counted: the stored rows, and the ledger only for the exceptions.

A stored successful message is its own record of having been counted; the ledger holds what is
counted and no longer stored as it was counted (deleted, changed, moved) and what
track_user_usage reported. Whatever a user, the app or the service role does to the rows
(rename an id, reuse one from another account, move a message or a session to another owner,
change a counted value, delete and upload again), each successful message is counted once, for
one owner, on its own date, and `pgchat usage verify` recounts exactly that from the stored rows
and the ledger. The live path writes nothing to the ledger: one exchange is 5 row writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgchat import migrate
from pgchat.usage import track_usage
from tests.helpers import (
    as_pgchat,
    make_user,
    message,
    session_drift,
    usage_days,
    usage_drift,
    write_messages,
)

DAY = date(2025, 3, 1)
QUESTION = {"id": "u1", "session_id": "s1", "role": "user", "content": "2+2?",
            "input_tokens": 7, "total_tokens": 7, "message_timestamp": "2025-03-01T12:00:00Z"}
ANSWER = {"id": "a1", "session_id": "s1", "role": "assistant", "content": "4", "model": "m/x",
          "user_message_id": "u1", "output_tokens": 30, "total_tokens": 30, "elapsed_time": 5,
          "message_timestamp": "2025-03-01T12:00:05Z"}


def add_session(conn: psycopg.Connection, user_id: UUID, session_id: str = "s1") -> None:
    conn.execute("INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at,"
                 " last_activity) VALUES (%s, %s, 'chat', %s, %s, %s)",
                 (session_id, user_id, *["2025-03-01T08:00:00Z"] * 3))


def totals(conn: psycopg.Connection, user_id: UUID) -> tuple[int, int, int, int]:
    """(messages sent, received, input tokens, output tokens) over all of a user's days."""
    days = usage_days(conn, user_id).values()
    return (sum(int(str(d["messages_sent"])) for d in days),
            sum(int(str(d["messages_received"])) for d in days),
            sum(int(str(d["input_tokens"])) for d in days),
            sum(int(str(d["output_tokens"])) for d in days))


def ledger(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT user_id, kind, event_key, source FROM pgchat.usage_ledger"
                        " ORDER BY kind, event_key, source").fetchall()


def assert_exact(conn: psycopg.Connection) -> None:
    assert usage_drift(conn) == []
    assert session_drift(conn) == []


@contextmanager
def as_user(conn: psycopg.Connection, user_id: UUID) -> Iterator[None]:
    """The Supabase client path: role authenticated with the user's JWT claims, RLS on."""
    conn.execute("SET LOCAL ROLE authenticated")
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                 (json.dumps({"sub": str(user_id), "role": "authenticated"}),))
    yield
    conn.execute("RESET ROLE")


@pytest.fixture
def alice(db: psycopg.Connection) -> UUID:
    user = make_user(db)
    add_session(db, user)
    write_messages(db, [QUESTION, ANSWER])
    db.commit()
    return user


ALICE_COUNTED = (1, 1, 7, 30)


def test_an_exchange_writes_five_rows_and_nothing_to_the_ledger(
    db: psycopg.Connection, alice: UUID
) -> None:
    # pg_stat_xact_user_tables may still hold earlier transactions' counts (flushed lazily):
    # the difference within one transaction is this exchange's.
    stats = ("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables"
             " WHERE schemaname IN ('public', 'pgchat')")
    before = dict(db.execute(stats).fetchall())
    db.execute("SELECT public.write_chat_exchange(%s, 's1', %s, %s)",
               (alice, Jsonb(message("u2", content="again")),
                Jsonb(message("a2", "assistant", user_message_id="u2", output_tokens=3))))
    after = dict(db.execute(stats).fetchall())
    db.commit()
    written = {t: n - before.get(t, 0) for t, n in after.items() if n != before.get(t, 0)}
    assert written == {"chat_messages": 2, "chat_sessions": 1, "user_usage_daily": 1,
                       "profiles": 1}
    assert ledger(db) == []
    assert totals(db, alice) == (2, 2, 7, 33)
    assert_exact(db)


def test_renaming_a_counted_message_again_and_again_counts_it_once(
    db: psycopg.Connection, alice: UUID
) -> None:
    with as_user(db, alice):
        for _ in range(3):
            db.execute("UPDATE public.chat_messages SET id = id || '_x' WHERE id LIKE 'a1%'")
    db.commit()
    assert totals(db, alice) == ALICE_COUNTED
    assert_exact(db)
    # The old id, uploaded again (the frontend keeps its history), counts nothing either.
    write_messages(db, [ANSWER], "nothing")
    db.commit()
    assert totals(db, alice) == ALICE_COUNTED
    assert_exact(db)


def test_renaming_a_failed_message_then_succeeding_counts_it_once(
    db: psycopg.Connection, alice: UUID
) -> None:
    write_messages(db, [ANSWER | {"id": "a2", "error_message": "timeout"}])
    db.execute("UPDATE public.chat_messages SET id = 'a2-retry' WHERE id = 'a2'")
    db.execute("UPDATE public.chat_messages SET error_message = NULL WHERE id = 'a2-retry'")
    db.commit()
    assert totals(db, alice) == (1, 2, 7, 60)
    assert ledger(db) == []
    assert_exact(db)


def test_a_reused_id_counts_for_its_new_owner_and_not_again_for_the_first(
    db: psycopg.Connection, alice: UUID
) -> None:
    db.execute("DELETE FROM public.chat_sessions WHERE id = 's1'")
    db.commit()
    bob = make_user(db)
    add_session(db, bob)
    write_messages(db, [QUESTION, ANSWER])  # the same ids, another account
    db.commit()
    assert totals(db, alice) == ALICE_COUNTED
    assert totals(db, bob) == ALICE_COUNTED
    assert {(r[0], r[3]) for r in ledger(db)} == {(alice, "deleted")}
    assert_exact(db)
    # ... and Alice, uploading her deleted conversation again, adds nothing.
    db.execute("DELETE FROM public.chat_sessions WHERE id = 's1'")
    add_session(db, alice)
    write_messages(db, [QUESTION, ANSWER])
    db.commit()
    assert totals(db, alice) == ALICE_COUNTED
    assert totals(db, bob) == ALICE_COUNTED
    assert_exact(db)


def test_a_message_moved_to_another_users_session_is_not_counted_again(
    db: psycopg.Connection, alice: UUID
) -> None:
    bob = make_user(db)
    add_session(db, bob, "s-bob")
    db.execute("UPDATE public.chat_messages SET session_id = 's-bob' WHERE id = 'a1'")
    db.commit()
    assert totals(db, alice) == ALICE_COUNTED
    assert totals(db, bob) == (0, 0, 0, 0)
    assert_exact(db)
    # Back, and marked failed and successful again on the way: still once.
    db.execute("UPDATE public.chat_messages SET error_message = 'x' WHERE id = 'a1'")
    db.execute("UPDATE public.chat_messages SET session_id = 's1', error_message = NULL"
               " WHERE id = 'a1'")
    db.commit()
    assert (totals(db, alice), totals(db, bob)) == (ALICE_COUNTED, (0, 0, 0, 0))
    assert_exact(db)


def test_a_session_given_to_another_user_counts_nothing_twice(
    db: psycopg.Connection, alice: UUID
) -> None:
    bob = make_user(db)
    db.execute("UPDATE public.chat_sessions SET user_id = %s WHERE id = 's1'", (bob,))
    db.commit()
    assert_exact(db)
    assert totals(db, bob) == (0, 0, 0, 0)
    # Bob's sync of the conversation he now owns: nothing is new.
    write_messages(db, [QUESTION, ANSWER], "update")
    db.execute("UPDATE public.chat_messages SET output_tokens = 31 WHERE id = 'a1'")
    db.commit()
    assert (totals(db, alice), totals(db, bob)) == (ALICE_COUNTED, (0, 0, 0, 0))
    assert_exact(db)


def test_a_session_moved_to_another_day_keeps_its_count_on_the_first(
    db: psycopg.Connection, alice: UUID
) -> None:
    db.execute("UPDATE public.chat_sessions SET created_at = '2025-02-01T00:00:00Z'")
    db.commit()
    days = usage_days(db, alice)
    assert days[DAY]["sessions_created"] == 1 and list(days) == [DAY]
    assert_exact(db)


def test_a_counted_value_changed_keeps_the_first_and_a_second_change_adds_nothing(
    db: psycopg.Connection, alice: UUID
) -> None:
    for tokens in (300, 3000):
        db.execute("UPDATE public.chat_messages SET output_tokens = %s,"
                   " message_timestamp = '2025-03-02T00:00:00Z' WHERE id = 'a1'", (tokens,))
        db.commit()
        assert totals(db, alice) == ALICE_COUNTED
        assert list(usage_days(db, alice)) == [DAY]
        assert ledger(db) == [(alice, "message", "a1", "changed")]
        assert_exact(db)


def test_track_usage_of_a_stored_message_is_counted_already(
    db: psycopg.Connection, alice: UUID
) -> None:
    assert track_usage(db, alice, "a1", DAY, messages_received=1, output_tokens=30) is False
    assert track_usage(db, alice, "s1", DAY, session_created=True) is False
    db.commit()
    assert totals(db, alice) == ALICE_COUNTED
    assert ledger(db) == []
    assert_exact(db)


def test_verify_sees_a_deleted_message_the_record_lost(
    db: psycopg.Connection, alice: UUID
) -> None:
    """Damage on purpose: what was counted and is gone from both rows and ledger is drift."""
    db.execute("DELETE FROM public.chat_messages WHERE id = 'a1'")
    as_pgchat(db)
    db.execute("DELETE FROM pgchat.usage_ledger WHERE event_key = 'a1'")
    db.commit()
    fields = {row[2] for row in usage_drift(db)}
    assert {"messages_received", "output_tokens"} <= fields


def test_a_ledger_hash_partitioned_by_user_counts_exactly(empty_dsn: str) -> None:
    """Every statement touches one user's ledger rows by key: a ledger split by user works. A
    DBA creates it before 0003, which keeps a ledger that exists (CREATE TABLE IF NOT EXISTS)."""
    migrate.migrate(empty_dsn, to="0002b_usage_active_seconds")
    db = psycopg.connect(empty_dsn)
    db.execute("CREATE SCHEMA pgchat")
    db.execute("""CREATE TABLE pgchat.usage_ledger (
        user_id uuid NOT NULL, kind text NOT NULL, event_key text NOT NULL,
        usage_date date NOT NULL, session_id text,
        messages_sent integer NOT NULL DEFAULT 0, messages_received integer NOT NULL DEFAULT 0,
        input_tokens integer NOT NULL DEFAULT 0, output_tokens integer NOT NULL DEFAULT 0,
        model text, sessions_created integer NOT NULL DEFAULT 0,
        active_seconds integer NOT NULL DEFAULT 0, generation_ms bigint NOT NULL DEFAULT 0,
        source text NOT NULL, booked_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (user_id, kind, event_key)) PARTITION BY HASH (user_id)""")
    for n in range(4):
        db.execute(f"CREATE TABLE pgchat.usage_ledger_{n} PARTITION OF pgchat.usage_ledger"
                   f" FOR VALUES WITH (MODULUS 4, REMAINDER {n})")
    db.commit()
    migrate.migrate(empty_dsn)
    users = [make_user(db) for _ in range(6)]
    for n, user in enumerate(users):
        add_session(db, user, f"s{n}")
        write_messages(db, [QUESTION | {"id": f"u{n}", "session_id": f"s{n}"},
                            ANSWER | {"id": f"a{n}", "session_id": f"s{n}"}])
    db.commit()
    # Each kind of exception, for a different user each: a deleted session, a renamed
    # message, a changed count, a deleted message, a reported event, a session given away.
    db.execute("DELETE FROM public.chat_sessions WHERE id = 's0'")
    db.execute("UPDATE public.chat_messages SET id = 'a1-x' WHERE id = 'a1'")
    db.execute("UPDATE public.chat_messages SET output_tokens = 1 WHERE id = 'a2'")
    db.execute("DELETE FROM public.chat_messages WHERE id = 'u3'")
    track_usage(db, users[4], "ext-1", DAY, messages_sent=1)
    db.execute("UPDATE public.chat_sessions SET user_id = %s WHERE id = 's5'", (users[0],))
    db.commit()
    add_session(db, users[0], "s0")
    write_messages(db, [QUESTION | {"id": "u0", "session_id": "s0"}])  # uploaded again
    db.commit()
    assert db.execute("SELECT count(*) FROM ONLY pgchat.usage_ledger").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgchat.usage_ledger").fetchone()[0] >= 6  # type: ignore[index]
    assert [totals(db, u) for u in users] == [
        (1, 1, 7, 30), (1, 1, 7, 30), (1, 1, 7, 30), (1, 1, 7, 30), (2, 1, 7, 30), (1, 1, 7, 30)]
    assert_exact(db)
    db.close()
