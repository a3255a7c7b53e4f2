"""elapsed_time (seconds) or elapsed_ms (milliseconds): whichever the app's table has (issue 17).

The app's later releases renamed chat_messages.elapsed_time to elapsed_ms. 0004 creates the
sync and the exchange for elapsed_time, then again, at migration time, for the column the
table has (the DO block between `-- elapsed:begin` and `-- elapsed:end`). The payload keeps
elapsed_time in seconds and may send elapsed_ms instead.

The table variants are made here by changing a migrated database and running that block
again, with the table's triggers off: 0003's counting of the new column is not 0004's (and
is tested with the later app's fixture); what is tested here is what the writes store.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest

import pgchat.chat as chat
from pgchat import ValidationError
from pgchat.paths import migrations_dir
from tests.helpers import make_user, message, usage_drift


def elapsed_block() -> str:
    text = (migrations_dir() / "0004_sync_and_exchange.sql").read_text()
    found = re.search(r"^-- elapsed:begin\n(.*?)^-- elapsed:end$", text, re.S | re.M)
    assert found, "0004 has no elapsed block"
    return found.group(1)


def stored(conn: psycopg.Connection, column: str) -> dict[str, Any]:
    rows = conn.execute(f"select id, {column} from public.chat_messages").fetchall()
    return {r[0]: r[1] for r in rows}


def reply(message_id: str, to: str, **fields: Any) -> dict[str, Any]:
    return message(message_id, "assistant", timestamp="2025-07-21T10:00:05Z",
                   user_message_id=to) | fields


def write_everything(db: psycopg.Connection, user: uuid.UUID) -> None:
    """The sync, the exchange's INSERT and its UPDATE (a failed reply's successful retry)."""
    report = chat.sync_user_conversations(db, user, [{"id": "s", "messages": [
        message("s-u"), reply("s-sec", "s-u", elapsed_time=2.5),
        reply("s-ms", "s-u", elapsed_ms=1234, timestamp="2025-07-21T10:00:06Z")]}])
    assert report.errors == [] and report.messages_inserted == 3
    chat.write_chat_exchange(db, user, "x", message("x-u"), reply("x-a", "x-u", elapsed_time=7))
    chat.write_chat_exchange(db, user, "x", message("x-u2", timestamp="2025-07-21T10:01:00Z"),
                             reply("x-a2", "x-u2", elapsed_time=1, error_message="timeout",
                                   timestamp="2025-07-21T10:01:05Z"))
    chat.write_chat_exchange(db, user, "x", message("x-u2", timestamp="2025-07-21T10:01:00Z"),
                             reply("x-a2", "x-u2", elapsed_ms=3000,
                                   timestamp="2025-07-21T10:01:05Z"))
    db.commit()


def test_elapsed_ms_in_the_payload_is_taken_on_an_elapsed_time_table(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    write_everything(db, user)
    assert stored(db, "elapsed_time") == {"s-u": 0, "s-sec": 3, "s-ms": 1, "x-u": 0, "x-a": 7,
                                          "x-u2": 0, "x-a2": 3}
    active = db.execute("select sum(active_seconds) from pgchat.counted_events").fetchone()
    assert active == (3 + 1 + 7 + 3,) and usage_drift(db) == []


@pytest.mark.parametrize("value", [-1, "fast", 2_147_483_648])
def test_an_elapsed_ms_that_is_no_count_of_milliseconds_is_refused(
        db: psycopg.Connection, value: Any) -> None:
    user = make_user(db)
    report = chat.sync_user_conversations(db, user, [
        {"id": "c", "messages": [message("u"), reply("a", "u", elapsed_ms=value)]}])
    assert [(e.message_id, e.reason.split(",")[0]) for e in report.errors] == [
        ("a", "elapsed_ms must be a number of milliseconds from 0 to 2147483647")]
    with pytest.raises(ValidationError, match="conversation c, message a: elapsed_ms must be"):
        chat.write_chat_exchange(db, user, "c", message("u"), reply("a", "u", elapsed_ms=value))


def adapt(db: psycopg.Connection, change: str) -> list[str]:
    """Change the table as superuser, run 0004's elapsed block again; return its notices."""
    notices: list[str] = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    db.execute("alter table public.chat_messages disable trigger user")
    db.execute(change)
    db.execute(elapsed_block())
    db.commit()
    return notices


def marked_lines(db: psycopg.Connection) -> list[str]:
    defs = db.execute(
        "select pg_get_functiondef(p) from unnest(array["
        "'pgchat_private.sync_user_conversations(uuid, jsonb)'::regprocedure,"
        "'pgchat_private.write_chat_exchange(uuid, text, jsonb, jsonb, text)'::regprocedure]) p"
    ).fetchall()
    return [ln for (d,) in defs for ln in d.splitlines() if "pgchat:elapsed" in ln]


def test_an_elapsed_ms_table_gets_milliseconds(db: psycopg.Connection) -> None:
    user = make_user(db)
    notices = adapt(db, "alter table public.chat_messages rename column elapsed_time to elapsed_ms")
    assert "pgchat: chat_messages has elapsed_ms; the sync and the exchange write elapsed_ms" \
           " (milliseconds)" in notices
    assert all("elapsed_ms" in ln and "elapsed_time" not in ln for ln in marked_lines(db))
    write_everything(db, user)
    assert stored(db, "elapsed_ms") == {"s-u": 0, "s-sec": 2500, "s-ms": 1234, "x-u": 0,
                                        "x-a": 7000, "x-u2": 0, "x-a2": 3000}


def test_a_table_with_both_columns_gets_both(db: psycopg.Connection) -> None:
    user = make_user(db)
    adapt(db, "alter table public.chat_messages add column elapsed_ms integer default 0")
    write_everything(db, user)
    assert stored(db, "elapsed_time") == {"s-u": 0, "s-sec": 3, "s-ms": 1, "x-u": 0, "x-a": 7,
                                          "x-u2": 0, "x-a2": 3}
    assert stored(db, "elapsed_ms") == {"s-u": 0, "s-sec": 2500, "s-ms": 1234, "x-u": 0,
                                        "x-a": 7000, "x-u2": 0, "x-a2": 3000}


def test_a_table_with_neither_column_stores_the_messages_without_it(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    adapt(db, "alter table public.chat_messages drop column elapsed_time cascade")
    assert all("elapsed" not in ln.split("--")[0] for ln in marked_lines(db))
    write_everything(db, user)
    assert set(stored(db, "content")) == {"s-u", "s-sec", "s-ms", "x-u", "x-a", "x-u2", "x-a2"}
