"""The legacy fixture: a database as the app's old SQL scripts and its sync endpoint left it.

Built WITHOUT pgchat's runner: `migrations/0001_supabase_standin.sql` is executed raw (it provides
the `auth` schema a Supabase project has), then `sql/legacy/schema.sql`, then the conversations
below are written the way the app wrote them: users sign up through `auth.users` (the legacy
trigger creates their profiles), sessions and messages are inserted one by one (the legacy
triggers book usage), then everything is re-synced a few times through the legacy
`sync_user_conversations()`, an `INSERT ... ON CONFLICT (id) DO UPDATE` per row, which inflates
the legacy counters again on every pass.

The data is deterministic (fixed ids and timestamps), so `legacy_plan()` describes it without a
database, and `LegacyData` knows the true counts a correct implementation must arrive at.

What "true" means here (the assumptions, spelled out):
- usage is booked on the UTC date of each message's `message_timestamp` (not on the day of the
  write, which is what the legacy trigger does);
- a message with `error_message` set is a failed reply: it is not a received message, and its
  tokens (zero here) and model are not counted; the user message before it was still sent;
- a session's statistics count every stored message of it, failed ones included.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import psycopg

from pgchat.paths import migrations_dir, sql_dir

RESYNCS = 2  # re-sync passes after the first write: legacy usage counters end up 3x the truth

MODEL_A = "deepseek/deepseek-r1-0528:free"
MODEL_B = "openai/gpt-4o-mini"


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    full_name: str


@dataclass(frozen=True)
class Message:
    id: str
    session_id: str
    role: str
    content: str
    message_timestamp: datetime
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    elapsed_time: int = 0
    user_message_id: str | None = None
    completion_id: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_message is not None


@dataclass(frozen=True)
class Conversation:
    id: str
    user_id: uuid.UUID
    title: str
    created_at: datetime
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class DailyUsage:
    messages_sent: int = 0
    messages_received: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    sessions_created: int = 0
    models_used: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionStats:
    message_count: int
    total_tokens: int
    last_message_timestamp: datetime


@dataclass(frozen=True)
class LegacyData:
    users: tuple[User, ...]
    conversations: tuple[Conversation, ...]
    resyncs: int = RESYNCS

    @property
    def messages(self) -> tuple[Message, ...]:
        return tuple(m for c in self.conversations for m in c.messages)

    @property
    def failed_messages(self) -> tuple[Message, ...]:
        return tuple(m for m in self.messages if m.failed)

    def owner(self, session_id: str) -> uuid.UUID:
        return next(c.user_id for c in self.conversations if c.id == session_id)

    def expected_daily_usage(self) -> dict[tuple[uuid.UUID, date], DailyUsage]:
        """The true usage per (user, UTC day)."""
        acc: dict[tuple[uuid.UUID, date], Counter[str]] = {}
        models: dict[tuple[uuid.UUID, date], Counter[str]] = {}
        for conv in self.conversations:
            key = (conv.user_id, conv.created_at.astimezone(UTC).date())
            acc.setdefault(key, Counter())["sessions_created"] += 1
            for m in conv.messages:
                key = (conv.user_id, m.message_timestamp.astimezone(UTC).date())
                c = acc.setdefault(key, Counter())
                if m.role == "user":
                    c["messages_sent"] += 1
                    c["input_tokens"] += m.input_tokens
                elif m.role == "assistant" and not m.failed:
                    c["messages_received"] += 1
                    c["output_tokens"] += m.output_tokens
                    if m.model:
                        models.setdefault(key, Counter())[m.model] += 1
        return {
            key: DailyUsage(
                messages_sent=c["messages_sent"],
                messages_received=c["messages_received"],
                input_tokens=c["input_tokens"],
                output_tokens=c["output_tokens"],
                total_tokens=c["input_tokens"] + c["output_tokens"],
                sessions_created=c["sessions_created"],
                models_used=dict(models.get(key, {})),
            )
            for key, c in acc.items()
        }

    def expected_session_stats(self) -> dict[str, SessionStats]:
        """The true statistics columns of every chat session."""
        return {
            c.id: SessionStats(
                message_count=len(c.messages),
                total_tokens=sum(m.total_tokens for m in c.messages),
                last_message_timestamp=max(m.message_timestamp for m in c.messages),
            )
            for c in self.conversations
        }


def _conversation(
    conv_id: str,
    user_id: uuid.UUID,
    start: datetime,
    model: str,
    *,
    pairs: int = 10,
    failed_replies: tuple[int, ...] = (),
) -> Conversation:
    """`pairs` user/assistant exchanges, one message a minute from `start`."""
    messages: list[Message] = []
    for n in range(pairs):
        at = start + timedelta(minutes=2 * n)
        question_id = f"{conv_id}-m{2 * n:02d}"
        input_tokens = 12 + 3 * n
        messages.append(Message(
            id=question_id, session_id=conv_id, role="user", content=f"{conv_id} question {n}",
            message_timestamp=at, input_tokens=input_tokens, total_tokens=input_tokens,
        ))
        reply = Message(
            id=f"{conv_id}-m{2 * n + 1:02d}", session_id=conv_id, role="assistant",
            content=f"{conv_id} answer {n}", message_timestamp=at + timedelta(minutes=1),
            model=model, user_message_id=question_id, elapsed_time=900 + 25 * n,
        )
        if n in failed_replies:
            reply = replace(reply, content="", error_message="upstream provider timeout")
        else:
            output_tokens = 40 + 7 * n
            reply = replace(reply, output_tokens=output_tokens, total_tokens=output_tokens,
                            completion_id=f"gen-{conv_id}-{n}")
        messages.append(reply)
    return Conversation(conv_id, user_id, f"Legacy chat {conv_id}", start, tuple(messages))


def legacy_plan() -> LegacyData:
    """The legacy data set: 2 users, 3 conversations of 20 messages over 3 UTC days."""
    alice = User(uuid.UUID("00000000-0000-4000-8000-0000000a11ce"), "alice@example.com", "Alice")
    bob = User(uuid.UUID("00000000-0000-4000-8000-000000000b0b"), "bob@example.com", "Bob")
    return LegacyData(
        users=(alice, bob),
        conversations=(
            _conversation("legacy-a1", alice.id, datetime(2025, 3, 1, 9, 0, tzinfo=UTC), MODEL_A,
                          failed_replies=(3,)),
            # Starts at 23:50 on 2 March and ends on 3 March: usage falls on two days.
            _conversation("legacy-a2", alice.id, datetime(2025, 3, 2, 23, 50, tzinfo=UTC),
                          MODEL_B),
            # Its very last reply failed.
            _conversation("legacy-b1", bob.id, datetime(2025, 3, 3, 14, 0, tzinfo=UTC), MODEL_A,
                          failed_replies=(9,)),
        ),
    )


def install_legacy_schema(conn: psycopg.Connection) -> None:
    """Supabase's auth (pgchat's stand-in, executed raw) plus the legacy schema; commit."""
    conn.execute((migrations_dir() / "0001_supabase_standin.sql").read_text())
    # A real Supabase auth schema is not pgchat's stand-in: drop the stand-in's marker, so
    # pgchat treats this database exactly like a Supabase project it never touched.
    conn.execute("COMMENT ON SCHEMA auth IS NULL")
    conn.execute((sql_dir() / "legacy" / "schema.sql").read_text())
    conn.commit()


_INSERT_MESSAGE = """
    insert into public.chat_messages (
        id, session_id, role, content, model, total_tokens, input_tokens, output_tokens,
        user_message_id, elapsed_time, completion_id, message_timestamp, error_message)
    values (%(id)s, %(session_id)s, %(role)s, %(content)s, %(model)s, %(total_tokens)s,
            %(input_tokens)s, %(output_tokens)s, %(user_message_id)s, %(elapsed_time)s,
            %(completion_id)s, %(message_timestamp)s, %(error_message)s)
