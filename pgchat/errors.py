"""The exceptions pgchat raises for expected failures.

Every one carries a message fit to print on one line; the CLI prints it and exits
with the code the exception names (2 for usage or connection problems, 1 otherwise).
One raised because of a database error also carries what the database said — `sqlstate`,
`constraint`, `detail`, `db_message` (None where there is none) — and is chained to the
psycopg error (`__cause__`), so logs and tracebacks keep it. docs/errors.md has the table.
"""

from __future__ import annotations

import re
from typing import Any


class PgchatError(Exception):
    """Base class: an expected failure with a one-line, human-readable message."""

    exit_code = 1

    def __init__(self, message: str, *, sqlstate: str | None = None,
                 constraint: str | None = None, detail: str | None = None,
                 db_message: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.detail = detail
        self.db_message = db_message

    @property
    def code(self) -> str:
        """A stable name for machines (the CLI's `--json` errors): the class name."""
        return type(self).__name__

    def as_dict(self) -> dict[str, Any]:
        """The error for `--json`: message, code, and what the database said, where known."""
        out: dict[str, Any] = {"error": str(self), "code": self.code, "exit": self.exit_code}
        for key in ("sqlstate", "constraint", "detail", "db_message"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class ConnectionFailed(PgchatError):
    """The database could not be reached, refused the credentials, or the connection broke."""

    exit_code = 2


class DatabaseError(PgchatError):
    """A database error pgchat has no more specific class for (see `sqlstate`, `__cause__`)."""


class UsageError(PgchatError):
    """The caller asked for something that cannot be done as asked."""

    exit_code = 2


class NotMigrated(UsageError):
    """The database lacks pgchat's functions or tables: `pgchat migrate` has not run there."""


class PoolerRefused(UsageError):
    """A schema change (migrate, rollback) was given a transaction pooler's DSN: it needs the
    direct connection (or a session pooler); nothing was done, no lock was taken."""


class MigrationError(PgchatError):
    """A migration could not be applied or rolled back; nothing was changed."""


class LockTimeout(MigrationError):
    """Another migrate/rollback holds the migration lock."""


class ValidationError(PgchatError):
    """Input (a payload, an argument) was rejected before anything was written."""


class LimitReached(ValidationError):
    """A counter would pass what its column holds (a conversation's or a day's tokens)."""


class PermissionDenied(PgchatError):
    """The database refused the operation for the current caller."""


class Conflict(PgchatError):
    """A concurrent write touched the same rows; nothing was written, retrying is safe."""


# The CHECK constraints of migration 0005, and what each one means (the sync report's words).
CONSTRAINT_REASONS: dict[str, str] = {
    "chat_messages_id_length": "message id and user_message_id must have at most 255 characters",
    "chat_messages_counts_range":
        "input_tokens, output_tokens, total_tokens and elapsed_time must be from 0 to 10000000",
    "chat_messages_timestamp_window":
        "timestamp is outside the accepted window (2000-01-01 to one day from now)",
    "chat_sessions_id_length": "conversation id is longer than 255 characters",
    "chat_sessions_counts_range": "message_count and total_tokens must not be negative",
    "chat_sessions_timestamp_window": "createdAt, updatedAt and last activity must be inside"
                                      " the accepted window (2000-01-01 to one day from now)",
}


_UNKNOWN_USER = re.compile(
    r'^Key \((?:user_id|id)\)=\(([^)]*)\) is not present in table "(?:profiles|users)"')


def diagnostics(exc: BaseException) -> dict[str, str | None]:
    """What a psycopg error says, as keyword arguments of a PgchatError."""
    diag = getattr(exc, "diag", None)
    return {"sqlstate": getattr(exc, "sqlstate", None),
            "constraint": getattr(diag, "constraint_name", None),
            "detail": getattr(diag, "message_detail", None),
            "db_message": getattr(diag, "message_primary", None)}


def from_database(exc: Exception) -> PgchatError | None:
    """The pgchat exception for a database error raised on purpose by pgchat's SQL, else None.

    pgchat's functions signal expected failures with specific SQLSTATEs; this is the one place
    that maps them, so callers see the same exception types whichever function failed.
    """
    state = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    message = (getattr(diag, "message_primary", None) or str(exc)).strip()
    mapping: dict[str, type[PgchatError]] = {
        "42501": PermissionDenied,  # insufficient_privilege: acting for another user
        "22023": ValidationError,   # invalid_parameter_value: malformed payload or argument
        "23503": ValidationError,   # foreign_key_violation: unknown user
        "23514": ValidationError,   # check_violation
        "23502": ValidationError,   # not_null_violation
        "22004": ValidationError,   # null_value_not_allowed: a required argument is missing
        "P0002": ValidationError,   # no_data_found: no such conversation for this user
        "22P05": ValidationError,   # untranslatable_character: e.g. a NUL in a string
        "22P02": ValidationError,   # invalid_text_representation
        "22003": ValidationError,   # numeric_value_out_of_range
        "22021": ValidationError,   # character_not_in_repertoire
        "54000": LimitReached,      # program_limit_exceeded: pgchat.within_integer
        "23505": Conflict,          # unique_violation: lost a race with a concurrent insert
        "40P01": Conflict,          # deadlock_detected
        "40001": Conflict,          # serialization_failure
    }
    kind = mapping.get(state or "")
    if kind is None:
        return None
    constraint = getattr(diag, "constraint_name", None)
    unknown = _UNKNOWN_USER.search(getattr(diag, "message_detail", None) or "")
    if state == "23503" and unknown:  # a row of an unknown user (no profile, no auth user)
        message = (f"unknown user {unknown.group(1)}: no such profile (the user must sign up "
                   f"first); foreign key {constraint}")
    if state == "23514" and constraint in CONSTRAINT_REASONS:
        message = f"{CONSTRAINT_REASONS[constraint]} (check constraint {constraint})"
    if kind is Conflict and "retry is safe" not in message:
        message = f"concurrent write to the same rows; nothing was written, retry ({message})"
    return kind(message, **diagnostics(exc))
