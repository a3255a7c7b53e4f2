"""Usage counters: recount them from what was counted (the stored rows and the ledger of
exceptions, pgchat.counted_events), rebuild them from it, show them, book events.

Every function takes an open psycopg connection (any row factory) and runs inside the caller's
transaction (committing is the caller's business), so calls compose with the caller's own
work — except `rebuild`, which is a repair and runs in a transaction of its own that it commits.
`pgchat.Client` / `pgchat.AsyncClient` offer the same calls as methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import psycopg
from psycopg import pq

from pgchat._db import Query, Row, as_uuid, one, run, translated
from pgchat.errors import UsageError, ValidationError


@dataclass(frozen=True)
class Drift:
    """One counter that disagrees with what was counted. `usage_date` None: profiles.usage_stats."""

    user_id: UUID
    usage_date: date | None
    field: str
    recorded: str | None
    expected: str | None


@dataclass(frozen=True)
class DailyUsage:
    user_id: UUID
    usage_date: date
    messages_sent: int
    messages_received: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    models_used: dict[str, int]
    sessions_created: int
    active_seconds: int
    active_minutes: int


_DAILY_COLUMNS = ("user_id, usage_date, messages_sent, messages_received, input_tokens,"
                  " output_tokens, total_tokens, models_used, sessions_created, active_seconds,"
                  " active_minutes")


def _user(user_id: UUID | str | None) -> UUID | None:
    return None if user_id is None else as_uuid(user_id)


def _known(user_id: UUID | None, rows: list[Row]) -> list[Row]:
    """Rows of a query whose first column says whether the user exists; refuse a stranger."""
    if not rows or not rows[0][0]:
        raise ValidationError(f"unknown user {user_id}")
    return [r[1:] for r in rows if r[1] is not None]


def verify_query(user_id: UUID | str | None = None) -> Query[list[Drift]]:
    user = _user(user_id)
    return Query(
        "SELECT k.known, d.user_id, d.usage_date, d.field, d.recorded, d.expected"
        " FROM (SELECT %(u)s::uuid IS NULL"
        "       OR EXISTS (SELECT FROM public.profiles WHERE id = %(u)s::uuid) AS known) k"
        " LEFT JOIN LATERAL pgchat.usage_drift(%(u)s::uuid) d ON k.known"
        " ORDER BY d.user_id, d.usage_date NULLS LAST, d.field",
        {"u": user},
        lambda rows: [Drift(*r) for r in _known(user, rows)],
    )


def show_query(user_id: UUID | str, date_from: date | None = None,
               date_to: date | None = None) -> Query[list[DailyUsage]]:
    if date_from and date_to and date_from > date_to:
        raise UsageError(f"--from {date_from} is after --to {date_to}")
    user = as_uuid(user_id)
    columns = ", ".join(f"d.{c.strip()}" for c in _DAILY_COLUMNS.split(","))
    return Query(
        f"SELECT true, {columns} FROM public.profiles p"
        " LEFT JOIN public.user_usage_daily d ON d.user_id = p.id"
        "  AND d.usage_date >= coalesce(%(from)s, '-infinity'::date)"
        "  AND d.usage_date <= coalesce(%(to)s, 'infinity'::date)"
        " WHERE p.id = %(u)s ORDER BY d.usage_date",
        {"u": user, "from": date_from, "to": date_to},
        lambda rows: [DailyUsage(*r) for r in _known(user, rows)],
    )


_INT4_MAX = 2_147_483_647
_EVENT_MAX = 10_000_000  # public.track_user_usage's bound on one event's tokens and seconds


def _count(event_key: str, name: str, value: Any) -> None:
    """A count as public.track_user_usage takes it, checked before sending with the function's
    own bounds: psycopg sends a Python int past an SQL integer as bigint, and no function of
    that signature exists, so the server would answer "function does not exist" instead of
    naming the field."""
    where = f"track_usage (event {event_key!r}): {name}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{where} must be an integer, got {value!r}")
    if value < 0:
        raise ValidationError(f"{where} must not be negative, got {value}")
    bound = _INT4_MAX if name.startswith("messages_") else _EVENT_MAX
    if value > bound:
        raise ValidationError(f"{where} must be at most {bound}, got {value}")


def track_usage_query(
    user_id: UUID | str, event_key: str, usage_date: date, *, messages_sent: int = 0,
    messages_received: int = 0, input_tokens: int = 0, output_tokens: int = 0,
    model_used: str | None = None, session_created: bool = False, active_seconds: int = 0,
) -> Query[bool]:
    counts = {"messages_sent": messages_sent, "messages_received": messages_received,
              "input_tokens": input_tokens, "output_tokens": output_tokens,
              "active_seconds": active_seconds}
    for name, value in counts.items():
        _count(event_key, name, value)
    return Query(
        "SELECT public.track_user_usage(p_user_id => %s, p_event_key => %s, p_usage_date => %s,"
        " p_messages_sent => %s, p_messages_received => %s, p_input_tokens => %s,"
        " p_output_tokens => %s, p_model_used => %s, p_session_created => %s,"
        " p_active_seconds => %s)",
        (as_uuid(user_id), event_key, usage_date, messages_sent, messages_received,
         input_tokens, output_tokens, model_used, session_created, active_seconds),
        lambda rows: bool(one(rows)),
    )


# `rebuild` goes batch by batch of users, one transaction each: a booking waits at most for
# the batch of its user, and everybody else's bookings go on. A batch recounts its users from
# their stored messages twice (the drift, then the rewrite): at 500 messages a user, 25 users
# held a write up to 200 ms, 10 users hold it about 12 ms (`pgchat bench --adoption`).
REBUILD_BATCH = 10


def users_query(after: UUID | None, limit: int | None = None) -> Query[list[UUID]]:
    """The next batch of users (by id) after `after` (None: from the first)."""
    return Query("SELECT id FROM public.profiles WHERE %s::uuid IS NULL OR id > %s"
                 " ORDER BY id LIMIT %s", (after, after, limit or REBUILD_BATCH),
                 lambda rows: [r[0] for r in rows])


def lock_query(users: list[UUID]) -> Query[None]:
    return Query("SELECT pgchat.lock_users_for_rebuild(%s::uuid[])", (users,), lambda rows: None)


def drift_query(users: list[UUID]) -> Query[list[Drift]]:
    return Query("SELECT * FROM pgchat.usage_drift_of(%s::uuid[])", (users,),
                 lambda rows: [Drift(*r) for r in rows])


def rebuild_query(users: list[UUID]) -> Query[None]:
    return Query("SELECT pgchat.rebuild_users(%s::uuid[])", (users,), lambda rows: None)


def check_idle(status: pq.TransactionStatus) -> None:
    """rebuild commits on its own: it refuses to run inside the caller's transaction."""
    if status != pq.TransactionStatus.IDLE:
        raise UsageError("usage rebuild commits its own transaction: call it on a connection "
                         "that is not inside a transaction (commit or roll back first)")


