"""`pgchat bench --adoption`: adopt a production-size legacy database while the app writes.

Builds the legacy fixture (sql/legacy/schema.sql) filled with generate_series: N messages in
N/50 sessions of N/500 users, counters inflated x3 (what years of re-uploads did). Then runs
`pgchat migrate` and `pgchat usage rebuild --yes` (preview, then the rebuild) with one writer
inserting a message every 50 ms the legacy way (a plain INSERT into chat_messages; every
fifth write re-uploads an old row instead) and one reader polling user_usage_daily with
prepared statements, and prints: the longest single write wait per phase, the total times,
errors (deadlocks, reader errors), the size growth (database, ledger, new index), the rows
kept, and what `usage verify` says afterwards. A development tool: not in the wheel.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgchat import migrate, usage
from pgchat.connect import connect
from pgchat.paths import migrations_dir, sql_dir
from pgchat_dev import servers

DEFAULT_MESSAGES = 1_000_000
DATABASE = "bench_adoption"
WRITE_EVERY = 0.05  # seconds between two writes of the writer
POLL_EVERY = 0.05

Progress = Callable[[str], None]

_FILL = """
SET session_replication_role = replica;  -- no legacy trigger while filling (superuser)
INSERT INTO auth.users (id, email)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid, 'u' || u || '@bench.test'
FROM generate_series(0, %(users)s - 1) u;
INSERT INTO public.profiles (id, email)
SELECT id, email FROM auth.users WHERE email LIKE '%%@bench.test';
INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at, last_activity)
SELECT 's' || lpad(j::text, 7, '0'),
       ('00000000-0000-4000-8000-' || lpad(to_hex(j %% %(users)s), 12, '0'))::uuid,
       'Chat ' || j, d, d, d
FROM generate_series(0, %(sessions)s - 1) j,
     LATERAL (SELECT timestamptz '2025-01-01 08:00+00' + (j %% 30) * interval '1 day' AS d) t;
INSERT INTO public.chat_messages (id, session_id, role, content, model, total_tokens,
    input_tokens, output_tokens, elapsed_time, message_timestamp, error_message)
SELECT 'm' || lpad(k::text, 8, '0'), 's' || lpad((k / 50)::text, 7, '0'),
       CASE WHEN k %% 2 = 0 THEN 'user' ELSE 'assistant' END,
       'message ' || k || ': ' || repeat('lorem ipsum dolor sit amet ', 4),
       CASE WHEN k %% 2 = 1 THEN 'model/' || (k %% 3) END,
       20 + k %% 80, CASE WHEN k %% 2 = 0 THEN 20 + k %% 80 ELSE 0 END,
       CASE WHEN k %% 2 = 1 THEN 20 + k %% 80 ELSE 0 END,
       CASE WHEN k %% 2 = 1 THEN 1 + k %% 9 ELSE 0 END,
       timestamptz '2025-01-01 08:00+00' + ((k / 50) %% 30) * interval '1 day'
           + (k %% 50) * interval '1 minute',
       CASE WHEN k %% 50 = 49 THEN 'upstream provider timeout' END
FROM generate_series(0, %(messages)s - 1) k;
-- What the legacy triggers left: statistics counting every message, counters x3.
UPDATE public.chat_sessions s SET message_count = a.n, total_tokens = a.tokens,
    last_message_timestamp = a.last, last_message_preview = 'message'
FROM (SELECT session_id, count(*) AS n, sum(total_tokens) AS tokens, max(message_timestamp) AS last
      FROM public.chat_messages GROUP BY session_id) a
WHERE s.id = a.session_id;
INSERT INTO public.user_usage_daily (user_id, usage_date, messages_sent, messages_received,
    input_tokens, output_tokens, total_tokens, sessions_created, active_minutes)
SELECT s.user_id, (m.message_timestamp AT TIME ZONE 'UTC')::date,
       3 * count(*) FILTER (WHERE m.role = 'user'),
       3 * count(*) FILTER (WHERE m.role = 'assistant'),
       3 * sum(m.input_tokens), 3 * sum(m.output_tokens),
       3 * sum(m.input_tokens + m.output_tokens),
       3 * count(DISTINCT s.id), 3 * sum(m.elapsed_time)
FROM public.chat_messages m JOIN public.chat_sessions s ON s.id = m.session_id
GROUP BY 1, 2;
UPDATE public.profiles p SET usage_stats = jsonb_build_object(
    'total_messages', d.messages, 'total_tokens', d.tokens, 'sessions_created', d.sessions)
FROM (SELECT user_id, sum(messages_sent + messages_received) AS messages,
             sum(total_tokens) AS tokens, sum(sessions_created) AS sessions
      FROM public.user_usage_daily GROUP BY user_id) d
