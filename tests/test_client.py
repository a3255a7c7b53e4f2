"""pgchat.Client and pgchat.AsyncClient as a backend uses them.

On connections with tuple rows, dict rows and other row factories, on an AsyncConnection, through
psycopg_pool's ConnectionPool and AsyncConnectionPool, and with `prepare_threshold=None` (what
Supabase's transaction pooler needs); what each call commits and leaves to the caller, and the
connection's state after an expected error; "run `pgchat migrate` first" on a bare database.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import pq
from psycopg.rows import dict_row, namedtuple_row, scalar_row, tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import pgchat
from pgchat import AsyncClient, Client, DailyUsage, ExchangeResult, NotMigrated, SyncReport
from tests.helpers import as_pgchat, make_user, message

IDLE, INTRANS, INERROR = (pq.TransactionStatus.IDLE, pq.TransactionStatus.INTRANS,
                          pq.TransactionStatus.INERROR)
DAY = date(2025, 7, 21)
ROW_FACTORIES = {"tuple_row": tuple_row, "dict_row": dict_row, "namedtuple_row": namedtuple_row,
                 "scalar_row": scalar_row}


def conversation(cid: str, *ids: str) -> pgchat.Conversation:
    return pgchat.Conversation(id=cid, title=f"chat {cid}", messages=[
        pgchat.ChatMessage(id=m, role="user", content=f"hello {m}",
                           timestamp="2025-07-21T10:00:00Z", input_tokens=5) for m in ids])


def answer(mid: str, to: str) -> dict[str, Any]:
    return message(mid, "assistant", timestamp="2025-07-21T10:00:05Z", output_tokens=40,
                   model="m/x", elapsed_time=3, user_message_id=to)


def committed_messages(dsn: str, user: UUID) -> int:
    """What another connection sees: the user's committed messages."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select count(*) from public.chat_messages m join"
                           " public.chat_sessions s on s.id = m.session_id where s.user_id = %s",
                           (user,)).fetchone()
    assert row is not None
    return int(row[0])


def damage(dsn: str, user: UUID) -> None:
    """Make one of the user's counters disagree with the ledger (committed)."""
    with psycopg.connect(dsn) as conn:
        as_pgchat(conn)
        conn.execute("update public.user_usage_daily set input_tokens = input_tokens + 1000"
                     " where user_id = %s", (user,))


def exercise(client: Client, user: UUID) -> None:
    """Every call once, checking what each returns."""
    report = client.sync_user_conversations(user, [conversation("c1", "m1", "m2")])
    assert isinstance(report, SyncReport) and report.ok, report.errors
    assert (report.sessions_inserted, report.messages_inserted) == (1, 2)
    result = client.write_chat_exchange(str(user), "c1", message("u3", input_tokens=7),
                                        answer("a3", "u3"))
    assert result == ExchangeResult(session_created=False, messages_written=2)
    assert client.update_session_title(user, "c1", "renamed") is True
    assert client.update_session_title(user, "c1", "renamed") is False
    assert client.track_usage(str(user), "evt-1", DAY, messages_sent=1, input_tokens=2) is True
    assert client.track_usage(user, "evt-1", DAY, messages_sent=1, input_tokens=2) is False
    assert client.verify_usage(user) == client.verify_usage(str(user)) == []
    assert client.show_usage(str(user)) == client.show_usage(user)
    days = client.show_usage(user)
    assert [(d.usage_date, d.messages_sent, d.messages_received, d.input_tokens) for d in days] \
        == [(DAY, 4, 1, 19)]
    assert isinstance(days[0], DailyUsage) and days[0].models_used == {"m/x": 1}


@pytest.mark.parametrize("factory", list(ROW_FACTORIES))
def test_every_call_works_with_any_row_factory(db: psycopg.Connection, db_dsn: str,
                                               factory: str) -> None:
    user = make_user(db)
    with psycopg.connect(db_dsn, row_factory=ROW_FACTORIES[factory]) as conn:
        client = Client(conn)
        exercise(client, user)
        conn.commit()
        damage(db_dsn, user)
        repaired = client.rebuild_usage(user)
        assert [(d.field, d.recorded, d.expected) for d in repaired] == [
            ("input_tokens", "1019", "19")]
        assert conn.info.transaction_status == IDLE
    assert pgchat.usage.verify(db, user) == []


