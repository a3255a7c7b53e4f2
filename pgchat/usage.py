"""Usage counters: verify them against the ledger, rebuild them from it, show them, book events.

Every function takes an open psycopg connection (any row factory) and runs inside the caller's
transaction (committing is the caller's business), so calls compose with the caller's own
work — except `rebuild`, which is a repair and runs in a transaction of its own that it commits.
`pgchat.Client` / `pgchat.AsyncClient` offer the same calls as methods.
"""

from __future__ import annotations

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
    """One counter that disagrees with the ledger. `usage_date` None means profiles.usage_stats."""

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


def track_usage_query(
    user_id: UUID | str, event_key: str, usage_date: date, *, messages_sent: int = 0,
    messages_received: int = 0, input_tokens: int = 0, output_tokens: int = 0,
    model_used: str | None = None, session_created: bool = False, active_seconds: int = 0,
) -> Query[bool]:
    return Query(
        "SELECT public.track_user_usage(p_user_id => %s, p_event_key => %s, p_usage_date => %s,"
        " p_messages_sent => %s, p_messages_received => %s, p_input_tokens => %s,"
        " p_output_tokens => %s, p_model_used => %s, p_session_created => %s,"
        " p_active_seconds => %s)",
        (as_uuid(user_id), event_key, usage_date, messages_sent, messages_received,
         input_tokens, output_tokens, model_used, session_created, active_seconds),
        lambda rows: bool(one(rows)),
    )


def lock_query(user_id: UUID | None) -> Query[None]:
    return Query("SELECT pgchat.lock_for_rebuild(%s)", (user_id,), lambda rows: None)


def rebuild_query(user_id: UUID | None) -> Query[None]:
    return Query("SELECT pgchat.rebuild_usage(%s)", (user_id,), lambda rows: None)


def check_idle(status: pq.TransactionStatus) -> None:
    """rebuild commits on its own: it refuses to run inside the caller's transaction."""
    if status != pq.TransactionStatus.IDLE:
        raise UsageError("usage rebuild commits its own transaction: call it on a connection "
                         "that is not inside a transaction (commit or roll back first)")


def verify(conn: psycopg.Connection[Any], user_id: UUID | str | None = None) -> list[Drift]:
    """Every counter (daily and profile totals) that differs from what the ledger says."""
    return run(conn, verify_query(user_id))


def rebuild(conn: psycopg.Connection[Any], user_id: UUID | str | None = None, *,
            dry_run: bool = False) -> list[Drift]:
    """Rewrite user_usage_daily and profiles.usage_stats from the ledger, and commit.

    Returns the differences that were (or, with `dry_run`, would be) repaired. The drift is read
    under the lock the rewrite holds, so what is reported is exactly what is changed. Runs in a
    transaction of its own, committed before it returns (rolled back with `dry_run` or on an
    error); a connection already inside a transaction is refused (UsageError), so the repair is
    never left uncommitted in the caller's transaction.
    """
    check_idle(conn.info.transaction_status)
    user = _user(user_id)
    with translated(), conn.transaction(force_rollback=dry_run):
        run(conn, lock_query(user))
        drift = run(conn, verify_query(user))
        if drift and not dry_run:
            run(conn, rebuild_query(user))
    return drift


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