def verify(conn: psycopg.Connection[Any], user_id: UUID | str | None = None) -> list[Drift]:
    """Every counter (daily and profile totals) that differs from what was counted."""
    return run(conn, verify_query(user_id))


def user_count(conn: psycopg.Connection[Any]) -> int:
    """How many users (profiles) a whole-database rebuild goes through (for a progress bar)."""
    return int(run(conn, Query("SELECT count(*) FROM public.profiles", (), one)))


def rebuild(conn: psycopg.Connection[Any], user_id: UUID | str | None = None, *,
            dry_run: bool = False,
            progress: Callable[[int], None] | None = None) -> list[Drift]:
    """Rewrite user_usage_daily and profiles.usage_stats from what was counted, and commit.

    Returns the differences that were (or, with `dry_run`, would be) repaired. Online: the
    users are rebuilt batch by batch, each batch in a transaction of its own that locks its
    users' profiles (the first lock of every booking), reads their drift under that lock and
    rewrites it, then commits; so what is reported is exactly what is changed, and no booking
    waits behind more than one batch. `dry_run` only reads (pgchat.usage_drift), taking no lock.
    A connection already inside a transaction is refused (UsageError), so the repair is never
    left uncommitted in the caller's transaction. `progress` gets the number of users of each
    batch once it is committed. No session state is used (the locks are the transaction's), so
    a transaction pooler's connection works.
    """
    check_idle(conn.info.transaction_status)
    user = _user(user_id)
    if dry_run:
        with translated(), conn.transaction(force_rollback=True):
            return run(conn, verify_query(user))
    repaired: list[Drift] = []
    after: UUID | None = None
    with translated():
        if user is not None:
            with conn.transaction(force_rollback=True):
                run(conn, verify_query(user))  # refuses an unknown user
        while True:
            with conn.transaction():
                users = [user] if user is not None else run(conn, users_query(after))
                if users:
                    run(conn, lock_query(users))
                    drift = run(conn, drift_query(users))
                    if drift:
                        run(conn, rebuild_query(users))
                    repaired += drift
            if progress and users:
                progress(len(users))
            if not users or user is not None:
                break
            after = users[-1]
    return sorted(repaired, key=drift_order)


def drift_order(d: Drift) -> tuple[UUID, bool, date, str]:
    """verify's order: by user, the days first (oldest first), then the profile totals."""
    return (d.user_id, d.usage_date is None, d.usage_date or date.min, d.field)


def show(conn: psycopg.Connection[Any], user_id: UUID | str, date_from: date | None = None,
         date_to: date | None = None) -> list[DailyUsage]:
    """A user's daily counters, oldest first, optionally within [date_from, date_to]."""
    return run(conn, show_query(user_id, date_from, date_to))


def track_usage(
    conn: psycopg.Connection[Any], user_id: UUID | str, event_key: str, usage_date: date, *,
    messages_sent: int = 0, messages_received: int = 0, input_tokens: int = 0,
    output_tokens: int = 0, model_used: str | None = None, session_created: bool = False,
    active_seconds: int = 0,
) -> bool:
    """Book one usage event exactly once (public.track_user_usage); True if counted now.

    `event_key` is the message id (the session id with `session_created`), the key the
    triggers use, so an event reported both ways counts once.
    """
    return run(conn, track_usage_query(
        user_id, event_key, usage_date, messages_sent=messages_sent,
        messages_received=messages_received, input_tokens=input_tokens,
        output_tokens=output_tokens, model_used=model_used, session_created=session_created,
        active_seconds=active_seconds))
