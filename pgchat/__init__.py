"""pgchat: exactly-once chat analytics for PostgreSQL and Supabase.

The backend's API is `Client` (a psycopg connection) and `AsyncClient` (an async one); see
pgchat.client for what each call commits. Everything here needs only psycopg.
"""

from pgchat.chat import ChatMessage, Conversation, ExchangeResult, SyncError, SyncReport
from pgchat.client import AsyncClient, Client
from pgchat.errors import (
    Conflict,
    ConnectionFailed,
    LimitReached,
    LockTimeout,
    MigrationError,
    NotMigrated,
    PermissionDenied,
    PgchatError,
    UsageError,
    ValidationError,
)
from pgchat.usage import DailyUsage, Drift

__all__ = [
    "AsyncClient",
    "ChatMessage",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Conversation",
    "DailyUsage",
    "Drift",
    "ExchangeResult",
    "LimitReached",
    "LockTimeout",
    "MigrationError",
    "NotMigrated",
    "PermissionDenied",
    "PgchatError",
    "SyncError",
    "SyncReport",
    "UsageError",
    "ValidationError",
]
__version__ = "0.1.0"
