"""The chat app's write paths: the sign-in sync, the chat-exchange write, the title edit.

The dataclasses mirror the frontend's `Conversation` and `ChatMessage` (stores/types/chat.ts,
lib/types/chat.ts); plain dicts in that JSON shape are accepted as well. Each function runs one
SQL call inside the caller's transaction (committing is the caller's business) and raises a
pgchat exception for an expected failure: ValidationError, PermissionDenied, Conflict,
NotMigrated. `pgchat.Client` / `pgchat.AsyncClient` offer the same calls as methods.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from pgchat._db import Query, Row, as_uuid, one, run
from pgchat.errors import ValidationError

__all__ = ["ChatMessage", "Conversation", "ExchangeResult", "SyncError", "SyncReport",
           "sync_user_conversations", "update_session_title", "write_chat_exchange"]


@dataclass
class ChatMessage:
    id: str
    content: str
    role: Literal["user", "assistant"]
    timestamp: datetime | str | None = None
    elapsed_time: float | None = None
    total_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    user_message_id: str | None = None
    model: str | None = None
    contentType: Literal["text", "markdown"] | None = None  # the frontend's camelCase names
    completion_id: str | None = None
    error: bool | None = None
    error_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The message as the frontend sends it (unset fields left out)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if isinstance(self.timestamp, datetime):
            out["timestamp"] = self.timestamp.isoformat()
        return out


@dataclass
class Conversation:
    id: str
    title: str | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    createdAt: datetime | str | None = None
    updatedAt: datetime | str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "messages": [m.to_json() for m in self.messages]}
        if self.title is not None:
            out["title"] = self.title
        for key in ("createdAt", "updatedAt"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True)
class SyncError:
    conversation_id: str | None
    message_id: str | None
    reason: str


@dataclass
class SyncReport:
    conversations_received: int = 0
    conversations_failed: int = 0
    sessions_inserted: int = 0
    sessions_existing: int = 0
    messages_inserted: int = 0
    messages_existing: int = 0
    messages_skipped_failed: int = 0
    errors: list[SyncError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.conversations_failed == 0

    def add(self, other: SyncReport) -> None:
        """Fold another batch's report into this one."""
        for name in ("conversations_received", "conversations_failed", "sessions_inserted",
                     "sessions_existing", "messages_inserted", "messages_existing",
                     "messages_skipped_failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SyncReport:
        errors = [SyncError(e.get("conversation_id"), e.get("message_id"), e["reason"])
                  for e in data.get("errors", [])]
        # Only the counts this client knows: a newer database may report more.
        known = {f.name for f in fields(cls)} - {"errors"}
        counts = {k: int(v) for k, v in data.items() if k in known}
        return cls(**counts, errors=errors)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _payload(item: Conversation | ChatMessage | Mapping[str, Any]) -> Any:
    return item.to_json() if isinstance(item, (Conversation, ChatMessage)) else item


Conversations = Sequence[Conversation | Mapping[str, Any]] | Mapping[str, Any]
Message = ChatMessage | Mapping[str, Any]


@dataclass(frozen=True)
class ExchangeResult:
    session_created: bool
    messages_written: int


def _report(rows: list[Row]) -> SyncReport:
    return SyncReport.from_json(one(rows))


def _exchange(rows: list[Row]) -> ExchangeResult:
    data = one(rows)
    return ExchangeResult(bool(data["session_created"]), int(data["messages_written"]))


def _flag(rows: list[Row]) -> bool:
    return bool(one(rows))


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _unstorable(value: Any, field_name: str) -> str | None:
    """Why jsonb cannot hold `value` (a NUL, a lone surrogate, NaN or Infinity), else None.

    PostgreSQL refuses such a value for the whole argument, before pgchat's SQL sees it, so
    the client checks each conversation and reports the bad ones itself (the others are sent).
    """
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        if found.group() == "\x00":
            return f"{field_name} contains a NUL character (\\u0000), which PostgreSQL cannot store"
        code = ord(found.group())
        return f"{field_name} contains a lone surrogate (\\u{code:04x}), which is not Unicode"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{field_name} must be a finite number, got {value}"
    if isinstance(value, Mapping):
        for key, item in value.items():
            reason = _unstorable(key, "a field name") or _unstorable(item, str(key))
            if reason:
                return reason
    elif isinstance(value, (list, tuple)):
        for item in value:
            reason = _unstorable(item, field_name)
            if reason:
                return reason
    return None


def _split_unstorable(items: list[Any]) -> tuple[list[Any], list[SyncError]]:
    """The conversations jsonb can hold, and a report line for each of the others."""
    kept: list[Any] = []
    errors: list[SyncError] = []
    for item in items:
        reason = None
        if isinstance(item, Mapping):
            conv_id = item.get("id") if isinstance(item.get("id"), str) else None
            messages = item.get("messages")
            for msg in messages if isinstance(messages, list) else []:
                reason = _unstorable(msg, "message")
                if reason:
                    msg_id = msg.get("id") if isinstance(msg, Mapping) else None
                    errors.append(SyncError(conv_id, msg_id if isinstance(msg_id, str) else None,
                                            reason))
                    break
            if reason is None:
                reason = _unstorable({k: v for k, v in item.items() if k != "messages"},
                                     "conversation")
                if reason:
                    errors.append(SyncError(conv_id, None, reason))
        else:
            reason = _unstorable(item, "conversation")
            if reason:
                errors.append(SyncError(None, None, reason))
        if reason is None:
            kept.append(item)
    return kept, errors


def sync_query(user_id: UUID | str, conversations: Conversations) -> Query[SyncReport]:
    """The sync call. A conversation holding a value jsonb cannot hold (a NUL, a lone
    surrogate, NaN) is reported as failed here and not sent; the others are written as usual."""
    if isinstance(conversations, (str, bytes)) or not isinstance(
            conversations, (Mapping, Sequence)):
        raise ValidationError("conversations must be a list of conversations "
                              'or {"conversations": [...]}')
    rejected: list[SyncError] = []
    if isinstance(conversations, Mapping):
        data: Any = dict(conversations)
        if isinstance(data.get("conversations"), list):
            data["conversations"], rejected = _split_unstorable(data["conversations"])
    else:
        data, rejected = _split_unstorable([_payload(c) for c in conversations])

    def read(rows: list[Row]) -> SyncReport:
        report = _report(rows)
        if rejected:
            report.add(SyncReport(conversations_received=len(rejected),
                                  conversations_failed=len(rejected), errors=rejected))
        return report

    return Query("SELECT public.sync_user_conversations(%s, %s)",
                 (as_uuid(user_id), Jsonb(data)), read)


def exchange_query(user_id: UUID | str, session_id: str, user_message: Message,
                   assistant_message: Message | None = None,
                   session_title: str | None = None) -> Query[ExchangeResult]:
    reply = None if assistant_message is None else Jsonb(_payload(assistant_message))
    return Query("SELECT public.write_chat_exchange(%s, %s, %s, %s, %s)",
                 (as_uuid(user_id), session_id, Jsonb(_payload(user_message)), reply,
                  session_title), _exchange)


def title_query(user_id: UUID | str, session_id: str, title: str) -> Query[bool]:
    return Query("SELECT public.update_session_title(%s, %s, %s)",
                 (as_uuid(user_id), session_id, title), _flag)


def sync_user_conversations(conn: psycopg.Connection[Any], user_id: UUID | str,
                            conversations: Conversations) -> SyncReport:
    """Insert-only upload of browser conversations (public.sync_user_conversations)."""
    return run(conn, sync_query(user_id, conversations))


def write_chat_exchange(
    conn: psycopg.Connection[Any], user_id: UUID | str, session_id: str,
    user_message: Message, assistant_message: Message | None = None,
    session_title: str | None = None,
) -> ExchangeResult:
    """Store one exchange in one statement (public.write_chat_exchange).

    Pass no assistant message (and an `error_message` on the user message) for a failed attempt;
    the retry that succeeds reuses the user message id and is counted once.
    """
    return run(conn, exchange_query(user_id, session_id, user_message, assistant_message,
                                    session_title))


def update_session_title(conn: psycopg.Connection[Any], user_id: UUID | str, session_id: str,
                         title: str) -> bool:
    """Rename a conversation; False (and nothing written) if the title is unchanged."""
    return run(conn, title_query(user_id, session_id, title))
