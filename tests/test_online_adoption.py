"""Adoption online: the migration steps one at a time, with the app writing between them and
during them, counts every message exactly once.

The steps (README, "Adopting a live database"): 0002a builds the index CONCURRENTLY, 0002b
adds active_seconds, 0003 switches the triggers, 0003a recomputes session statistics after the
switch, in batches. The legacy rows are their own record of having been counted: from the switch
on, the old frontend re-uploading a legacy row must not count it again; a failed legacy message
that succeeds on retry counts once.
Interleavings are deterministic: migrate(to=...) step by step, and held locks observed in
pg_locks (no sleeps deciding an outcome).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from pgchat import migrate, usage
from pgchat.errors import MigrationError
from tests.helpers import migration_ids, session_drift, usage_drift
from tests.legacy_data import LegacyData

SWITCH = "0003_usage_ledger"
BACKFILL = "0003a_adopt_existing_rows"


def counted(conn: psycopg.Connection) -> tuple[int, int]:
    """(messages in user_usage_daily, total_messages of the profiles): what the counters say."""
    row = conn.execute(
        "SELECT (SELECT coalesce(sum(messages_sent + messages_received), 0)"
        "        FROM public.user_usage_daily),"
        "       (SELECT coalesce(sum((usage_stats ->> 'total_messages')::bigint), 0)"
        "        FROM public.profiles)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def sources(conn: psycopg.Connection, ids: list[str]) -> dict[str, list[str]]:
    """Each message id's counted events' sources (exactly-once: one each)."""
    rows = conn.execute("SELECT event_key, source FROM pgchat.counted_events"
                        " WHERE kind = 'message' AND event_key = ANY (%s)", (ids,)).fetchall()
    found: dict[str, list[str]] = {i: [] for i in ids}
    for key, source in rows:
        found[key].append(source)
    return found


class App:
    """The legacy app's writes, each its own transaction on an autocommit connection."""

    def __init__(self, conn: psycopg.Connection, legacy: LegacyData) -> None:
        self.conn = conn
        self.session = legacy.conversations[0].id
        self.n = 0
        # Legacy rows to write again: the fixture's, and as many more (written before pgchat).
        rows = conn.execute(
            "INSERT INTO public.chat_messages (id, session_id, role, content, output_tokens,"
            " total_tokens, model, error_message, message_timestamp)"
            " SELECT 'online-legacy-' || n, %s, 'assistant', 'hi', 5, 5, 'm/x',"
            "        CASE WHEN n %% 2 = 0 THEN 'timeout' END, now() - interval '1 day'"
            " FROM generate_series(1, 20) n RETURNING id, error_message IS NOT NULL",
            (self.session,)).fetchall()
        self.ok = [m.id for m in legacy.messages if not m.failed and m.role == "user"]
        self.ok += [r[0] for r in rows if not r[1]]
        self.failed = [m.id for m in legacy.failed_messages if m.role in ("user", "assistant")]
        self.failed += [r[0] for r in rows if r[1]]

    def new_message(self) -> str:
        self.n += 1
        mid = f"online-new-{self.n}"
        self.conn.execute(
            "INSERT INTO public.chat_messages (id, session_id, role, content, input_tokens,"
            " total_tokens, message_timestamp) VALUES (%s, %s, 'user', 'hello', 7, 7, now())",
            (mid, self.session))
        return mid

    def reupload(self) -> str:
        """The old frontend writing a legacy message again (its content re-rendered)."""
        mid = self.ok.pop()
        self.conn.execute("UPDATE public.chat_messages SET content = content || ' ' WHERE id = %s",
                          (mid,))
        return mid

    def retry(self) -> str:
        """A failed legacy message that succeeds on retry."""
        mid = self.failed.pop()
        self.conn.execute("UPDATE public.chat_messages SET error_message = NULL WHERE id = %s",
                          (mid,))
        return mid


def steps_through(dsn: str) -> Iterator[str]:
    """Apply the migrations one at a time, yielding after each."""
    for mid in migration_ids():
        if mid in [s.id for s in migrate.status(dsn) if s.applied]:
            continue
        assert migrate.migrate(dsn, to=mid) == [mid]
        yield mid