WHERE p.id = d.user_id;
SET session_replication_role = origin;
"""


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    writes: int = 0
    longest_write_ms: float = 0.0
    write_errors: list[str] = field(default_factory=list)


@dataclass
class AdoptionReport:
    messages: int
    sessions: int
    users: int
    server: str
    build_seconds: float
    phases: list[Phase]
    deadlocks: int
    reader_polls: int
    reader_errors: list[str]
    star_reader_errors: list[str]
    size_before: int
    size_after: int
    ledger_bytes: int
    index_bytes: int
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    written: int
    drift_after: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Writer(threading.Thread):
    """The legacy app: a plain INSERT every 50 ms, every fifth write a re-upload of an old row."""

    def __init__(self, dsn: str, sessions: int, messages: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.sessions, self.messages = dsn, sessions, messages
        self.phase: Phase | None = None
        self.stop = threading.Event()
        self.inserted = 0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            k = 0
            while not self.stop.is_set():
                k += 1
                started = time.perf_counter()
                try:
                    if k % 5 == 0:
                        conn.execute("UPDATE public.chat_messages SET content = content || ' '"
                                     " WHERE id = %s", (f"m{(k * 7919) % self.messages:08d}",))
                    else:
                        conn.execute(
                            "INSERT INTO public.chat_messages (id, session_id, role, content,"
                            " input_tokens, total_tokens, message_timestamp)"
                            " VALUES (%s, %s, 'user', 'written during the adoption', 12, 12,"
                            " now())",
                            (f"w{k:08d}", f"s{(k * 104729) % self.sessions:07d}"))
                        self.inserted += 1
                    error = None
                except psycopg.Error as exc:
                    error = f"{exc.sqlstate}: {exc.diag.message_primary}"
                took = (time.perf_counter() - started) * 1000
                phase = self.phase
                if phase is not None:
                    phase.writes += 1
                    phase.longest_write_ms = max(phase.longest_write_ms, took)
                    if error:
                        phase.write_errors.append(error)
                self.stop.wait(max(0.0, WRITE_EVERY - took / 1000))


class _Reader(threading.Thread):
    """A dashboard: user_usage_daily through prepared statements, explicit columns and `*`."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.polls = 0
        self.errors: list[str] = []
        self.star_errors: list[str] = []

    def run(self) -> None:
        columns = "SELECT user_id, usage_date, messages_sent, messages_received, total_tokens"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"PREPARE poll AS {columns} FROM public.user_usage_daily"
                         " WHERE usage_date = '2025-01-05' ORDER BY user_id LIMIT 50")
            conn.execute("PREPARE poll_star AS SELECT * FROM public.user_usage_daily"
                         " WHERE usage_date = '2025-01-05' ORDER BY user_id LIMIT 50")
            while not self.stop.is_set():
                for name, errors in (("poll", self.errors), ("poll_star", self.star_errors)):
                    try:
                        conn.execute(f"EXECUTE {name}").fetchall()
                    except psycopg.Error as exc:
                        errors.append(f"{exc.sqlstate}: {exc.diag.message_primary}")
                        if name == "poll_star":  # what a reader must do: prepare it again
                            conn.execute("DEALLOCATE poll_star")
                            conn.execute("PREPARE poll_star AS SELECT * FROM"
                                         " public.user_usage_daily WHERE usage_date ="
                                         " '2025-01-05' ORDER BY user_id LIMIT 50")
                self.polls += 1
                self.stop.wait(POLL_EVERY)


