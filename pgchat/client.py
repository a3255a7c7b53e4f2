"""The backend's client: pgchat's SQL functions as typed methods, sync and async.

    client = pgchat.Client(conn)          # any psycopg.Connection, any row_factory
    aclient = pgchat.AsyncClient(aconn)   # any psycopg.AsyncConnection

Both have the same methods, taking and returning the same dataclasses and raising the same
exceptions. Transactions: every method except `rebuild_usage` runs its one statement in the
connection's current transaction (opening one if the connection is not in autocommit mode)
and commits nothing: commit when your unit of work is done, or use a connection that
autocommits, or a pool's `connection()` block, which commits on exit. `rebuild_usage` is a
repair and commits a transaction of its own; it refuses a connection already in a transaction.

After an expected error (a pgchat exception) raised by the database, the transaction is
failed, as after any failed statement: roll back (a `with conn:` block or the pool does) before
using the connection again; in autocommit mode nothing is left to do. Errors found before
anything is sent (a user id that is not a UUID, a payload that is not a list) leave the
connection as it was.

No session state is used (no prepared statement of pgchat's own, no session `SET`, no temporary
table), so a connection from a pool or through Supabase's transaction pooler works as is;
through that pooler psycopg itself needs `prepare_threshold=None`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import psycopg

from pgchat import chat, usage
from pgchat._db import as_uuid, run, run_async, translated
from pgchat.chat import Conversations, ExchangeResult, Message, SyncReport
from pgchat.usage import DailyUsage, Drift


@dataclass(frozen=True)
class Client:
    """pgchat's calls on one psycopg connection."""

    conn: psycopg.Connection[Any]

    def sync_user_conversations(self, user_id: UUID | str,
                                conversations: Conversations) -> SyncReport:
        """Insert-only upload of browser conversations; the report says what was written."""
        return run(self.conn, chat.sync_query(user_id, conversations))

    def write_chat_exchange(self, user_id: UUID | str, session_id: str, user_message: Message,
                            assistant_message: Message | None = None,
                            session_title: str | None = None) -> ExchangeResult:
        """One exchange (user message, reply, session) in one statement."""
        return run(self.conn, chat.exchange_query(user_id, session_id, user_message,
                                                  assistant_message, session_title))

    def update_session_title(self, user_id: UUID | str, session_id: str, title: str) -> bool:
        """Rename a conversation; False (and nothing written) if the title is unchanged."""
        return run(self.conn, chat.title_query(user_id, session_id, title))

    def track_usage(self, user_id: UUID | str, event_key: str, usage_date: date, *,
                    messages_sent: int = 0, messages_received: int = 0, input_tokens: int = 0,
                    output_tokens: int = 0, model_used: str | None = None,
                    session_created: bool = False, active_seconds: int = 0) -> bool:
        """Book one usage event exactly once; True if it was counted now."""
        return run(self.conn, usage.track_usage_query(
            user_id, event_key, usage_date, messages_sent=messages_sent,
            messages_received=messages_received, input_tokens=input_tokens,
            output_tokens=output_tokens, model_used=model_used,
            session_created=session_created, active_seconds=active_seconds))

    def verify_usage(self, user_id: UUID | str | None = None) -> list[Drift]:
        """Every counter that differs from what was counted ([] when all is well)."""
        return run(self.conn, usage.verify_query(user_id))

    def show_usage(self, user_id: UUID | str, date_from: date | None = None,
                   date_to: date | None = None) -> list[DailyUsage]:
        """A user's daily counters, oldest first."""
        return run(self.conn, usage.show_query(user_id, date_from, date_to))

    def rebuild_usage(self, user_id: UUID | str | None = None, *,
                      dry_run: bool = False) -> list[Drift]:
        """Rewrite the counters from what was counted and commit; returns what was repaired."""
        return usage.rebuild(self.conn, user_id, dry_run=dry_run)


@dataclass(frozen=True)
class AsyncClient:
    """pgchat's calls on one psycopg async connection (asyncio, FastAPI)."""

    conn: psycopg.AsyncConnection[Any]

    async def sync_user_conversations(self, user_id: UUID | str,
                                      conversations: Conversations) -> SyncReport:
        """Insert-only upload of browser conversations; the report says what was written."""
        return await run_async(self.conn, chat.sync_query(user_id, conversations))

    async def write_chat_exchange(self, user_id: UUID | str, session_id: str,
                                  user_message: Message, assistant_message: Message | None = None,
                                  session_title: str | None = None) -> ExchangeResult:
        """One exchange (user message, reply, session) in one statement."""
        return await run_async(self.conn, chat.exchange_query(
            user_id, session_id, user_message, assistant_message, session_title))

    async def update_session_title(self, user_id: UUID | str, session_id: str,
                                   title: str) -> bool:
        """Rename a conversation; False (and nothing written) if the title is unchanged."""
        return await run_async(self.conn, chat.title_query(user_id, session_id, title))

    async def track_usage(self, user_id: UUID | str, event_key: str, usage_date: date, *,
                          messages_sent: int = 0, messages_received: int = 0,
                          input_tokens: int = 0, output_tokens: int = 0,
                          model_used: str | None = None, session_created: bool = False,
                          active_seconds: int = 0) -> bool:
        """Book one usage event exactly once; True if it was counted now."""
        return await run_async(self.conn, usage.track_usage_query(
            user_id, event_key, usage_date, messages_sent=messages_sent,
            messages_received=messages_received, input_tokens=input_tokens,
            output_tokens=output_tokens, model_used=model_used,
            session_created=session_created, active_seconds=active_seconds))

    async def verify_usage(self, user_id: UUID | str | None = None) -> list[Drift]:
        """Every counter that differs from what was counted ([] when all is well)."""
        return await run_async(self.conn, usage.verify_query(user_id))

    async def show_usage(self, user_id: UUID | str, date_from: date | None = None,
                         date_to: date | None = None) -> list[DailyUsage]:
        """A user's daily counters, oldest first."""
        return await run_async(self.conn, usage.show_query(user_id, date_from, date_to))

    async def rebuild_usage(self, user_id: UUID | str | None = None, *,
                            dry_run: bool = False) -> list[Drift]:
        """Rewrite the counters from what was counted and commit; returns what was repaired."""
        usage.check_idle(self.conn.info.transaction_status)
        user = None if user_id is None else as_uuid(user_id)
        repaired: list[Drift] = []
        after: UUID | None = None
        with translated():
            if dry_run or user is not None:  # the preview; refuses an unknown user
                async with self.conn.transaction(force_rollback=True):
                    planned = await run_async(self.conn, usage.verify_query(user))
                if dry_run:
                    return planned
            while True:  # batch by batch, as usage.rebuild
                async with self.conn.transaction():
                    users = [user] if user is not None else await run_async(
                        self.conn, usage.users_query(after))
                    if users:
                        await run_async(self.conn, usage.lock_query(users))
                        drift = await run_async(self.conn, usage.drift_query(users))
                        if drift:
                            await run_async(self.conn, usage.rebuild_query(users))
                        repaired += drift
                if not users or user is not None:
                    break
                after = users[-1]
        return sorted(repaired, key=usage.drift_order)
