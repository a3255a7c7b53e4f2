"""Running one of pgchat's SQL calls on a psycopg connection, sync or async, the same way.

A `Query` is the SQL, its parameters and how to read the result; the client's sync and async
methods build the same `Query` and only differ in how they send it. Rows are always read as
tuples (a cursor with its own row factory), so the caller's `row_factory` — `dict_row`,
`class_row`, anything — never matters. Nothing here commits or opens a transaction: the
statement runs in the connection's current transaction, or autocommits if the connection does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

from pgchat.errors import NotMigrated, UsageError, ValidationError, from_database

T = TypeVar("T")
Row = tuple[Any, ...]

# What a database without pgchat's migrations answers: no such function, schema or table.
_MISSING_OBJECT = {"42883", "3F000", "42P01"}


@dataclass(frozen=True)
class Query(Generic[T]):
    sql: str
    params: Sequence[Any] | Mapping[str, Any]
    read: Callable[[list[Row]], T]


@contextmanager
def translated() -> Iterator[None]:
    """Raise pgchat's exception for an expected database error; let the others through."""
    try:
        yield
    except psycopg.Error as exc:
        mapped = from_database(exc)
        if mapped is None and getattr(exc, "sqlstate", None) in _MISSING_OBJECT:
            detail = psycopg.errors.lookup(exc.sqlstate or "").__name__
            diag = exc.diag.message_primary or detail
            mapped = NotMigrated(f"pgchat's schema is not in this database ({diag}): "
                                 "run `pgchat migrate` first")
        if mapped is None:
            raise
        raise mapped from None


def run(conn: psycopg.Connection[Any], query: Query[T]) -> T:
    if not isinstance(conn, psycopg.Connection):
        raise UsageError(f"pgchat.Client and the module functions take a psycopg.Connection, "
                         f"not {type(conn).__name__}: use pgchat.AsyncClient for an async one")
    with translated(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(query.sql, query.params)
        rows = cur.fetchall() if cur.description is not None else []
    return query.read(rows)


async def run_async(conn: psycopg.AsyncConnection[Any], query: Query[T]) -> T:
    if not isinstance(conn, psycopg.AsyncConnection):
        raise UsageError(f"pgchat.AsyncClient takes a psycopg.AsyncConnection, not "
                         f"{type(conn).__name__}: use pgchat.Client for a sync one")
    with translated():
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(query.sql, query.params)
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
