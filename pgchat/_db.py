"""Running one of pgchat's SQL calls on a psycopg connection, sync or async, the same way.

A `Query` is the SQL, its parameters and how to read the result; the client's sync and async
methods build the same `Query` and only differ in how they send it. Rows are always read as
tuples (a cursor with its own row factory), so the caller's `row_factory` — `dict_row`,
`class_row`, anything — never matters. Nothing here commits or opens a transaction: the
statement runs in the connection's current transaction, or autocommits if the connection does.

Every statement is sent with `prepare=False`: psycopg would otherwise prepare a statement on
the server after its fifth execution (`prepare_threshold`, 5 by default), and a prepared
statement lives in one server session, which a transaction pooler (Supabase's Supavisor on
port 6543, pgbouncer `pool_mode = transaction`) does not keep between transactions: the
client would fail with `prepared statement "_pg3_N" already exists / does not exist` on a
connection with psycopg's default settings. pgchat's calls are one short statement each; the
planning saved by preparing is not worth that.

Every psycopg error raised by a call becomes a pgchat exception (`translated`), chained to the
original: the specific ones of pgchat.errors.from_database, NotMigrated, ConnectionFailed, and
DatabaseError for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from pgchat.errors import (
    ConnectionFailed,
    DatabaseError,
    NotMigrated,
    PgchatError,
    UsageError,
    ValidationError,
    diagnostics,
    from_database,
)

T = TypeVar("T")
Row = tuple[Any, ...]

# What a database without pgchat's migrations answers: no such function, schema or table.
_MISSING_OBJECT = {"42883", "3F000", "42P01"}
# The server ended the session: shutdown (admin, crash), cannot connect now, database dropped.
_CONNECTION_LOST = {"57P01", "57P02", "57P03", "57P04", "57P05"}


@dataclass(frozen=True)
class Query(Generic[T]):
    sql: str
    params: Sequence[Any] | Mapping[str, Any]
    read: Callable[[list[Row]], T]


def as_pgchat(exc: psycopg.Error) -> PgchatError:
    """The pgchat exception for any psycopg error (the caller chains it: `from exc`)."""
    mapped = from_database(exc)
    if mapped is not None:
        return mapped
    state = getattr(exc, "sqlstate", None)
    found = diagnostics(exc)
    primary = found["db_message"] or _first_line(exc)
    if state == "25P02":  # in_failed_sql_transaction: an earlier statement failed
        return UsageError("this connection's transaction failed at an earlier statement: roll "
                          "back (conn.rollback()) before the next call", **found)
    if state in _MISSING_OBJECT:
        return NotMigrated(f"pgchat's schema is not in this database, or not this version of "
                           f"it ({primary}): run `pgchat migrate` first", **found)
    if (isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            and (state is None or state.startswith("08") or state in _CONNECTION_LOST)):
        return ConnectionFailed(f"database connection failed: {primary}", **found)
    return DatabaseError(f"database error: {primary}", **found)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


@contextmanager
def translated() -> Iterator[None]:
    """Raise pgchat's exception for any database error, chained to it."""
    try:
        yield
    except psycopg.Error as exc:
        raise as_pgchat(exc) from exc


# The parameters of pgchat's functions, by position: to name the one a check refuses.
_ARGUMENTS = {
    "public.write_chat_exchange": ("user_id", "session_id", "user_message", "assistant_message",
                                   "session_title"),
    "public.update_session_title": ("user_id", "session_id", "title"),
    "public.sync_user_conversations": ("user_id", "conversations"),
}
_CALLED = re.compile(r"SELECT (public\.[a-z_]+)\(")
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _unstorable(value: Any, where: str) -> str | None:
    """Why PostgreSQL cannot take `value` (a NUL, a lone surrogate), naming where it is."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        if found.group() == "\x00":
            return f"{where} contains a NUL character (\\u0000), which PostgreSQL cannot store"
        code = ord(found.group())
        return f"{where} contains a lone surrogate (\\u{code:04x}), which is not Unicode"
    if isinstance(value, Mapping):
        for key, item in value.items():
            reason = _unstorable(key, f"{where}: a field name") or _unstorable(
                item, f"{where}.{key}")
            if reason:
                return reason
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            ident = item.get("id") if isinstance(item, Mapping) else None
            reason = _unstorable(item, f"{where}[{ident!r}]" if isinstance(ident, str)
                                 else f"{where}[{n}]")
            if reason:
                return reason
    return None


def check_params(query: Query[Any]) -> None:
    """Refuse, before sending, a text PostgreSQL cannot store, naming the argument and field
    (`user_message.content`) — the server would only say `unsupported Unicode escape sequence`
    or `invalid byte sequence`, for the whole call."""
    if not isinstance(query.params, Sequence):
        return
    called = _CALLED.match(query.sql)
    names = _ARGUMENTS.get(called.group(1), ()) if called else ()
    session = dict(zip(names, query.params, strict=False)).get("session_id")  # defaults: shorter
    for n, param in enumerate(query.params):
        value = param.obj if isinstance(param, Jsonb) else param
        name = names[n] if n < len(names) else f"argument {n + 1}"
        if isinstance(value, Mapping) and isinstance(value.get("id"), str):
            name = f"{name} (message {value['id']!r})"
        reason = _unstorable(value, name)
        if reason:  # an exchange's message is named with its conversation, as the sync names it
            # (a session id PostgreSQL cannot take is refused above, as the parameter it is)
            prefix = (f"conversation {session!r}, " if isinstance(session, str)
                      and name != "session_id" else "")
            raise ValidationError(prefix + reason)


def run(conn: psycopg.Connection[Any], query: Query[T]) -> T:
    if not isinstance(conn, psycopg.Connection):
        raise UsageError(f"pgchat.Client and the module functions take a psycopg.Connection, "
                         f"not {type(conn).__name__}: use pgchat.AsyncClient for an async one")
    check_params(query)
    with translated(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(query.sql, query.params, prepare=False)
        rows = cur.fetchall() if cur.description is not None else []
    return query.read(rows)


async def run_async(conn: psycopg.AsyncConnection[Any], query: Query[T]) -> T:
    if not isinstance(conn, psycopg.AsyncConnection):
        raise UsageError(f"pgchat.AsyncClient takes a psycopg.AsyncConnection, not "
                         f"{type(conn).__name__}: use pgchat.Client for a sync one")
    check_params(query)
    with translated():
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(query.sql, query.params, prepare=False)
            rows = await cur.fetchall() if cur.description is not None else []
    return query.read(rows)


def as_uuid(user_id: UUID | str, what: str = "user id") -> UUID:
    """A user id as UUID; a malformed string is refused before anything is sent."""
    if isinstance(user_id, UUID):
        return user_id
    try:
        return UUID(str(user_id))
    except ValueError:
        raise ValidationError(f"{what} is not a UUID: {user_id!r}") from None


def one(rows: list[Row]) -> Any:
    """The single value of a one-row, one-column result."""
    if len(rows) != 1 or len(rows[0]) != 1:
        raise AssertionError(f"expected one value, got {rows!r}")
    return rows[0][0]