def test_the_module_functions_are_the_same_calls(db: psycopg.Connection, db_dsn: str) -> None:
    user = make_user(db)
    with psycopg.connect(db_dsn, row_factory=dict_row) as conn:
        report = pgchat.chat.sync_user_conversations(conn, user, [conversation("c1", "m1")])
        assert report.messages_inserted == 1
        assert pgchat.usage.track_usage(conn, user, "k", DAY, messages_sent=1) is True
        assert pgchat.usage.verify(conn, user) == []
        assert [d.messages_sent for d in pgchat.usage.show(conn, user)] == [2]


def test_every_call_works_on_an_async_connection(db: psycopg.Connection, db_dsn: str) -> None:
    user = make_user(db)

    async def scenario() -> None:
        conn = await psycopg.AsyncConnection.connect(db_dsn, row_factory=dict_row)
        async with conn:
            client = AsyncClient(conn)
            report = await client.sync_user_conversations(user, [conversation("c1", "m1", "m2")])
            assert report.ok and report.messages_inserted == 2
            result = await client.write_chat_exchange(user, "c1", message("u3", input_tokens=7),
                                                      answer("a3", "u3"))
            assert result == ExchangeResult(session_created=False, messages_written=2)
            assert await client.update_session_title(user, "c1", "renamed") is True
            assert await client.track_usage(user, "evt-1", DAY, messages_sent=1) is True
            assert await client.track_usage(user, "evt-1", DAY, messages_sent=1) is False
            assert await client.verify_usage(user) == []
            days = await client.show_usage(user, DAY, DAY)
            assert [(d.messages_sent, d.messages_received) for d in days] == [(4, 1)]
            assert conn.info.transaction_status == INTRANS  # nothing committed by the calls
            await conn.commit()
            damage(db_dsn, user)
            assert await client.rebuild_usage(user, dry_run=True) != []
            assert await client.verify_usage(user) != []  # the dry run wrote nothing
            await conn.rollback()
            assert len(await client.rebuild_usage(user)) == 1
            assert conn.info.transaction_status == IDLE
            await conn.execute("select 1")
            with pytest.raises(pgchat.UsageError, match="commits its own transaction"):
                await client.rebuild_usage(user)
            with pytest.raises(pgchat.ValidationError, match="unknown user"):
                await client.write_chat_exchange(uuid4(), "c9", message("u9"))
            assert conn.info.transaction_status == INERROR
            await conn.rollback()

    asyncio.run(scenario())
    assert committed_messages(db_dsn, user) == 4
    assert pgchat.usage.verify(db, user) == []