"""


def _sync_payload(data: LegacyData, user_id: uuid.UUID) -> str:
    """The app's sync request body for one user (the keys `sync_user_conversations` reads)."""
    return json.dumps([
        {
            "id": c.id,
            "title": c.title,
            "createdAt": c.created_at.isoformat(),
            "updatedAt": c.messages[-1].message_timestamp.isoformat(),
            "messages": [
                {
                    "id": m.id, "role": m.role, "content": m.content, "model": m.model,
                    "total_tokens": m.total_tokens, "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens, "user_message_id": m.user_message_id,
                    "elapsed_time": m.elapsed_time, "completion_id": m.completion_id,
                    "timestamp": m.message_timestamp.isoformat(),
                }
                for m in c.messages
            ],
        }
        for c in data.conversations
        if c.user_id == user_id
    ])


def write_legacy_data(conn: psycopg.Connection, data: LegacyData) -> None:
    """Write `data` through the legacy triggers, then re-sync it `data.resyncs` times; commit."""
    for user in data.users:
        conn.execute(
            "insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s::jsonb)",
            (user.id, user.email, json.dumps({"full_name": user.full_name})),
        )
    for conv in data.conversations:
        conn.execute(
            "insert into public.chat_sessions (id, user_id, title, created_at, updated_at)"
            " values (%s, %s, %s, %s, %s)",
            (conv.id, conv.user_id, conv.title, conv.created_at, conv.created_at),
        )
        for m in conv.messages:  # one statement per message, as the app saved them
            conn.execute(_INSERT_MESSAGE, asdict(m))
    conn.commit()
    for _ in range(data.resyncs):
        for user in data.users:
            conn.execute(
                "select public.sync_user_conversations(%s, %s::jsonb)",
                (user.id, _sync_payload(data, user.id)),
            )
        conn.commit()


