"""Usage counters: verify them against the ledger, rebuild them from it, show them, book events.

Every function takes an open psycopg connection and runs inside the caller's transaction
(committing is the caller's business, except for `rebuild`, see there), so calls compose with
the caller's own work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from pgchat.errors import UsageError, ValidationError, from_database


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


def _check_schema(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT to_regclass('pgchat.usage_ledger')").fetchone() == (None,):
        raise UsageError("this database has no usage ledger: run `pgchat migrate` first")


def verify(conn: psycopg.Connection, user_id: UUID | None = None) -> list[Drift]:
    """Every counter (daily and profile totals) that differs from what the ledger says."""
    _check_schema(conn)
    with conn.cursor(row_factory=class_row(Drift)) as cur:
        return cur.execute(
            "SELECT user_id, usage_date, field, recorded, expected FROM pgchat.usage_drift(%s)",
            (user_id,),
        ).fetchall()


def rebuild(conn: psycopg.Connection, user_id: UUID | None = None, *,
            dry_run: bool = False) -> list[Drift]:
    """Rewrite user_usage_daily and profiles.usage_stats from the ledger.

    Returns the differences that were (or, with `dry_run`, would be) repaired. The drift is read
    under the lock the rewrite holds, so what is reported is exactly what is changed. Commits
    when called outside a transaction; inside one it is a savepoint of the caller's.
    """
    _check_schema(conn)
    with conn.transaction() as tx:
        conn.execute("SELECT pgchat.lock_for_rebuild(%s)", (user_id,))
        drift = verify(conn, user_id)
        if dry_run:
            raise psycopg.Rollback(tx)
        if drift:
            conn.execute("SELECT pgchat.rebuild_usage(%s)", (user_id,))
    return drift


def show(conn: psycopg.Connection, user_id: UUID, date_from: date | None = None,
         date_to: date | None = None) -> list[DailyUsage]:
    """A user's daily counters, oldest first, optionally within [date_from, date_to]."""
    if date_from and date_to and date_from > date_to:
        raise UsageError(f"--from {date_from} is after --to {date_to}")
    _check_schema(conn)
    if conn.execute("SELECT 1 FROM public.profiles WHERE id = %s", (user_id,)).fetchone() is None:
        raise ValidationError(f"unknown user {user_id}")
    with conn.cursor(row_factory=class_row(DailyUsage)) as cur:
        return cur.execute(
            "SELECT user_id, usage_date, messages_sent, messages_received, input_tokens,"
            " output_tokens, total_tokens, models_used, sessions_created, active_seconds,"
            " active_minutes FROM public.user_usage_daily"
            " WHERE user_id = %s AND usage_date >= coalesce(%s, '-infinity'::date)"
            " AND usage_date <= coalesce(%s, 'infinity'::date) ORDER BY usage_date",
            (user_id, date_from, date_to),
        ).fetchall()


def track_usage(conn: psycopg.Connection, user_id: UUID, event_key: str, usage_date: date,
                **counts: Any) -> bool:
    """Book one usage event exactly once (public.track_user_usage); True if counted now.

    `counts` are the function's parameters without their `p_` prefix: messages_sent,
    messages_received, input_tokens, output_tokens, model_used, session_created, active_seconds.
    """
    allowed = {"messages_sent", "messages_received", "input_tokens", "output_tokens",
               "model_used", "session_created", "active_seconds"}
    unknown = set(counts) - allowed
    if unknown:
        raise ValidationError(f"unknown usage fields: {', '.join(sorted(unknown))}")
    args = ", ".join(f"p_{name} => %({name})s" for name in counts)
    query = ("SELECT public.track_user_usage(p_user_id => %(user_id)s, p_event_key => %(key)s,"
             f" p_usage_date => %(day)s{', ' + args if args else ''})")
    try:
        row = conn.execute(query, {"user_id": user_id, "key": event_key, "day": usage_date,
                                   **counts}).fetchone()
    except psycopg.Error as exc:
        mapped = from_database(exc)
        if mapped is None:
            raise
        raise mapped from None
    return bool(row and row[0])
