"""Concurrency: 8 connections writing for the SAME user on the SAME day at once.

Every thread opens its own autocommit connection, waits at a barrier, then writes; each write
is a transaction of its own. Afterwards the counters must be exact (no lost or doubled
increment), no thread may have seen an error (deadlock, serialization failure, unique
violation), and both drift functions must be empty.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgchat import usage
from tests.helpers import (
    as_pgchat,
    make_session,
    make_user,
    session_drift,
    usage_days,
    usage_drift,
    usage_stats,
    write_messages,
)

WRITERS = 8
PAIRS = 30
DAY = date(2025, 6, 1)
NOON = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MODELS = ("m/a", "m/b", "m/c")


def run_together(dsn: str, work: Callable[[psycopg.Connection, int], None]) -> None:
    """`work(conn, n)` in WRITERS threads at once, each on its own autocommit connection;
    fail with every error any thread met."""
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def thread(n: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                barrier.wait(timeout=30)
                work(conn, n)
        except BaseException as exc:  # reported below, whatever it is
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    assert errors == []


def pair(n: int, j: int, session_id: str, at: datetime | None = None) -> tuple[dict[str, Any], ...]:
    """Exchange j of writer n, as two chat_messages rows."""
    at = at or NOON + timedelta(seconds=n * PAIRS + j)
    question = {"id": f"w{n}-q{j:02d}", "session_id": session_id, "role": "user",
                "content": f"question {j} of writer {n}", "input_tokens": 1 + (n + j) % 7,
                "total_tokens": 1 + (n + j) % 7, "message_timestamp": at}
    answer = {"id": f"w{n}-a{j:02d}", "session_id": session_id, "role": "assistant",
              "content": f"answer {j} of writer {n}", "output_tokens": 10 + j,
              "total_tokens": 10 + j, "model": MODELS[(n + j) % 3], "elapsed_time": 20 + n,
              "user_message_id": question["id"],
              "message_timestamp": at + timedelta(milliseconds=500)}
    return question, answer


def exchange(conn: psycopg.Connection, user: UUID, session_id: str,
             rows: tuple[dict[str, Any], ...]) -> None:
    """The same exchange through write_chat_exchange (ChatMessage JSON)."""
    def chat_message(r: dict[str, Any]) -> dict[str, Any]:
        keep = ("id", "content", "input_tokens", "output_tokens", "total_tokens", "model",
                "elapsed_time")
        return {k: r[k] for k in keep if k in r} | {"timestamp": r["message_timestamp"].isoformat()}

    question, answer = rows
    conn.execute("SELECT public.write_chat_exchange(%s, %s, %s, %s)",
                 (user, session_id, Jsonb(chat_message(question)), Jsonb(chat_message(answer))))


def expected_day(rows: list[dict[str, Any]], sessions: int) -> dict[str, Any]:
    questions = [r for r in rows if r["role"] == "user"]
    answers = [r for r in rows if r["role"] == "assistant"]
    seconds = sum(r["elapsed_time"] for r in answers)
    tokens_in = sum(r["input_tokens"] for r in questions)
    tokens_out = sum(r["output_tokens"] for r in answers)
    return {"messages_sent": len(questions), "messages_received": len(answers),
            "input_tokens": tokens_in, "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            "models_used": dict(Counter(r["model"] for r in answers)),
            "sessions_created": sessions, "active_seconds": seconds,
            "active_minutes": seconds // 60}


def assert_exact(conn: psycopg.Connection, user: UUID, rows: list[dict[str, Any]],
                 sessions: int) -> None:
    want = expected_day(rows, sessions)
    assert usage_days(conn, user) == {DAY: want}
    assert usage_stats(conn, user) == {
        "total_messages": want["messages_sent"] + want["messages_received"],
        "total_tokens": want["total_tokens"], "sessions_created": sessions}
    assert usage_drift(conn) == []
    assert session_drift(conn) == []


@pytest.fixture
def user(db: psycopg.Connection) -> UUID:
    return make_user(db)


def test_eight_writers_in_their_own_sessions_count_exactly(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """Half the writers use write_chat_exchange (which creates the session), half plain
    two-row INSERTs into a session they create; every exchange is sent twice."""

    def work(conn: psycopg.Connection, n: int) -> None:
        sid = f"session-{n}"
        if n % 2:
            conn.execute("INSERT INTO public.chat_sessions (id, user_id, created_at)"
                         " VALUES (%s, %s, %s)", (sid, user, NOON))
        for j in range(PAIRS):
            rows = pair(n, j, sid)
            for _ in range(2):
                if n % 2:
                    write_messages(conn, rows, "nothing")
                else:
                    exchange(conn, user, sid, rows)

    run_together(db_dsn, work)
    rows = [r for n in range(WRITERS) for j in range(PAIRS) for r in pair(n, j, f"session-{n}")]
    assert_exact(db, user, rows, sessions=WRITERS)
    counts = db.execute("SELECT id, message_count FROM public.chat_sessions ORDER BY id").fetchall()
    assert counts == [(f"session-{n}", 2 * PAIRS) for n in range(WRITERS)]


SAME_IDS_PATHS = {
    "plain_upserts": ("nothing", "update") * 4,
    "write_chat_exchange": ("exchange",) * 8,
}


@pytest.mark.parametrize("paths", SAME_IDS_PATHS.values(), ids=SAME_IDS_PATHS.keys())
def test_eight_writers_sending_the_same_conversation_count_it_once(
    db: psycopg.Connection, db_dsn: str, user: UUID, paths: tuple[str, ...]
) -> None:
    """Every writer uploads the same 30 exchanges (same ids) at the same time: each message is
    booked by exactly one of them. write_chat_exchange also creates the session, once.
    (Mixing the two paths on the same ids: see the deadlock test below.)"""
    sid = "shared"
    creates_session = paths[0] == "exchange"
    if not creates_session:
        make_session(db, user, sid)

    def work(conn: psycopg.Connection, n: int) -> None:
        for j in range(PAIRS):
            rows = pair(0, j, sid)
            if paths[n] == "exchange":
                exchange(conn, user, sid, rows)
            else:
                write_messages(conn, rows, paths[n])

    run_together(db_dsn, work)
    rows = [r for j in range(PAIRS) for r in pair(0, j, sid)]
    booked = db.execute("SELECT count(*) FROM pgchat.counted_events WHERE kind = 'message'"
                        ).fetchone()
    assert booked == (2 * PAIRS,)
    if creates_session:
        assert_exact(db, user, rows, sessions=1)
    else:
        want = expected_day(rows, sessions=0)
        today = usage_days(db, user)
        assert {k: v for k, v in today[DAY].items() if k != "sessions_created"} == {
            k: v for k, v in want.items() if k != "sessions_created"}
        assert usage_drift(db) == []
        assert session_drift(db) == []


def test_eight_reporters_of_the_same_events_count_each_once(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """track_user_usage with the same 30 keys from 8 connections at once: 30 calls say true."""
    counted: list[bool] = []

    def work(conn: psycopg.Connection, n: int) -> None:
        for j in range(PAIRS):
            counted.append(usage.track_usage(conn, user, f"evt-{j}", DAY, messages_received=1,
                                             output_tokens=j, model_used=MODELS[j % 3]))

    run_together(db_dsn, work)
    assert (counted.count(True), counted.count(False)) == (PAIRS, (WRITERS - 1) * PAIRS)
    day = usage_days(db, user)[DAY]
    assert (day["messages_received"], day["output_tokens"]) == (PAIRS, sum(range(PAIRS)))
    assert day["models_used"] == {m: PAIRS // 3 for m in MODELS}
    assert usage_drift(db) == []


def test_eight_exchange_writers_share_one_session(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """write_chat_exchange into ONE session, timestamps interleaved across writers with many
    ties: the statistics (last message included) are exact."""
    sid = make_session(db, user, "shared")
    shuffled = {(n, j): NOON + timedelta(seconds=(7 * j + 3 * n) % 40)
                for n in range(WRITERS) for j in range(PAIRS)}

    def work(conn: psycopg.Connection, n: int) -> None:
        for j in range(PAIRS):
            exchange(conn, user, sid, pair(n, j, sid, shuffled[n, j]))

    run_together(db_dsn, work)
    rows = [r for (n, j), at in shuffled.items() for r in pair(n, j, sid, at)]
    want = expected_day(rows, sessions=0)
    assert {k: v for k, v in usage_days(db, user)[DAY].items() if k != "sessions_created"} == {
        k: v for k, v in want.items() if k != "sessions_created"}
    assert db.execute("SELECT message_count, total_tokens FROM public.chat_sessions").fetchone(
    ) == (len(rows), sum(r["total_tokens"] for r in rows))
    assert usage_drift(db) == []
    assert session_drift(db) == []


def test_eight_mixed_writers_share_one_session(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """write_chat_exchange and plain INSERTs into ONE session at once: counters, message_count
    and total_tokens are exact. (The newest message is written first, so every writer's
    snapshot already holds it: the race on last_message_* is the deterministic test below.)"""
    sid = make_session(db, user, "shared")
    write_messages(db, [{"id": "newest", "session_id": sid, "role": "system",
                         "content": "pinned", "message_timestamp": NOON + timedelta(days=0.5)}])
    db.commit()

    def work(conn: psycopg.Connection, n: int) -> None:
        for j in range(PAIRS):
            rows = pair(n, j, sid)
            if n % 2:
                write_messages(conn, rows)
            else:
                exchange(conn, user, sid, rows)

    run_together(db_dsn, work)
    rows = [r for n in range(WRITERS) for j in range(PAIRS) for r in pair(n, j, sid)]
    want = expected_day(rows, sessions=0)
    assert {k: v for k, v in usage_days(db, user)[DAY].items() if k != "sessions_created"} == {
        k: v for k, v in want.items() if k != "sessions_created"}
    assert db.execute("SELECT message_count, total_tokens FROM public.chat_sessions").fetchone(
    ) == (len(rows) + 1, sum(r["total_tokens"] for r in rows))
    assert usage_drift(db) == []
    assert session_drift(db) == []


def test_rebuilds_while_writers_write_lose_no_increment(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """Seven writers write; the eighth, ten times over, damages a counter and runs
    pgchat.usage.rebuild, which rewrites the counters from the ledger under a lock."""
    pairs = 20

    def work(conn: psycopg.Connection, n: int) -> None:
        if n == WRITERS - 1:
            for _ in range(10):
                as_pgchat(conn)  # damage on purpose, past the guards
                conn.execute("UPDATE public.user_usage_daily SET input_tokens = input_tokens + 1000"
                             " WHERE user_id = %s", (user,))
                usage.rebuild(conn, user)
            return
        sid = f"session-{n}"
        for j in range(pairs):
            rows = pair(n, j, sid)
            if j == 0:
                exchange(conn, user, sid, rows)
            else:
                write_messages(conn, rows)

    run_together(db_dsn, work)
    rows = [r for n in range(WRITERS - 1) for j in range(pairs) for r in pair(n, j, f"session-{n}")]
    assert_exact(db, user, rows, sessions=WRITERS - 1)


# --- a writer that had to wait for the session's lock ----------------------------------------


def wait_until_blocked(observer: psycopg.Connection, pid: int,
                       thread: threading.Thread | None = None) -> None:
    """Until backend `pid` waits for a lock, or `thread` has finished without waiting (then
    the interleaving a test aims at cannot happen: the test goes on and says what happened).
    Synchronisation, not a timing assertion."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = observer.execute("SELECT cardinality(pg_blocking_pids(%s))", (pid,)).fetchone()
        if (row and row[0]) or (thread is not None and not thread.is_alive()):
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} neither waited for a lock nor finished")


