"""The exceptions pgchat raises for expected failures.

Every one carries a message fit to print on one line; the CLI prints it and exits
with the code the exception names (2 for usage or connection problems, 1 otherwise).
"""

from __future__ import annotations


class PgchatError(Exception):
    """Base class: an expected failure with a one-line, human-readable message."""

    exit_code = 1


class ConnectionFailed(PgchatError):
    """The database could not be reached or refused the credentials."""

    exit_code = 2


class UsageError(PgchatError):
    """The caller asked for something that cannot be done as asked."""

    exit_code = 2


class MigrationError(PgchatError):
    """A migration could not be applied or rolled back; nothing was changed."""


class LockTimeout(MigrationError):
    """Another migrate/rollback holds the migration lock."""


class ValidationError(PgchatError):
    """Input (a payload, an argument) was rejected before anything was written."""


class PermissionDenied(PgchatError):
    """The database refused the operation for the current caller."""