def test_every_write_during_the_adoption_counts_once(
    legacy_dsn: str, legacy: LegacyData, autocommit_conn: Callable[[str], psycopg.Connection]
) -> None:
    conn = autocommit_conn(legacy_dsn)
    app = App(conn, legacy)
    assert len(app.failed) >= len(migration_ids()) <= len(app.ok)
    written: dict[str, list[str]] = {"new": [], "reupload": [], "retry": []}
    legacy_era: set[str] = set()  # written while the legacy triggers still ran
    switched = False
    for mid in steps_through(legacy_dsn):
        switched = switched or mid == SWITCH
        before = counted(conn) if switched else None
        new, again, retried = app.new_message(), app.reupload(), app.retry()
        written["new"].append(new)
        written["reupload"].append(again)
        written["retry"].append(retried)
        if before is not None:
            # pgchat's triggers: the new message and the retried one count, the re-upload not.
            assert counted(conn) == (before[0] + 2, before[1] + 2), mid
        else:
            legacy_era.update((new, again, retried))
        if not switched:
            continue
        # Written during the gap (after the switch, before or after the backfill): once each.
        found = sources(conn, [new, again, retried])
        assert found == {new: ["stored"], again: ["stored"], retried: ["stored"]}, mid
    assert conn.execute("SELECT count(*) FROM pgchat.usage_ledger").fetchone() == (0,)

    # Every successful message is counted exactly once, by its stored row (legacy-era writes
    # too: the legacy code counted them), so the rebuild's counters are the truth.
    rows = conn.execute(
        "SELECT m.id, count(l.event_key), min(l.source) FROM public.chat_messages m"
        " LEFT JOIN pgchat.counted_events l ON l.kind = 'message' AND l.event_key = m.id"
        " WHERE coalesce(m.error_message, '') = '' AND m.role IN ('user', 'assistant')"
        " GROUP BY m.id").fetchall()
    assert {r[1] for r in rows} == {1}
    assert all(r[2] == "stored" for r in rows if r[0] in legacy_era)
    assert session_drift(conn) == []
    usage.rebuild(conn)
    assert usage_drift(conn) == []
    truth = conn.execute(
        "SELECT count(*) FROM public.chat_messages"
        " WHERE coalesce(error_message, '') = '' AND role IN ('user', 'assistant')").fetchone()
    assert truth is not None and counted(conn) == (truth[0], truth[0])


@contextmanager
def running(work: Callable[[], object]) -> Iterator[list[BaseException]]:
    """`work()` in a thread for the duration of the block; its errors in the yielded list."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        yield errors
    finally:
        thread.join(timeout=120)
        assert not thread.is_alive()


def wait_until_blocked(conn: psycopg.Connection, pid_filter: str) -> None:
    """Until a backend whose query matches `pid_filter` waits for a lock (bounded poll)."""
    for _ in range(600):
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query ILIKE %s", (pid_filter,)).fetchone()
        if row and row[0]:
            return
        conn.execute("SELECT pg_sleep(0.05)")
    pytest.fail(f"no backend running {pid_filter!r} ever waited for a lock")


def test_a_reupload_in_flight_when_the_backfill_reaches_it_counts_once(
    legacy_dsn: str, legacy: LegacyData, autocommit_conn: Callable[[str], psycopg.Connection]
) -> None:
    conn = autocommit_conn(legacy_dsn)
    writer = autocommit_conn(legacy_dsn)
    app = App(writer, legacy)  # its legacy rows are written before pgchat
    migrate.migrate(legacy_dsn, to=SWITCH)
    before = counted(conn)
    writer.execute("BEGIN")
    again, retried = app.reupload(), app.retry()  # booked, not committed: the keys are held
    with running(lambda: migrate.migrate(legacy_dsn, to=BACKFILL)) as errors:
        wait_until_blocked(conn, "%c_stats_batch%")  # 0003a waits for the writer
        writer.execute("COMMIT")
    assert errors == []
    assert sources(conn, [again, retried]) == {again: ["stored"], retried: ["stored"]}
    assert counted(conn) == (before[0] + 1, before[1] + 1)
    assert session_drift(conn) == []


def test_the_backfill_recomputes_statistics_around_a_writer_in_flight(
    legacy_dsn: str, legacy: LegacyData, autocommit_conn: Callable[[str], psycopg.Connection]
) -> None:
    conn = autocommit_conn(legacy_dsn)
    writer = autocommit_conn(legacy_dsn)
    app = App(writer, legacy)  # its legacy rows are written before pgchat
    migrate.migrate(legacy_dsn, to=SWITCH)
    writer.execute("BEGIN")
    new = app.new_message()  # holds its session (and profile) until it commits
    with running(lambda: migrate.migrate(legacy_dsn, to=BACKFILL)) as errors:
        wait_until_blocked(conn, "%c_stats_batch%")
        writer.execute("COMMIT")
    assert errors == []
    assert sources(conn, [new]) == {new: ["stored"]}
    assert session_drift(conn) == []


def test_an_interrupted_index_build_is_detected_and_rebuilt(
    legacy_dsn: str, autocommit_conn: Callable[[str], psycopg.Connection]
) -> None:
    migrate.migrate(legacy_dsn, to="0002_baseline")
    conn = autocommit_conn(legacy_dsn)
    # What a killed CREATE INDEX CONCURRENTLY leaves behind: an INVALID index of that name
    # (here a unique build that fails on duplicate session ids).
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_chat_messages_session_latest"
                     " ON public.chat_messages (session_id)")
    valid = "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index" \
            " WHERE indexrelid = to_regclass('public.idx_chat_messages_session_latest')"
    assert conn.execute(valid).fetchone()[0] is False  # type: ignore[index]
    assert migrate.migrate(legacy_dsn, to="0002a_session_latest_index") == [
        "0002a_session_latest_index"]
    is_valid, definition = conn.execute(valid).fetchone()  # type: ignore[misc]
    assert is_valid is True
    assert "(session_id, message_timestamp DESC)" in definition
    assert "UNIQUE" not in definition
    assert conn.execute("SELECT to_regclass('public.idx_chat_messages_session_latest_invalid')"
                        ).fetchone() == (None,)


def test_a_prepared_select_star_survives_every_step_after_0002b(
    legacy_dsn: str, autocommit_conn: Callable[[str], psycopg.Connection]
) -> None:
    """Only 0002b changes the shape of an app table the readers poll (README)."""
    migrate.migrate(legacy_dsn, to="0002b_usage_active_seconds")
    reader = autocommit_conn(legacy_dsn)
    reader.execute("PREPARE poll AS SELECT * FROM public.user_usage_daily ORDER BY id")
    before = len(reader.execute("EXECUTE poll").fetchall())
    migrate.migrate(legacy_dsn)
    assert len(reader.execute("EXECUTE poll").fetchall()) == before


def test_rebuild_holds_one_batch_of_users_at_a_time(
    db_dsn: str, autocommit_conn: Callable[[str], psycopg.Connection],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A booking waits at most behind its own user's batch; nobody else's waits at all."""
    from tests.helpers import as_pgchat, make_user

    setup = autocommit_conn(db_dsn)
    first, second = sorted(make_user(setup) for _ in range(2))
    as_pgchat(setup, local=False)  # damage on purpose, past the guards
    for user in (first, second):  # drift for both: something to rebuild
        setup.execute("UPDATE public.user_usage_daily SET messages_sent = 0 WHERE user_id = %s",
                      (user,))
        setup.execute("UPDATE public.profiles SET usage_stats = usage_stats"
                      " || '{\"total_messages\": 99}' WHERE id = %s", (user,))
    monkeypatch.setattr(usage, "REBUILD_BATCH", 1)
    holder = autocommit_conn(db_dsn)
    holder.execute("BEGIN")
    holder.execute("SELECT 1 FROM public.profiles WHERE id = %s FOR NO KEY UPDATE", (second,))
    other = autocommit_conn(db_dsn)
    rebuilding = autocommit_conn(db_dsn)
    with running(lambda: usage.rebuild(rebuilding)) as errors:
        wait_until_blocked(other, "%lock_users_for_rebuild%")
        # The rebuild holds the second user's batch (waiting); the first user's is committed.
        other.execute("SET lock_timeout = '200ms'")
        # What a booking of the first user takes: its profile, then its counters.
        other.execute("SELECT 1 FROM public.profiles WHERE id = %s FOR NO KEY UPDATE", (first,))
        other.execute("UPDATE public.user_usage_daily SET updated_at = now() WHERE user_id = %s",
                      (first,))
        holder.execute("COMMIT")
    assert errors == []
    assert usage_drift(setup) == []