class Background:
    """Writes started in threads, each on an autocommit connection of its own:
    `started_and_blocked` returns once the write waits for a lock (or is done already),
    `finish` joins them all and returns every error they met."""

    def __init__(self, dsn: str, observer: psycopg.Connection) -> None:
        self.dsn, self.observer = dsn, observer
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def started_and_blocked(self, work: Callable[[psycopg.Connection], object]) -> None:
        conn = psycopg.connect(self.dsn, autocommit=True)
        pid = conn.info.backend_pid

        def run() -> None:
            try:
                work(conn)
            except BaseException as exc:  # reported by finish()
                self.errors.append(exc)
            finally:
                conn.close()

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)
        wait_until_blocked(self.observer, pid, thread)

    def finish(self) -> list[BaseException]:
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a writer hung"
        return self.errors


def write_while_another_transaction_holds_the_session(
    db_dsn: str, user: UUID, second_write: Callable[[psycopg.Connection], object]
) -> None:
    """T1 inserts the newest message and keeps its transaction open (it holds the session's
    row lock); T2 runs `second_write` (an older message), which must wait; T1 commits."""
    with psycopg.connect(db_dsn, autocommit=True) as observer, psycopg.connect(db_dsn) as first:
        make_session(observer, user, "s1")
        write_messages(first, [{"id": "newest", "session_id": "s1", "content": "newest",
                                "message_timestamp": "2025-06-01T10:00:00Z"}])
        background = Background(db_dsn, observer)
        background.started_and_blocked(second_write)
        first.commit()
        assert background.finish() == []


