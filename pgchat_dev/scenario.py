"""The seeds' story as data, and the two ways of writing it: the legacy app's and pgchat's.

`story()` builds the conversations a user kept in the browser: three conversations written on
three different days, user/assistant pairs with token counts, and failed messages (flagged
`error: true`, never answered). `truth()` says what exactly-once counting must report for them.

`legacy_upload` writes conversations the way the app's /api/chat/sync endpoint did (upsert every
session and every message, failed ones included); `pgchat_upload` calls the insert-only
`sync_user_conversations`. Both take a psycopg connection and leave committing to the caller.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

MODELS = (
    "google/gemini-2.5-flash-lite", "moonshotai/kimi-k2:free", "deepseek/deepseek-r1-0528:free",
)


def story(
    prefix: str, *, start: datetime | None = None, conversations: int = 3,
    messages_per_conversation: int = 20, failed: int = 2, seed: int = 7,
) -> list[dict[str, Any]]:
    """Conversations in the frontend's JSON shape; ids start with `prefix` (keep it unique).

    Conversation k is written on day k (UTC) after `start`; `failed` user messages in total are
    flagged `error: true` and have no reply. Deterministic for a given seed.
    """
    rng = random.Random(seed)
    start = start or datetime(2025, 7, 21, 9, 0, tzinfo=UTC)
    failed_left = failed
    result = []
    for k in range(conversations):
        t = start + timedelta(days=k)
        messages: list[dict[str, Any]] = []
        n = 0
        while len(messages) < messages_per_conversation:
            n += 1
            t += timedelta(seconds=rng.randint(20, 90))
            user_id = f"{prefix}-c{k}-u{n}"
            tokens_in = rng.randint(5, 60)
            user: dict[str, Any] = {
                "id": user_id, "role": "user", "content": f"question {n} of conversation {k}",
                "timestamp": t.isoformat(), "input_tokens": tokens_in,
            }
            slots = messages_per_conversation - len(messages)
            if failed_left and (slots == 1 or rng.random() < 0.15):
                failed_left -= 1
                messages.append(user | {"error": True})
                continue
            if slots == 1:  # room for the question only: keep the conversation's length exact
                messages.append(user)
                break
            t += timedelta(seconds=rng.randint(1, 15))
            elapsed = rng.randint(1, 12)
            out = rng.randint(50, 900)
            model = rng.choice(MODELS)
            messages.append(user)
            messages.append({
                "id": f"{prefix}-c{k}-a{n}", "role": "assistant", "content": f"answer {n} " * 12,
                "timestamp": t.isoformat(), "output_tokens": out, "input_tokens": tokens_in,
                "total_tokens": tokens_in + out, "elapsed_time": elapsed,
                "model": model, "user_message_id": user_id, "contentType": "markdown",
                "completion_id": f"gen-{prefix}-{k}-{n}",
            })
        result.append({
            "id": f"{prefix}-c{k}", "title": f"Conversation {k + 1}",
            "createdAt": messages[0]["timestamp"], "updatedAt": messages[-1]["timestamp"],
            "messages": messages, "messageCount": len(messages),
        })
    return result


@dataclass
class Truth:
    """What exactly-once counting reports: each successful message once, on its own UTC day."""

    messages_sent: int = 0
    messages_received: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    sessions_created: int = 0
    days: Counter[date] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)

    @property
    def total_messages(self) -> int:
        return self.messages_sent + self.messages_received

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def truth(conversations: list[dict[str, Any]]) -> Truth:
    result = Truth()
    for conv in conversations:
        result.sessions_created += 1
        for m in conv["messages"]:
            if m.get("error") or m.get("error_message"):
                continue
            day = datetime.fromisoformat(m["timestamp"]).astimezone(UTC).date()
            result.days[day] += 1
            if m["role"] == "user":
                result.messages_sent += 1
                result.input_tokens += m.get("input_tokens") or 0
            else:
                result.messages_received += 1
                result.output_tokens += m.get("output_tokens") or 0
                result.models[m["model"]] += 1
    return result


_LEGACY_MESSAGE_UPSERT = """
INSERT INTO public.chat_messages (id, session_id, role, content, model, total_tokens,
    input_tokens, output_tokens, user_message_id, content_type, elapsed_time, completion_id,
    message_timestamp, error_message)