def test_an_interrupted_backfill_is_run_again_and_books_nothing_twice(
    legacy_dsn: str, legacy: LegacyData, autocommit_conn: Callable[[str], psycopg.Connection]
) -> None:
    conn = autocommit_conn(legacy_dsn)
    writer = autocommit_conn(legacy_dsn)
    app = App(writer, legacy)
    migrate.migrate(legacy_dsn, to=SWITCH)
    writer.execute("BEGIN")
    again = app.reupload()
    with running(lambda: migrate.migrate(legacy_dsn, to=BACKFILL)) as errors:
        wait_until_blocked(conn, "%c_stats_batch%")
        conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND query LIKE %s", ("%c_stats_batch%",))
    assert len(errors) == 1 and isinstance(errors[0], MigrationError)
    assert BACKFILL not in [s.id for s in migrate.status(legacy_dsn) if s.applied]
    writer.execute("COMMIT")
    assert migrate.migrate(legacy_dsn, to=BACKFILL) == [BACKFILL]
    rows = conn.execute(
        "SELECT count(*), count(DISTINCT (user_id, kind, event_key)) FROM pgchat.counted_events"
    ).fetchone()
    assert rows is not None and rows[0] == rows[1]
    assert sources(conn, [again]) == {again: ["stored"]}
    missing = conn.execute(
        "SELECT count(*) FROM public.chat_messages m WHERE coalesce(m.error_message, '') = ''"
        " AND m.role IN ('user', 'assistant') AND NOT EXISTS (SELECT FROM pgchat.counted_events l"
        " WHERE l.kind = 'message' AND l.event_key = m.id)").fetchone()
    assert missing == (0,)
    assert session_drift(conn) == []
