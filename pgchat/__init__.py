"""pgchat: exactly-once chat analytics for PostgreSQL and Supabase."""

from pgchat.errors import (
    Conflict,
    ConnectionFailed,
    LockTimeout,
    MigrationError,
    PermissionDenied,
    PgchatError,
    UsageError,
    ValidationError,
)

__all__ = [
    "Conflict",
    "ConnectionFailed",
    "LockTimeout",
    "MigrationError",
    "PermissionDenied",
    "PgchatError",
    "UsageError",
    "ValidationError",
]
__version__ = "0.1.0"