SELECT m.id, m.session_id, m.role, m.content, m.model, coalesce(m.total_tokens, 0),
    coalesce(m.input_tokens, 0), coalesce(m.output_tokens, 0), m.user_message_id,
    coalesce(m.content_type, 'text'), coalesce(m.elapsed_time, 0), m.completion_id,
    m.message_timestamp, m.error_message
FROM jsonb_to_recordset(%s) AS m(id text, session_id text, role text, content text, model text,
    total_tokens int, input_tokens int, output_tokens int, user_message_id text,
    content_type text, elapsed_time int, completion_id text, message_timestamp timestamptz,
    error_message text)
ON CONFLICT (id) DO UPDATE SET
    content = EXCLUDED.content, model = EXCLUDED.model, total_tokens = EXCLUDED.total_tokens,
    input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,
    user_message_id = EXCLUDED.user_message_id, content_type = EXCLUDED.content_type,
    elapsed_time = EXCLUDED.elapsed_time, completion_id = EXCLUDED.completion_id,
    message_timestamp = EXCLUDED.message_timestamp, error_message = EXCLUDED.error_message
"""


def message_rows(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """A conversation's messages as chat_messages rows (what the sync route sent)."""
    return [{
        "id": m["id"], "session_id": conversation["id"], "role": m["role"],
        "content": m["content"], "model": m.get("model"), "total_tokens": m.get("total_tokens"),
        "input_tokens": m.get("input_tokens"), "output_tokens": m.get("output_tokens"),
        "user_message_id": m.get("user_message_id"), "content_type": m.get("contentType"),
        "elapsed_time": m.get("elapsed_time"), "completion_id": m.get("completion_id"),
        "message_timestamp": m["timestamp"],
        "error_message": "failed" if m.get("error") else m.get("error_message"),
    } for m in conversation["messages"]]


def legacy_upload(conn: psycopg.Connection, user_id: UUID | str,
                  conversations: list[dict[str, Any]]) -> None:
    """What /api/chat/sync did: upsert every session, then upsert every message of each."""
    for conv in conversations:
        conn.execute(
            "INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
            " title = EXCLUDED.title, updated_at = EXCLUDED.updated_at",
            (conv["id"], str(user_id), conv.get("title") or "New Chat", conv["createdAt"],
             conv["updatedAt"]),
        )
        conn.execute(_LEGACY_MESSAGE_UPSERT, (Jsonb(message_rows(conv)),))


def legacy_write_messages(conn: psycopg.Connection, conversation_id: str,
                          messages: list[dict[str, Any]]) -> None:
    """What the legacy chat API did with an exchange: upsert these messages (the frontend's
    ChatMessage shape) into an existing conversation, one statement, legacy triggers per row."""
    rows = message_rows({"id": conversation_id, "messages": messages})
    conn.execute(_LEGACY_MESSAGE_UPSERT, (Jsonb(rows),))


# The floor: the same rows written by plain INSERTs (no upsert), for a schema without triggers.
_FLOOR_MESSAGE_INSERT = _LEGACY_MESSAGE_UPSERT[: _LEGACY_MESSAGE_UPSERT.index("ON CONFLICT")]


def floor_insert(conn: psycopg.Connection, user_id: UUID | str,
                 conversations: list[dict[str, Any]], *, create_sessions: bool = True) -> None:
    """The same write with nothing but plain INSERTs: the session row (unless
    `create_sessions` is false: it exists already), then one multi-row INSERT of its messages."""
    for conv in conversations:
        if create_sessions:
            conn.execute(
                "INSERT INTO public.chat_sessions (id, user_id, title, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (conv["id"], str(user_id), conv.get("title") or "New Chat", conv["createdAt"],
                 conv["updatedAt"]),
            )
        conn.execute(_FLOOR_MESSAGE_INSERT, (Jsonb(message_rows(conv)),))


def pgchat_upload(conn: psycopg.Connection, user_id: UUID | str,
                  conversations: list[dict[str, Any]]) -> dict[str, Any]:
    """pgchat's insert-only sync; returns its report."""
    row = conn.execute("SELECT public.sync_user_conversations(%s, %s)",
                       (str(user_id), Jsonb(conversations))).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


def create_user(conn: psycopg.Connection, email: str) -> UUID:
    """A user as Supabase Auth creates one (the profile follows by trigger)."""
    row = conn.execute("INSERT INTO auth.users (email) VALUES (%s) RETURNING id",
                       (email,)).fetchone()
    assert row is not None
    user_id: UUID = row[0]
    return user_id
