"""Resolving and opening the database connection.

Precedence: an explicit DSN (`--dsn`), then `PGCHAT_DSN`, then `DATABASE_URL`. Nothing given is
a usage error: the embedded server (./.pgchat) is used only when asked for (`--embedded`), or by
the demo, whose whole point is to need nothing. Both libpq URIs and `key=value` strings work.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgchat.errors import ConnectionFailed, UsageError

ENV_VARS = ("PGCHAT_DSN", "DATABASE_URL")
EMBEDDED = "embedded default"  # Target.source of the embedded server


@dataclass(frozen=True)
class Target:
    """A resolved database: its DSN and where the DSN came from (for messages)."""

    dsn: str
    source: str


def resolve(dsn: str | None = None, *, embedded: bool = False,
            default_embedded: bool = False) -> Target:
    """Pick the database: the embedded server if `embedded`, else the DSN, then the environment;
    with nothing configured, the embedded server if `default_embedded`, else a UsageError."""
    if embedded and dsn:
        raise UsageError("give --dsn or --embedded, not both")
    if not embedded:
        if dsn:
            return Target(dsn, "--dsn")
        for var in ENV_VARS:
            value = os.environ.get(var)
            if value:
                return Target(value, var)
        if not default_embedded:
            raise UsageError("no database given: pass --dsn, set PGCHAT_DSN or DATABASE_URL, "
                             "or --embedded for the local embedded PostgreSQL (./.pgchat)")
    from pgchat import server

    return Target(server.start_embedded(), EMBEDDED)


def describe(dsn: str) -> str:
    """The DSN with any password masked, fit for printing."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if params.get("password"):
        params["password"] = "***"
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def one_line(exc: BaseException) -> str:
    """The first meaningful line of a driver error (libpq messages span several lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else exc.__class__.__name__


def connect(dsn: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """Open a connection, turning every way it can fail into a one-line ConnectionFailed."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(f"invalid DSN: {one_line(exc)}") from exc
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(f"cannot connect to {describe(dsn)}: {one_line(exc)}") from exc


def _pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
    assert row is not None
    return int(row[0])


def transaction_pooler(dsn: str, wait: float = 2.0) -> str | None:
    """Why `dsn` reaches the server through a transaction pooler, or None (a direct connection,
    or a session pooler). Asks only `pg_backend_pid()`: takes no lock, sets nothing, writes
    nothing, and costs two connections.

    A session pooler (and a direct connection) gives a client one server session for its whole
    connection; a transaction pooler gives one for a transaction only. So: note the backend of
    a connection A, open a transaction on a second connection B and, while it is open, ask A
    again. A transaction pooler shows as B running on A's backend (pgbouncer hands out the
    connection released last), as A answering from another backend, or as A waiting (no server
    connection free while B holds one: the pool is that small). A direct connection or a
    session pooler can show none of the three. (Comparing libpq's backend pid with the
    server's would only say that *some* proxy is there, session poolers included, and relies on
    what the proxy sends at connection; the session-level setting that "survives" a transaction
    proves nothing either, since an idle transaction pooler often gives the same session back.)
    """
    with connect(dsn, autocommit=True) as first:
        seen = _pid(first)
        where = describe(dsn)
        with connect(dsn) as second:
            held = _pid(second)  # B's transaction stays open until rollback
            if held == seen:
                return (f"{where} is a transaction pooler (another client's transaction ran on "
                        "this connection's server session)")
            answer: list[int | BaseException] = []

            def ask() -> None:
                try:
                    answer.append(_pid(first))
                except BaseException as exc:  # reported below, never lost
                    answer.append(exc)

            asker = threading.Thread(target=ask, daemon=True)
            asker.start()
            asker.join(wait)
            waited = asker.is_alive()
            second.rollback()  # frees B's server connection, so a waiting A goes on
            asker.join()
        if waited:
            return (f"{where} is a transaction pooler (a second transaction waited for a "
                    "free server connection)")
        if isinstance(answer[0], BaseException):
            raise answer[0]
        if answer[0] != seen:
            return (f"{where} is a transaction pooler (two transactions of one connection "
                    "ran on different server sessions)")
    return None
