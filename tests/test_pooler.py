"""pgchat through a transaction pooler (Debian's pgbouncer, `pool_mode = transaction`, a pool
smaller than the clients: tests/pooler.py), as a serverless backend reaches Supabase (port 6543).

The client works with psycopg's default connection settings (it never lets psycopg prepare);
`migrate` and `rollback` refuse at once, take no lock and leave nothing behind; a direct
`migrate` then finishes at once; `usage rebuild` works through it.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgchat import Client, migrate
from pgchat.cli import main
from pgchat.connect import transaction_pooler
from tests.helpers import make_user
from tests.pooler import Pooler

THREADS = 8
EXCHANGES = 40
DAY = date(2026, 11, 30)


def _dbname(conn: psycopg.Connection) -> str:
    return conn.info.dbname


def _message(mid: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"id": mid, "content": f"{role} says {mid}", "role": role,
            "timestamp": "2026-11-30T12:00:00Z", **extra}


def _advisory_locks(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT pid, classid, objid FROM pg_locks WHERE locktype = 'advisory'"
                        " AND database = (SELECT oid FROM pg_database"
                        "                 WHERE datname = current_database())").fetchall()


def test_the_fixture_is_a_transaction_pooler_that_breaks_psycopg_prepares(
        pooler: Pooler, db: psycopg.Connection) -> None:
    """The control: psycopg's own prepared statements fail through this pooler (so the test
    below can fail), because a transaction of another client takes the server connection."""
    url = pooler.url(_dbname(db))
    with psycopg.connect(url, autocommit=True) as a, psycopg.connect(url) as b:
        for _ in range(6):  # prepared on the server at the 5th/6th execution (prepare_threshold)
            a.execute("SELECT count(*) FROM public.profiles WHERE id <> %s", (uuid.uuid4(),))
        b.execute("SELECT 1")  # b's open transaction now holds a's last server connection
        with pytest.raises((psycopg.errors.InvalidSqlStatementName,
                            psycopg.errors.DuplicatePreparedStatement)):
            a.execute("SELECT count(*) FROM public.profiles WHERE id <> %s", (uuid.uuid4(),))
        b.rollback()


def test_8_threads_x_40_exchanges_with_default_settings_through_the_pooler(
        pooler: Pooler, db: psycopg.Connection) -> None:
    users = [make_user(db) for _ in range(THREADS)]
    url = pooler.url(_dbname(db))
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def writer(user: uuid.UUID) -> None:
        with psycopg.connect(url) as conn:  # psycopg's defaults: prepare_threshold=5
            client = Client(conn)
            start.wait()
            for n in range(EXCHANGES):
                session = f"s-{user.hex[:8]}-{n % 4}"
                try:
                    client.write_chat_exchange(
                        user, session, _message(f"u-{user.hex}-{n}", input_tokens=3),
                        _message(f"a-{user.hex}-{n}", "assistant", output_tokens=5,
                                 model="gpt-x"))
                    client.track_usage(user, f"extra-{n}", DAY, active_seconds=2)
                    client.show_usage(user, DAY, DAY)
                    conn.commit()
                except Exception as exc:  # every failure is counted, pgchat's or not
                    errors.append(exc)
                    conn.rollback()

    threads = [threading.Thread(target=writer, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], f"{len(errors)} errors, first: {errors[0]!r}"
    with psycopg.connect(url) as conn:
        assert Client(conn).verify_usage() == []
    db.rollback()
    row = db.execute("SELECT count(*) FROM public.chat_messages").fetchone()
    assert row == (THREADS * EXCHANGES * 2,)
    result = CliRunner().invoke(main, ["usage", "verify", "--dsn", url])
    assert result.exit_code == 0, result.output


def test_the_pooler_is_detected_and_a_direct_connection_is_not(
        pooler: Pooler, db: psycopg.Connection, db_dsn: str) -> None:
    assert transaction_pooler(db_dsn) is None
    found = transaction_pooler(pooler.url(_dbname(db)))
    assert found is not None and "transaction pooler" in found


def test_migrate_through_the_pooler_refuses_at_once_then_a_direct_migrate_finishes(
        pooler: Pooler, empty_db: psycopg.Connection, empty_dsn: str) -> None:
    empty_db.commit()
    started = time.monotonic()
    result = CliRunner().invoke(main, ["migrate", "--dsn", pooler.url(_dbname(empty_db))])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert "transaction pooler" in lines[-1] and "direct connection" in lines[-1], lines
    assert time.monotonic() - started < 10
    assert _advisory_locks(empty_db) == []
    assert not any(s.applied for s in migrate.status(empty_dsn))
    empty_db.rollback()
    row = empty_db.execute("SELECT to_regnamespace(%s) IS NULL", (migrate.SCHEMA,)).fetchone()
    assert row == (True,)  # not even the bookkeeping schema
    empty_db.rollback()

    started = time.monotonic()
    result = CliRunner().invoke(main, ["migrate", "--dsn", empty_dsn, "--lock-timeout", "2s"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60
    assert all(s.applied for s in migrate.status(empty_dsn))


def test_rollback_and_status_through_the_pooler(pooler: Pooler, db: psycopg.Connection,
                                                db_dsn: str) -> None:
    db.commit()
    url = pooler.url(_dbname(db))
    before = migrate.status(db_dsn)
    result = CliRunner().invoke(main, ["rollback", "--dsn", url])
    assert result.exit_code == 2, result.output
    assert "transaction pooler" in result.stderr
    assert migrate.status(db_dsn) == before
    # status only reads: it works through the pooler, and takes no lock there
    result = CliRunner().invoke(main, ["status", "--dsn", url])
    assert result.exit_code == 0, result.output
    assert _advisory_locks(db) == []


def test_usage_rebuild_through_the_pooler(pooler: Pooler, db: psycopg.Connection) -> None:
    users = [make_user(db) for _ in range(3)]
    for user in users:
        Client(db).track_usage(user, f"e-{user}", DAY, messages_sent=2, input_tokens=7)
    db.execute("UPDATE public.user_usage_daily SET messages_sent = messages_sent + 5")
    db.commit()
    url = pooler.url(_dbname(db))
    result = CliRunner().invoke(main, ["usage", "rebuild", "--yes", "--dsn", url])
    assert result.exit_code == 0, result.output
    assert "rewrote 3 counter(s)" in result.stdout
    result = CliRunner().invoke(main, ["usage", "verify", "--dsn", url])
    assert result.exit_code == 0, result.output
    assert _advisory_locks(db) == []
