"""Resolving and opening the database connection.

Precedence: an explicit DSN (`--dsn`), then `PGCHAT_DSN`, then `DATABASE_URL`. Nothing given is
a usage error: the embedded server (./.pgchat) is used only when asked for (`--embedded`), or by
the demo, whose whole point is to need nothing. Both libpq URIs and `key=value` strings work.
"""

from __future__ import annotations

import os
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
        raise ConnectionFailed(f"invalid DSN: {one_line(exc)}") from None
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(f"cannot connect to {describe(dsn)}: {one_line(exc)}") from None
