"""Property-based: random write sequences against a pure-Python model of exactly-once counting.

Each example writes to 3 sessions of 2 users over several UTC days (timestamps near midnight in
several offsets, and many ties) with single- and multi-row statements: insert, upsert of the
same data, upsert with changed values, update, delete, re-insert, failed then retried, a cleared
conversation, and track_user_usage with the message's own id. The model books each message once,
with the values of the FIRST version of it that was successful (or of the track_user_usage call
that came first), on its own UTC day, failed ones never. After every sequence the counters equal
the model's and both drift functions are empty.

One database for the whole test: every example runs in one transaction, rolled back at the end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import session_drift, usage_days, usage_drift, usage_stats, write_messages

ALICE = UUID("00000000-0000-4000-8000-00000000a11c")
BOB = UUID("00000000-0000-4000-8000-000000000b0b")
SESSIONS = {  # id -> (owner, created_at)
    "s0": (ALICE, "2025-03-01T20:30:00-05:00"),   # UTC 2025-03-02
    "s1": (ALICE, "2025-03-02T10:00:00Z"),
    "s2": (BOB, "2025-03-03T00:30:00+02:00"),     # UTC 2025-03-02
}
MESSAGES = {  # id -> (session, role): a message never changes session or role
    "m0": ("s0", "user"), "m1": ("s0", "assistant"), "m2": ("s0", "user"),
    "m3": ("s1", "assistant"), "m4": ("s1", "user"), "m5": ("s1", "system"),
    "m6": ("s2", "user"), "m7": ("s2", "assistant"),
}
TIMESTAMPS = [
    "2025-03-01T23:30:00-05:00", "2025-03-02T04:30:00Z",  # the same instant: a tie
    "2025-03-02T00:30:00+02:00", "2025-03-01T23:59:59Z", "2025-03-02T00:00:00Z",
    "2025-03-02T23:59:59.5+00:00", "2025-03-03T09:00:00+14:00", "2025-03-03T12:00:00Z",
]
MODELS = [None, "m/a", "m/b"]

values = st.fixed_dictionaries({
    "content": st.sampled_from(["hi", "", "x" * 250, "déjà vu"]),
    "input_tokens": st.integers(0, 60),
    "output_tokens": st.integers(0, 900),
    "total_tokens": st.integers(0, 999),
    "model": st.sampled_from(MODELS),
    "elapsed_time": st.integers(0, 130),
    "message_timestamp": st.sampled_from(TIMESTAMPS),
})
ids = st.lists(st.sampled_from(sorted(MESSAGES)), min_size=1, max_size=4, unique=True)
errors = st.sampled_from([None, None, "", "upstream timeout"])

operations = st.one_of(
    st.tuples(st.just("insert"), ids, st.lists(values, min_size=4, max_size=4), errors),
    st.tuples(st.just("upsert"), ids, st.lists(values, min_size=4, max_size=4), errors),
    st.tuples(st.just("upsert_same"), ids),
    st.tuples(st.just("update_content"), ids, st.sampled_from(["edited", "y" * 300])),
    st.tuples(st.just("update_tokens"), ids, st.integers(1, 50)),
    st.tuples(st.just("delete"), ids),
    st.tuples(st.just("fail"), ids),
    st.tuples(st.just("retry"), ids),
    st.tuples(st.just("clear_session"), st.sampled_from(sorted(SESSIONS))),
    st.tuples(st.just("track"), st.sampled_from(sorted(m for m, (_, role) in MESSAGES.items()
                                                       if role != "system")), values),
)


def utc_day(timestamp: str) -> date:
    return datetime.fromisoformat(timestamp).astimezone(UTC).date()


@dataclass
class Model:
    """What is stored, and what has been booked (id -> the booked values)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    booked: dict[str, dict[str, Any]] = field(default_factory=dict)

    def book_successful_rows(self) -> None:
        """After each statement: a stored successful user/assistant row is booked, once."""
        for mid, row in self.rows.items():
            if row["role"] != "system" and not row["error_message"] and mid not in self.booked:
                self.booked[mid] = dict(row)

    def expected_days(self, user: UUID) -> dict[date, dict[str, Any]]:
        days: dict[date, Counter[str]] = {}
        models: dict[date, Counter[str]] = {}
        for owner, created_at in SESSIONS.values():
            if owner == user:
                days.setdefault(utc_day(created_at), Counter())["sessions_created"] += 1
        for mid, v in self.booked.items():
            session, role = MESSAGES[mid]
            if SESSIONS[session][0] != user:
                continue
            day = utc_day(v["message_timestamp"])
            c = days.setdefault(day, Counter())
            if role == "user":
                c["messages_sent"] += 1
                c["input_tokens"] += v["input_tokens"]
            else:
                c["messages_received"] += 1
                c["output_tokens"] += v["output_tokens"]
                c["active_seconds"] += v["elapsed_time"]
                if v["model"]:
                    models.setdefault(day, Counter())[v["model"]] += 1
        return {d: {"messages_sent": c["messages_sent"],
                    "messages_received": c["messages_received"],
                    "input_tokens": c["input_tokens"], "output_tokens": c["output_tokens"],
                    "total_tokens": c["input_tokens"] + c["output_tokens"],
                    "models_used": dict(models.get(d, {})),
                    "sessions_created": c["sessions_created"],
                    "active_seconds": c["active_seconds"],
                    "active_minutes": c["active_seconds"] // 60}
                for d, c in days.items()}

    def expected_totals(self, user: UUID) -> dict[str, int]:
        days = self.expected_days(user).values()
        return {"total_messages": sum(d["messages_sent"] + d["messages_received"] for d in days),
                "total_tokens": sum(d["total_tokens"] for d in days),
                "sessions_created": sum(d["sessions_created"] for d in days)}


def row_of(mid: str, v: dict[str, Any], error: str | None) -> dict[str, Any]:
    session, role = MESSAGES[mid]
    return {"id": mid, "session_id": session, "role": role, **v, "error_message": error}


def apply(conn: psycopg.Connection, model: Model, op: tuple[Any, ...]) -> None:
    """Run one operation (one SQL statement, two for clear_session) and update the model."""
    kind, *args = op
    if kind in ("insert", "upsert"):
        targets, vals, error = args
        if kind == "insert":  # a plain INSERT: only ids that are not stored
            targets = [m for m in targets if m not in model.rows]
        rows = [row_of(m, v, error) for m, v in zip(targets, vals, strict=False)]
        if rows:
            write_messages(conn, rows, "" if kind == "insert" else "update")
            model.rows.update((r["id"], r) for r in rows)
    elif kind == "upsert_same":
        write_messages(conn, [model.rows[m] for m in args[0] if m in model.rows], "update")
    elif kind in ("update_content", "update_tokens", "fail", "retry"):
        targets, *rest = args
        column, value, sql = {
            "update_content": ("content", rest[0] if rest else None, "content = %(v)s"),
            "update_tokens": ("total_tokens", None, "total_tokens = total_tokens + %(v)s,"
                              " input_tokens = input_tokens + %(v)s,"
                              " output_tokens = output_tokens + %(v)s"),
            "fail": ("error_message", "failed", "error_message = %(v)s"),
            "retry": ("error_message", None, "error_message = %(v)s"),
        }[kind]
        v = rest[0] if kind == "update_tokens" else value
        conn.execute(f"UPDATE public.chat_messages SET {sql} WHERE id = ANY(%(ids)s)",
                     {"v": v, "ids": targets})
        for m in targets:
            if m in model.rows:
                row = model.rows[m]
                if kind == "update_tokens":
                    for c in ("total_tokens", "input_tokens", "output_tokens"):
                        row[c] += v
                else:
                    row[column] = v
    elif kind == "delete":
        conn.execute("DELETE FROM public.chat_messages WHERE id = ANY(%s)", (args[0],))
        for m in args[0]:
            model.rows.pop(m, None)
    elif kind == "clear_session":  # the conversation is deleted, then created again
        sid = args[0]
        conn.execute("DELETE FROM public.chat_sessions WHERE id = %s", (sid,))
        create_session(conn, sid)
        model.rows = {m: r for m, r in model.rows.items() if r["session_id"] != sid}
    elif kind == "track":
        mid, v = args
        session, role = MESSAGES[mid]
        owner = SESSIONS[session][0]
        user_side = role == "user"
        conn.execute(
            "SELECT public.track_user_usage(%s, %s, %s, %s, %s, %s, %s, %s, false, %s)",
            (owner, mid, utc_day(v["message_timestamp"]), int(user_side), int(not user_side),
             v["input_tokens"] if user_side else 0, 0 if user_side else v["output_tokens"],
             None if user_side else v["model"], 0 if user_side else v["elapsed_time"]))
        if mid not in model.booked:
            model.booked[mid] = dict(v)
    model.book_successful_rows()


def create_session(conn: psycopg.Connection, sid: str) -> None:
    owner, created_at = SESSIONS[sid]
    conn.execute("INSERT INTO public.chat_sessions (id, user_id, created_at, updated_at,"
                 " last_activity) VALUES (%s, %s, %s, %s, %s)",
                 (sid, owner, created_at, created_at, created_at))


def stored(conn: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute("SELECT id, content, total_tokens, coalesce(error_message, '') <> ''"
                        " FROM public.chat_messages").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(operations, min_size=1, max_size=14))
def test_counters_equal_the_exactly_once_model(
    db: psycopg.Connection, ops: list[tuple[Any, ...]]
) -> None:
    model = Model()
    try:
        for user in (ALICE, BOB):
            db.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)",
                       (user, f"{user.hex[-4:]}@example.com"))
        for sid in SESSIONS:
            create_session(db, sid)
        for op in ops:
            apply(db, model, op)

        # The model describes the database (else the comparison below would mean nothing) ...
        assert stored(db) == {m: (r["content"], r["total_tokens"], bool(r["error_message"]))
                              for m, r in model.rows.items()}
        # ... and the counters are what exactly-once counting says.
        for user in (ALICE, BOB):
            assert usage_days(db, user) == model.expected_days(user)
            assert usage_stats(db, user) == model.expected_totals(user)
        assert usage_drift(db) == []
        assert session_drift(db) == []
    finally:
        db.rollback()