def test_a_plain_insert_that_waited_for_the_session_still_sees_the_newest_message(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    write_while_another_transaction_holds_the_session(db_dsn, user, lambda conn: write_messages(
        conn, [{"id": "older", "session_id": "s1", "content": "older",
                "message_timestamp": "2025-06-01T09:00:00Z"}]))
    assert db.execute("SELECT message_count, last_message_preview FROM public.chat_sessions"
                      ).fetchone() == (2, "newest")
    assert session_drift(db) == []


def test_write_chat_exchange_that_waited_for_the_session_still_sees_the_newest_message(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """write_chat_exchange locks the session in a statement of its own, before it writes."""
    write_while_another_transaction_holds_the_session(db_dsn, user, lambda conn: conn.execute(
        "SELECT public.write_chat_exchange(%s, 's1', %s)",
        (user, Jsonb({"id": "older", "content": "older", "timestamp": "2025-06-01T09:00:00Z"}))))
    assert db.execute("SELECT message_count, last_message_preview FROM public.chat_sessions"
                      ).fetchone() == (2, "newest")
    assert session_drift(db) == []


def test_an_insert_that_waited_for_a_title_edit_counts_on_the_edited_row(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """The insert trigger locks only the profile; its statistics UPDATE then waits for a
    writer that holds just the session (a title edit) and adds to that writer's row."""
    with psycopg.connect(db_dsn, autocommit=True) as observer, psycopg.connect(db_dsn) as editor:
        make_session(observer, user, "s1")
        editor.execute("UPDATE public.chat_sessions SET title = 'renamed' WHERE id = 's1'")
        background = Background(db_dsn, observer)
        background.started_and_blocked(lambda conn: write_messages(
            conn, [{"id": "m1", "session_id": "s1", "content": "hello",
                    "message_timestamp": "2025-06-01T10:00:00Z"}]))
        editor.commit()
        assert background.finish() == []
    assert db.execute("SELECT title, message_count, last_message_preview"
                      " FROM public.chat_sessions WHERE id = 's1'").fetchone() == (
        "renamed", 1, "hello")
    assert session_drift(db) == []
    assert db.execute("SELECT sum(messages_sent) FROM public.user_usage_daily"
                      " WHERE user_id = %s", (user,)).fetchone() == (1,)


def test_write_chat_exchange_and_a_plain_insert_of_the_same_message_do_not_deadlock(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """Deterministic interleaving, every write a one-statement transaction of its own:
    C holds message q (uncommitted, in another session), so write_chat_exchange(q, a) stops
    after locking s1, at q; a plain INSERT of a then stops in its trigger, at s1; C rolls back:
    write_chat_exchange goes on to a (held by the INSERT), which waits for s1 (held by it)."""
    make_session(db, user, "s1")
    make_session(db, user, "s2")
    q, a = pair(0, 0, "s1")
    with psycopg.connect(db_dsn, autocommit=True) as observer, psycopg.connect(db_dsn) as c:
        write_messages(c, [q | {"session_id": "s2"}])
        background = Background(db_dsn, observer)
        background.started_and_blocked(lambda conn: exchange(conn, user, "s1", (q, a)))
        background.started_and_blocked(lambda conn: write_messages(conn, [a]))
        c.rollback()
        errors = background.finish()
    assert errors == []
    assert db.execute("SELECT count(*) FROM public.chat_messages").fetchone() == (2,)
    assert usage_drift(db) == []
    assert session_drift(db) == []


def conversation(cid: str, created: str, message_day: str) -> dict[str, Any]:
    return {"id": cid, "createdAt": created, "messages": [
        {"id": f"{cid}-q", "role": "user", "content": "q", "timestamp": f"{message_day}T10:00:00Z",
         "input_tokens": 3}]}


def test_two_syncs_for_the_same_user_across_days_do_not_deadlock(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """Each sync books in two statements (its session on one day, then its message on
    another); the second one's first statement touches the day of the first one's second.
    Deterministic interleaving: a third transaction holds the profile row, so that both syncs
    stop in their first statement, then lets go."""
    first = conversation("x", "2025-06-01T09:00:00Z", "2025-06-02")   # created D1, message D2
    second = conversation("y", "2025-06-02T09:00:00Z", "2025-06-02")  # created D2, message D2
    with psycopg.connect(db_dsn, autocommit=True) as observer, psycopg.connect(db_dsn) as holder:
        holder.execute("UPDATE public.profiles SET full_name = 'busy' WHERE id = %s", (user,))
        background = Background(db_dsn, observer)
        for conv in (first, second):
            background.started_and_blocked(lambda conn, conv=conv: conn.execute(
                "SELECT public.sync_user_conversations(%s, %s)", (user, Jsonb([conv]))))
        holder.rollback()
        errors = background.finish()
    assert errors == []
    assert usage_stats(db, user) == {"total_messages": 2, "total_tokens": 6,
                                     "sessions_created": 2}
    assert usage_drift(db) == []


def test_write_chat_exchange_and_a_sign_in_sync_of_the_same_user_do_not_deadlock(
    db: psycopg.Connection, db_dsn: str, user: UUID
) -> None:
    """The chat API writes an exchange into conversation s1 while a sign-in sync uploads a new
    conversation plus a new message of s1 (different message ids). Deterministic interleaving:
    C holds the exchange's question id (uncommitted, in s3) and the profile row, so the
    exchange stops after locking s1 and the sync stops in its first statement, at the profile;
    C rolls back."""
    for sid in ("s1", "s3"):
        make_session(db, user, sid)
    q, a = pair(0, 0, "s1")
    sync_payload = [
        conversation("new", "2025-06-01T08:00:00Z", "2025-06-01"),
        {"id": "s1", "messages": [{"id": "s1-from-sync", "role": "user", "content": "hi",
                                   "timestamp": "2025-06-01T11:00:00Z"}]},
    ]
    with psycopg.connect(db_dsn, autocommit=True) as observer, psycopg.connect(db_dsn) as c:
        write_messages(c, [q | {"session_id": "s3"}])  # holds q, s3 and the profile row
        background = Background(db_dsn, observer)
        background.started_and_blocked(lambda conn: exchange(conn, user, "s1", (q, a)))
        background.started_and_blocked(lambda conn: conn.execute(
            "SELECT public.sync_user_conversations(%s, %s)", (user, Jsonb(sync_payload))))
        c.rollback()
        errors = background.finish()
    assert errors == []
    assert usage_drift(db) == []
    assert session_drift(db) == []