def test_a_connection_of_the_other_kind_is_a_clear_error(db: psycopg.Connection,
                                                         db_dsn: str) -> None:
    """The reported failure: an AsyncConnection given to the sync API died with "'coroutine'
    object has no attribute 'fetchone'"."""
    user = make_user(db)

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(db_dsn) as aconn:
            with pytest.raises(pgchat.UsageError, match=r"use pgchat\.AsyncClient"):
                write = pgchat.chat.write_chat_exchange
                write(aconn, user, "c1", message("u1"))  # type: ignore[arg-type]
            with pytest.raises(pgchat.UsageError, match=r"use pgchat\.AsyncClient"):
                Client(aconn).verify_usage()  # type: ignore[arg-type]
        with pytest.raises(pgchat.UsageError, match=r"use pgchat\.Client"):
            await AsyncClient(db).verify_usage()  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_a_connection_pool_commits_each_block(db: psycopg.Connection, db_dsn: str) -> None:
    """Threads share a ConnectionPool; a `with pool.connection()` block commits on exit, so a
    call inside it is committed there, and a failed block is rolled back."""
    users = [make_user(db) for _ in range(4)]
    errors: list[BaseException] = []
    with ConnectionPool(db_dsn, min_size=2, max_size=2, open=True,
                        kwargs={"row_factory": dict_row}) as pool:

        def work(user: UUID) -> None:
            try:
                for n in range(5):
                    with pool.connection() as conn:
                        Client(conn).write_chat_exchange(user, f"s-{user}", message(f"u{n}-{user}"),
                                                         answer(f"a{n}-{user}", f"u{n}-{user}"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        with pytest.raises(pgchat.ValidationError), pool.connection() as conn:
            Client(conn).write_chat_exchange(users[0], "s-new", message("ok"))
            Client(conn).write_chat_exchange(users[0], "s-new", {"id": "", "content": "x"})
        with pool.connection() as conn:  # the pool gives back a usable connection
            assert Client(conn).verify_usage(users[0]) == []
    assert [committed_messages(db_dsn, u) for u in users] == [10, 10, 10, 10]


def test_an_async_connection_pool(db: psycopg.Connection, db_dsn: str) -> None:
    users = [make_user(db) for _ in range(3)]

    async def scenario() -> None:
        async with AsyncConnectionPool(db_dsn, min_size=2, max_size=2, open=False,
                                       kwargs={"prepare_threshold": None}) as pool:

            async def work(user: UUID) -> None:
                for n in range(4):
                    async with pool.connection() as conn:
                        await AsyncClient(conn).write_chat_exchange(
                            user, f"s-{user}", message(f"u{n}-{user}"))

            await asyncio.gather(*(work(u) for u in users))

    asyncio.run(scenario())
    assert [committed_messages(db_dsn, u) for u in users] == [4, 4, 4]


def prepared(conn: psycopg.Connection) -> int:
    row = conn.execute("select count(*) from pg_prepared_statements").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("threshold", [None, 0])
def test_prepare_threshold_none_leaves_no_prepared_statement(
    db: psycopg.Connection, db_dsn: str, threshold: int | None
) -> None:
    """Through Supabase's transaction pooler a server-side prepared statement lands on whatever
    backend served that transaction; with prepare_threshold=None every call works and none is
    left (with 0, psycopg prepares at once: the check sees them)."""
    user = make_user(db)
    with psycopg.connect(db_dsn, prepare_threshold=threshold, autocommit=True) as conn:
        client = Client(conn)
        for n in range(8):
            client.write_chat_exchange(user, "c1", message(f"u{n}"), answer(f"a{n}", f"u{n}"))
            client.update_session_title(user, "c1", f"title {n}")
            client.track_usage(user, f"e{n}", DAY, messages_sent=1)
            client.verify_usage(user)
            client.show_usage(user)
        client.rebuild_usage(user)
        if threshold is None:
            assert prepared(conn) == 0
        else:
            assert prepared(conn) > 0
    assert committed_messages(db_dsn, user) == 16


# --- transactions -----------------------------------------------------------------------------


def test_calls_run_in_the_callers_transaction(db: psycopg.Connection, db_dsn: str) -> None:
    user = make_user(db)
    with psycopg.connect(db_dsn) as conn:
        client = Client(conn)
        client.write_chat_exchange(user, "c1", message("u1"), answer("a1", "u1"))
        assert conn.info.transaction_status == INTRANS
        assert committed_messages(db_dsn, user) == 0  # not committed by the call
        conn.rollback()
        assert committed_messages(db_dsn, user) == 0
        client.write_chat_exchange(user, "c1", message("u1"), answer("a1", "u1"))
        conn.commit()
        assert committed_messages(db_dsn, user) == 2


def test_an_autocommit_connection_commits_each_call(db: psycopg.Connection, db_dsn: str) -> None:
    user = make_user(db)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        Client(conn).write_chat_exchange(user, "c1", message("u1"))
        assert conn.info.transaction_status == IDLE
        assert committed_messages(db_dsn, user) == 1


def test_a_database_error_leaves_the_transaction_failed(db: psycopg.Connection,
                                                        db_dsn: str) -> None:
    user, other = make_user(db), make_user(db)
    with psycopg.connect(db_dsn, row_factory=dict_row) as conn:
        client = Client(conn)
        client.write_chat_exchange(user, "c1", message("u1"))
        conn.commit()
        with pytest.raises(pgchat.PermissionDenied), conn.transaction():
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(other),))
            client.write_chat_exchange(user, "c2", message("u2"))
        assert conn.info.transaction_status == IDLE  # conn.transaction() rolled it back
        with pytest.raises(pgchat.ValidationError, match="unknown user"):
            client.track_usage(uuid4(), "k", DAY, messages_sent=1)
        assert conn.info.transaction_status == INERROR
        with pytest.raises(pgchat.UsageError, match=r"roll back") as caught:
            client.verify_usage()
        assert isinstance(caught.value.__cause__, psycopg.errors.InFailedSqlTransaction)
        conn.rollback()
        assert client.verify_usage() == []