def _rows(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute("SELECT (SELECT count(*) FROM public.chat_messages),"
                       " (SELECT count(*) FROM public.chat_sessions),"
                       " (SELECT count(*) FROM public.profiles)").fetchone()
    assert row is not None
    return {"chat_messages": row[0], "chat_sessions": row[1], "profiles": row[2]}


def _size(conn: psycopg.Connection, expression: str) -> int:
    row = conn.execute(f"SELECT coalesce({expression}, 0)").fetchone()
    return int(row[0]) if row else 0


def build(dsn: str, messages: int) -> None:
    """The legacy database, filled."""
    with connect(dsn) as conn:
        conn.execute((migrations_dir() / "0001_supabase_standin.sql").read_text())
        conn.execute((sql_dir() / "legacy" / "schema.sql").read_text())
        conn.execute(_FILL % {"messages": messages, "sessions": max(1, messages // 50),
                             "users": max(1, messages // 500)})
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def measure(dsn: str, messages: int, server_name: str, say: Progress) -> AdoptionReport:
    sessions, users = max(1, messages // 50), max(1, messages // 500)
    say(f"building the legacy database: {messages:,} messages, {sessions:,} sessions, "
        f"{users:,} users")
    started = time.perf_counter()
    build(dsn, messages)
    build_seconds = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        size_before = _size(conn, "pg_database_size(current_database())")
        rows_before = _rows(conn)
    writer, reader = _Writer(dsn, sessions, messages), _Reader(dsn)
    phases = [Phase("migrate"), Phase("usage rebuild --yes")]
    writer.start()
    reader.start()
    try:
        for phase, work in zip(phases, (_migrate, _rebuild), strict=True):
            say(f"{phase.name} ...")
            writer.phase = phase
            started = time.perf_counter()
            work(dsn, say)
            phase.seconds = time.perf_counter() - started
            writer.phase = None
    finally:
        writer.stop.set()
        reader.stop.set()
        writer.join()
        reader.join()
    with psycopg.connect(dsn, autocommit=True) as conn:
        drift = len(usage.verify(conn))
        conn.execute("CHECKPOINT")
        return AdoptionReport(
            messages, sessions, users, server_name, build_seconds, phases,
            sum(e.startswith("40P01") for p in phases for e in p.write_errors),
            reader.polls, reader.errors, reader.star_errors,
            size_before, _size(conn, "pg_database_size(current_database())"),
            _size(conn, "pg_total_relation_size(to_regclass('pgchat.usage_ledger'))"),
            _size(conn, "pg_relation_size(to_regclass('public.idx_chat_messages_session_latest'))"),
            rows_before, _rows(conn), writer.inserted, drift)


def _migrate(dsn: str, say: Progress) -> None:
    migrate.migrate(dsn, progress=lambda line: say(f"  {line}"))


def _rebuild(dsn: str, say: Progress) -> None:
    """What `pgchat usage rebuild --yes` does: the preview, then the rebuild."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        planned = usage.rebuild(conn, dry_run=True)
        say(f"  preview: {len(planned):,} counter(s) to rewrite")
        done = usage.rebuild(conn)
        say(f"  rewrote {len(done):,} counter(s)")


@contextlib.contextmanager
def _database(dsn: str | None, bin_dir: Path | None) -> Iterator[tuple[str, str]]:
    """A fresh database: on a throwaway server, or created (and dropped) on `dsn`'s server."""
    with contextlib.ExitStack() as stack:
        if dsn is None:
            srv = stack.enter_context(servers.throwaway(bin_dir))
            server_dsn = srv.url("postgres")
        else:
            server_dsn = dsn
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        try:
            yield make_conninfo(server_dsn, dbname=DATABASE), f"PostgreSQL {version}"
        finally:
            if dsn is not None:
                with psycopg.connect(server_dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(DATABASE)))


def run(messages: int = DEFAULT_MESSAGES, *, dsn: str | None = None,
        bin_dir: Path | None = None, progress: Progress | None = None) -> AdoptionReport:
    say: Progress = progress or (lambda _line: None)
    with _database(dsn, bin_dir) as (db, name):
        return measure(db, messages, name, say)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


def render(r: AdoptionReport) -> str:
    lines = [f"adoption of a legacy database: {r.messages:,} messages, {r.sessions:,} sessions, "
             f"{r.users:,} users ({r.server}; built in {r.build_seconds:.0f} s)", ""]
    for p in r.phases:
        lines.append(f"{p.name:<22} {p.seconds:7.1f} s   writes {p.writes:5}   longest write "
                     f"{p.longest_write_ms:8.1f} ms   write errors {len(p.write_errors)}")
        lines += [f"    {e}" for e in sorted(set(p.write_errors))]
    growth = r.size_after - r.size_before
    lines += [
        f"deadlocks              {r.deadlocks}",
        f"reader (columns)       {r.reader_polls} polls, {len(r.reader_errors)} error(s)",
        f"reader (select *)      {len(r.star_reader_errors)} error(s)"
        + (f": {r.star_reader_errors[0]} (0002b adds active_seconds; prepared again)"
           if r.star_reader_errors else ""),
        f"database size          {_mb(r.size_before)} -> {_mb(r.size_after)}"
        f" (+{_mb(growth)}, +{100 * growth / max(1, r.size_before):.0f} %)",
        f"  pgchat.usage_ledger  {_mb(r.ledger_bytes)}",
        f"  idx_chat_messages_session_latest {_mb(r.index_bytes)}",
        f"rows kept              messages {r.rows_before['chat_messages']:,} + {r.written:,} "
        f"written = {r.rows_after['chat_messages']:,}; sessions "
        f"{r.rows_before['chat_sessions']:,} -> {r.rows_after['chat_sessions']:,}",
        f"usage verify           {'clean' if r.drift_after == 0 else f'{r.drift_after} drift(s)'}",
    ]
    return "\n".join(lines) + "\n"