def build_legacy(conn: psycopg.Connection, data: LegacyData | None = None) -> LegacyData:
    """Build the whole legacy fixture in the (empty) database of `conn`; return what it holds."""
    data = data or legacy_plan()
    install_legacy_schema(conn)
    write_legacy_data(conn, data)
    return data


# --- the production schema at 7c23e21, on Supabase's permission model ---------------------------


def prod_sync_payload(data: LegacyData, user_id: uuid.UUID) -> str:
    """The sync request body the app at 7c23e21 sent for one user: every key its
    `sync_user_conversations` reads (camelCase session fields, an `error` flag per message)."""
    return json.dumps([
        {
            "id": c.id,
            "title": c.title,
            "messageCount": len(c.messages),
            "totalTokens": sum(m.total_tokens for m in c.messages),
            "lastModel": c.messages[-1].model,
            "lastMessagePreview": c.messages[-1].content[:100],
            "lastMessageTimestamp": c.messages[-1].message_timestamp.isoformat(),
            "createdAt": c.created_at.isoformat(),
            "updatedAt": c.messages[-1].message_timestamp.isoformat(),
            "messages": [
                {
                    "id": m.id, "role": m.role, "content": m.content, "model": m.model,
                    "total_tokens": m.total_tokens, "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens, "user_message_id": m.user_message_id,
                    "timestamp": m.message_timestamp.isoformat(), "error": m.failed,
                }
                for m in c.messages
            ],
        }
        for c in data.conversations
        if c.user_id == user_id
    ])


def prod_sync(conn: psycopg.Connection, user_id: uuid.UUID, payload: str) -> object:
    """Call `sync_user_conversations` as the app did: as `authenticated`, with the user's JWT
    claims; commit; return its result."""
    conn.execute("set local role authenticated")
    conn.execute("select set_config('request.jwt.claims', %s, true)",
                 (json.dumps({"sub": str(user_id), "role": "authenticated"}),))
    row = conn.execute("select public.sync_user_conversations(%s, %s::jsonb)",
                       (user_id, payload)).fetchone()
    conn.commit()
    assert row is not None
    return row[0]


def build_prod_7c23e21(admin: psycopg.Connection, migrator: psycopg.Connection,
                       data: LegacyData | None = None) -> LegacyData:
    """The production schema at 7c23e21 (sql/legacy/prod_7c23e21.sql, run as the migration
    role), filled the way the app filled it: users sign up through auth.users (as Supabase
    Auth, `admin`), then every conversation is synced through the app's own
    `sync_user_conversations` 1 + `data.resyncs` times, each pass counting it again."""
    data = data or legacy_plan()
    migrator.execute((sql_dir() / "legacy" / "prod_7c23e21.sql").read_text())
    migrator.commit()
    for user in data.users:
        admin.execute(
            "insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s::jsonb)",
            (user.id, user.email, json.dumps({"full_name": user.full_name})),
        )
    admin.commit()
    for _ in range(1 + data.resyncs):
        for user in data.users:
            result = prod_sync(migrator, user.id, prod_sync_payload(data, user.id))
            assert result == {"synced": sum(c.user_id == user.id for c in data.conversations),
                              "errors": 0, "details": []}, result
    return data