def test_an_error_found_before_sending_leaves_the_connection_as_it_was(
    db: psycopg.Connection, db_dsn: str
) -> None:
    user = make_user(db)
    with psycopg.connect(db_dsn) as conn:
        client = Client(conn)
        client.write_chat_exchange(user, "c1", message("u1"))
        with pytest.raises(pgchat.ValidationError, match="not a UUID"):
            client.write_chat_exchange("not-a-user", "c1", message("u2"))
        with pytest.raises(pgchat.ValidationError, match="must be a list"):
            client.sync_user_conversations(user, "[]")  # type: ignore[arg-type]
        with pytest.raises(pgchat.UsageError, match="after"):
            client.show_usage(user, date(2025, 2, 1), date(2025, 1, 1))
        assert conn.info.transaction_status == INTRANS
        conn.commit()
    assert committed_messages(db_dsn, user) == 1


def test_rebuild_commits_and_leaves_the_connection_idle(db: psycopg.Connection,
                                                        db_dsn: str) -> None:
    """The reported bug: 'repaired: 1', the connection left in a transaction, and after close()
    the drift was back. Now rebuild commits; the drift is gone for everyone."""
    user = make_user(db)
    Client(db).write_chat_exchange(user, "c1", message("u1", input_tokens=5))
    db.commit()
    damage(db_dsn, user)
    with psycopg.connect(db_dsn, row_factory=dict_row) as conn:
        assert len(Client(conn).rebuild_usage(user, dry_run=True)) == 1
        assert conn.info.transaction_status == IDLE
        assert len(Client(conn).verify_usage(user)) == 1  # the dry run wrote nothing
        conn.rollback()
        assert [d.field for d in Client(conn).rebuild_usage(user)] == ["input_tokens"]
        assert conn.info.transaction_status == IDLE
    with psycopg.connect(db_dsn) as fresh:
        assert Client(fresh).verify_usage() == []


def test_rebuild_refuses_to_run_inside_a_transaction(db: psycopg.Connection,
                                                     db_dsn: str) -> None:
    user = make_user(db)
    Client(db).write_chat_exchange(user, "c1", message("u1", input_tokens=5))
    db.commit()
    damage(db_dsn, user)
    db.execute("select 1")
    with pytest.raises(pgchat.UsageError, match="commit or roll back first"):
        Client(db).rebuild_usage(user)
    assert db.info.transaction_status == INTRANS
    db.rollback()
    assert len(Client(db).verify_usage(user)) == 1  # nothing was changed


# --- a database without the migrations --------------------------------------------------------


CALLS: dict[str, Callable[[Client], object]] = {
    "sync": lambda c: c.sync_user_conversations(uuid4(), []),
    "exchange": lambda c: c.write_chat_exchange(uuid4(), "c1", message("u1")),
    "title": lambda c: c.update_session_title(uuid4(), "c1", "t"),
    "track": lambda c: c.track_usage(uuid4(), "k", DAY, messages_sent=1),
    "verify": lambda c: c.verify_usage(),
    "verify_user": lambda c: c.verify_usage(uuid4()),
    "show": lambda c: c.show_usage(uuid4()),
    "rebuild": lambda c: c.rebuild_usage(),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("factory", ["tuple_row", "dict_row"])
def test_a_database_without_migrations_says_run_migrate(empty_dsn: str, call: str,
                                                        factory: str) -> None:
    factory_ = ROW_FACTORIES[factory]
    with (psycopg.connect(empty_dsn, row_factory=factory_, autocommit=True) as conn,
          pytest.raises(NotMigrated, match=r"run `pgchat migrate` first")):
        CALLS[call](Client(conn))


def test_async_on_a_database_without_migrations(empty_dsn: str) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(empty_dsn, autocommit=True) as conn:
            with pytest.raises(NotMigrated, match=r"run `pgchat migrate` first"):
                await AsyncClient(conn).verify_usage()
            with pytest.raises(NotMigrated, match=r"run `pgchat migrate` first"):
                await AsyncClient(conn).rebuild_usage()

    asyncio.run(scenario())


def test_a_report_with_counts_this_client_does_not_know_is_read() -> None:
    """A newer database may report more; the client reads what it knows."""
    report = SyncReport.from_json({"sessions_inserted": 2, "messages_new_kind": 5,
                                   "errors": [{"conversation_id": "c", "reason": "bad"}]})
    assert report.sessions_inserted == 2
    assert report.errors == [pgchat.SyncError("c", None, "bad")]
