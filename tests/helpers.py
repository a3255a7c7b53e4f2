"""Small helpers shared by the tests (plain functions, no fixtures)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg import sql

from pgchat.migrate import SCHEMA
from pgchat.paths import migrations_dir


def as_pgchat(conn: psycopg.Connection, local: bool = True) -> None:
    """Write as pgchat does (its marker, as the owner): a test that damages counters on purpose.

    Anyone else's write into pgchat's columns is neutralised by the guards of 0005."""
    conn.execute("select pg_catalog.set_config('pgchat.writer', 'on', %s)", (local,))


def migration_ids() -> list[str]:
    """Every migration id on disk, in file-name order (independent of yoyo)."""
    return sorted(
        p.name.removesuffix(".sql")
        for p in migrations_dir().glob("*.sql")
        if not p.name.endswith(".rollback.sql")
    )


def make_user(conn: psycopg.Connection, email: str | None = None) -> uuid.UUID:
    """Sign a user up the way Supabase Auth does (a row in auth.users) and commit.

    The profile row appears through the `on_auth_user_profile_sync` trigger.
    """
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s::jsonb)",
        (user_id, email or f"{user_id.hex[:12]}@example.com", '{"full_name": "Test User"}'),
    )
    conn.commit()
    return user_id


def make_session(
    conn: psycopg.Connection, user_id: uuid.UUID, session_id: str | None = None
) -> str:
    """Insert an (empty) chat session for `user_id` and commit; return its id."""
    session_id = session_id or f"sess-{uuid.uuid4().hex[:12]}"
    conn.execute(
        "insert into public.chat_sessions (id, user_id, title) values (%s, %s, 'test chat')",
        (session_id, user_id),
    )
    conn.commit()
    return session_id


def table_counts(
    conn: psycopg.Connection, schemas: Iterable[str] = ("public", "auth")
) -> dict[str, int]:
    """Row count of every ordinary table in `schemas`, keyed by `schema.table`."""
    tables = conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p') and n.nspname = any(%s) order by 1, 2",
        (list(schemas),),
    ).fetchall()
    counts = {}
    for schema, name in tables:
        query = sql.SQL("select count(*) from {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name)
        )
        row = conn.execute(query).fetchone()
        assert row is not None
        counts[f"{schema}.{name}"] = row[0]
    return counts


def yoyo_log(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(migration id, operation) for every entry of yoyo's log, oldest first."""
    rows = conn.execute(
        sql.SQL(
            "select migration_id, operation from {}._yoyo_log order by created_at_utc, id"
        ).format(sql.Identifier(SCHEMA))
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def schema_dump(
    pg_dump: Path,
    dsn: str,
    exclude_schemas: Iterable[str] = (),
    include_schemas: Iterable[str] = (),
) -> str:
    """`pg_dump --schema-only` of `dsn`, without PostgreSQL 18's random `\\restrict` keys.

    Everything the catalog holds is in it: columns, constraints, indexes, function bodies and
    settings, triggers, policies, views, grants and default privileges.
    """
    cmd = [str(pg_dump), "--schema-only", f"--dbname={dsn}"]
    cmd += [f"--exclude-schema={name}" for name in exclude_schemas]
    cmd += [f"--schema={name}" for name in include_schemas]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return "\n".join(ln for ln in lines if not ln.startswith(("\\restrict", "\\unrestrict")))


# --- usage (tests/test_usage_*.py) -------------------------------------------------------------

MESSAGE_DEFAULTS: dict[str, object] = {
    "role": "user", "content": "hello", "model": None, "input_tokens": 0, "output_tokens": 0,
    "total_tokens": 0, "elapsed_time": 0, "message_timestamp": "2025-03-01T12:00:00Z",
    "error_message": None, "user_message_id": None,
}
_MESSAGE_COLUMNS = ("id", "session_id", *MESSAGE_DEFAULTS)
_ON_CONFLICT = {
    "": "",
    "nothing": " ON CONFLICT (id) DO NOTHING",
    "update": " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _MESSAGE_COLUMNS[2:]),
}


def write_messages(
    conn: psycopg.Connection, rows: Iterable[dict[str, object]], on_conflict: str = ""
) -> None:
    """ONE multi-row `INSERT INTO chat_messages` of `rows` (dicts with at least id and
    session_id; MESSAGE_DEFAULTS fill the rest); `on_conflict`: "" (plain insert), "nothing"
    or "update" (an upsert of every column). Does not commit."""
    from datetime import datetime

    from psycopg.types.json import Jsonb

    full = [{k: v.isoformat() if isinstance(v, datetime) else v
             for k, v in {**MESSAGE_DEFAULTS, **r}.items()} for r in rows]
    query = (
        "INSERT INTO public.chat_messages (" + ", ".join(_MESSAGE_COLUMNS) + ") SELECT "
        + ", ".join(f"r.{c}" for c in _MESSAGE_COLUMNS)
        + " FROM jsonb_to_recordset(%s) AS r(id text, session_id text, role text, content text,"
        " model text, input_tokens int, output_tokens int, total_tokens int, elapsed_time int,"
        " message_timestamp timestamptz, error_message text, user_message_id text)"
        + _ON_CONFLICT[on_conflict]
    )
    conn.execute(query, (Jsonb(full),))


def usage_days(conn: psycopg.Connection, user_id: uuid.UUID) -> dict[object, dict[str, object]]:
    """user_usage_daily of one user: {usage_date: {counter: value}} (no ids, no timestamps)."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT usage_date, messages_sent, messages_received, input_tokens, output_tokens,"
            " total_tokens, models_used, sessions_created, active_seconds, active_minutes"
            " FROM public.user_usage_daily WHERE user_id = %s ORDER BY usage_date",
            (user_id,),
        ).fetchall()
    return {r.pop("usage_date"): r for r in rows}


def usage_stats(conn: psycopg.Connection, user_id: uuid.UUID) -> dict[str, int]:
    """profiles.usage_stats of one user."""
    row = conn.execute(
        "SELECT usage_stats FROM public.profiles WHERE id = %s", (user_id,)
    ).fetchone()
    assert row is not None, f"no profile {user_id}"
    return dict(row[0])


def usage_drift(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    """Every counter that disagrees with the ledger (should be none)."""
    return conn.execute("SELECT * FROM pgchat.usage_drift()").fetchall()


def session_drift(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    """Every session statistic that disagrees with a recomputation (should be none)."""
    return conn.execute("SELECT * FROM pgchat.session_stats_drift()").fetchall()


# --- chat payloads and row snapshots (tests of sync / exchange / security) --------------------


def message(message_id: str, role: str = "user", **fields: object) -> dict[str, object]:
    """A ChatMessage as the frontend sends it: valid, with a fixed UTC timestamp by default."""
    return {"id": message_id, "role": role, "content": f"{role} says {message_id}",
            "timestamp": "2025-07-21T10:00:00Z"} | fields


def row_versions(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[str, str]]:
    """(xmin, ctid) of every chat_sessions and chat_messages row: any UPDATE changes the ctid
    (even inside one transaction), and a committed one changes the xmin."""
    rows = conn.execute(
        "select 'chat_sessions', id, xmin::text, ctid::text from public.chat_sessions"
        " union all select 'chat_messages', id, xmin::text, ctid::text from public.chat_messages"
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def usage_state(conn: psycopg.Connection, user_id: uuid.UUID) -> tuple[object, ...]:
    """Everything usage says about a user: the daily rows (with their xmin), the profile totals
    and what was counted (ledger and stored events). Equal before and after means no counter
    moved."""
    daily = conn.execute(
        "select xmin::text, usage_date, messages_sent, messages_received, input_tokens,"
        " output_tokens, total_tokens, models_used, sessions_created, active_seconds"
        " from public.user_usage_daily where user_id = %s order by usage_date", (user_id,)
    ).fetchall()
    profile = conn.execute(
        "select usage_stats from public.profiles where id = %s", (user_id,)).fetchone()
    ledger = conn.execute(
        "select kind, event_key from pgchat.counted_events where user_id = %s order by 1, 2",
        (user_id,)).fetchall()
    return (daily, profile, ledger)
