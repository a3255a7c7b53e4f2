"""The errors a backend can act on (docs/errors.md): the right class, the field named, the
database's own words kept (sqlstate, constraint, detail, message) and chained; no raw psycopg
error out of a pgchat call; the CLI's `--json` errors; who holds the migration lock."""

from __future__ import annotations

import json
import time
from datetime import date
from uuid import uuid4

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import pq

import pgchat
from pgchat import Client
from pgchat.cli import main
from pgchat.errors import ConnectionFailed, DatabaseError, NotMigrated, ValidationError
from pgchat.migrate import _LOCK_KEY
from tests.helpers import make_user, message

DAY = date(2026, 11, 30)
IDLE = pq.TransactionStatus.IDLE


def test_an_int_past_integer_is_a_validation_error_naming_the_field(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    with pytest.raises(ValidationError, match=r"input_tokens must be at most 10000000") as caught:
        Client(db).track_usage(user, "evt-big", DAY, input_tokens=2_147_483_648)
    assert not isinstance(caught.value, NotMigrated)
    assert db.info.transaction_status == IDLE  # refused before anything was sent
    with pytest.raises(ValidationError, match=r"messages_sent must be at most 2147483647"):
        Client(db).track_usage(user, "evt-big", DAY, messages_sent=2**31)
    with pytest.raises(ValidationError, match=r"active_seconds must be an integer"):
        Client(db).track_usage(user, "evt-big", DAY, active_seconds=1.5)  # type: ignore[arg-type]
    assert Client(db).track_usage(user, "evt-big", DAY, input_tokens=10_000_000) is True


def test_an_unknown_user_of_an_exchange_is_named(db: psycopg.Connection) -> None:
    stranger = uuid4()
    with pytest.raises(ValidationError, match=f"unknown user {stranger}") as caught:
        Client(db).write_chat_exchange(stranger, "s1", message("u1"))
    err = caught.value
    assert err.sqlstate == "23503"  # raised by write_chat_exchange itself, before any insert
    assert err.db_message is not None and str(stranger) in err.db_message
    assert isinstance(err.__cause__, psycopg.errors.ForeignKeyViolation)
    assert not err.__suppress_context__ or err.__cause__ is not None


@pytest.mark.parametrize(("where", "expected"), [
    ("user", r"user_message \(message 'u1'\)\.content contains a NUL character"),
    ("assistant", r"assistant_message \(message 'a1'\)\.model contains a NUL character"),
])
def test_a_nul_in_an_exchange_names_the_message_and_the_field(
        db: psycopg.Connection, where: str, expected: str) -> None:
    user = make_user(db)
    user_msg = message("u1", content="hello\x00world") if where == "user" else message("u1")
    reply = message("a1", "assistant", model="gpt\x00") if where == "assistant" else None
    with pytest.raises(ValidationError, match=expected):
        Client(db).write_chat_exchange(user, "s1", user_msg, reply)
    assert db.info.transaction_status == IDLE
    with pytest.raises(ValidationError, match=r"session_title contains a NUL character"):
        Client(db).write_chat_exchange(user, "s1", message("u1"), session_title="a\x00b")


def test_a_database_error_keeps_what_the_database_said(db: psycopg.Connection) -> None:
    user = make_user(db)
    with pytest.raises(ValidationError) as caught:
        Client(db).write_chat_exchange(user, "s1", message("u1", input_tokens=10_000_001))
    err = caught.value
    assert err.sqlstate is not None and err.db_message is not None
    assert isinstance(err.__cause__, psycopg.Error)
    assert err.__cause__.sqlstate == err.sqlstate
    assert err.as_dict()["code"] == "ValidationError"


def test_a_missing_function_is_not_migrated_with_its_sqlstate(empty_db: psycopg.Connection,
                                                              empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn, \
            pytest.raises(NotMigrated, match="run `pgchat migrate` first") as caught:
        Client(conn).track_usage(uuid4(), "e", DAY, messages_sent=1)
    assert caught.value.sqlstate == "42883"
    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedFunction)


def test_an_unmapped_database_error_is_a_pgchat_database_error(db: psycopg.Connection,
                                                               db_dsn: str) -> None:
    user = make_user(db)
    with psycopg.connect(db_dsn) as holder, psycopg.connect(db_dsn) as conn:
        holder.execute("SELECT FROM public.profiles WHERE id = %s FOR UPDATE", (user,))
        conn.execute("SET lock_timeout = '100ms'")
        with pytest.raises(DatabaseError) as caught:
            Client(conn).track_usage(user, "evt-locked", DAY, messages_sent=1)
        assert caught.value.sqlstate == "55P03"  # lock_not_available
        assert isinstance(caught.value.__cause__, psycopg.errors.LockNotAvailable)
        holder.rollback()


def test_a_closed_connection_is_connection_failed(db_dsn: str) -> None:
    conn = psycopg.connect(db_dsn)
    conn.close()
    with pytest.raises(ConnectionFailed) as caught:
        Client(conn).verify_usage()
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert isinstance(caught.value, pgchat.PgchatError)


# --- the CLI ---------------------------------------------------------------------------------


def test_json_errors_are_one_object_on_stdout() -> None:
    result = CliRunner().invoke(main, ["status", "--dsn", "host=/nonexistent dbname=x", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["code"] == "ConnectionFailed" and error["exit"] == 2
    assert "cannot connect" in error["error"]
    assert result.stderr == ""


def test_json_error_of_a_database_refusal_carries_sqlstate(db: psycopg.Connection,
                                                           db_dsn: str) -> None:
    stranger = uuid4()
    result = CliRunner().invoke(main, ["usage", "show", str(stranger), "--dsn", db_dsn, "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["code"] == "ValidationError" and f"unknown user {stranger}" in error["error"]
    plain = CliRunner().invoke(main, ["usage", "show", str(stranger), "--dsn", db_dsn])
    assert plain.stderr.strip().splitlines()[-1] == f"pgchat: error: unknown user {stranger}"


def test_a_waiting_migrate_says_who_holds_the_lock_and_gives_up(db: psycopg.Connection,
                                                                db_dsn: str) -> None:
    db.commit()
    with psycopg.connect(db_dsn, autocommit=True, application_name="someone-else") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        started = time.monotonic()
        result = CliRunner().invoke(main, ["migrate", "--dsn", db_dsn, "--lock-timeout", "1s"])
        took = time.monotonic() - started
        assert result.exit_code == 1, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert f"held by pid {holder.info.backend_pid}" in line, line
        assert "'someone-else'" in line and "connected since" in line and "gave up" in line
        assert took < 10
        result = CliRunner().invoke(main, ["migrate", "--dsn", db_dsn, "--lock-timeout", "1s",
                                           "--json"])
        assert json.loads(result.stdout)["code"] == "LockTimeout"
    result = CliRunner().invoke(main, ["migrate", "--dsn", db_dsn])
    assert result.exit_code == 0, result.output


# --- progress: on stderr when it is a terminal, nothing otherwise ---------------------------


def _rebuild_output(dsn: str, tty: bool) -> str:
    import os
    import pty
    import subprocess
    import sys

    args = [sys.executable, "-m", "pgchat", "usage", "rebuild", "--yes", "--dsn", dsn]
    if not tty:
        return subprocess.run(args, capture_output=True, text=True, timeout=120,
                              check=True).stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=slave, timeout=120,
                              check=True)
        assert proc.returncode == 0
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed and everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def test_rebuild_shows_progress_only_on_a_terminal(db: psycopg.Connection, db_dsn: str) -> None:
    user = make_user(db)
    Client(db).track_usage(user, "p1", DAY, messages_sent=1)
    db.execute("UPDATE public.user_usage_daily SET messages_sent = 9")
    db.commit()
    assert "rebuilding" in _rebuild_output(db_dsn, tty=True)
    db.execute("UPDATE public.user_usage_daily SET messages_sent = 9")
    db.commit()
    quiet = _rebuild_output(db_dsn, tty=False)
    assert "rebuilding" not in quiet and "comparing" not in quiet
