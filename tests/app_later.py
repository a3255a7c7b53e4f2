"""The app at a LATER state (sql/legacy/prod_later.sql), filled the way its routes write.

The app's later routes write through supabase-js, i.e. PostgREST: each call is one HTTP request,
one transaction on an `authenticator` connection that first runs
`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ..., true)`
(the service role's key gives `service_role` and claims without `sub`). An `.upsert()` becomes
`INSERT INTO t (cols) SELECT cols FROM json_to_recordset($1) AS x(col type, ...)
 ON CONFLICT (key) DO UPDATE SET col = EXCLUDED.col` for EVERY column sent (the union of the
keys of all rows; a row without a key sends NULL), `.update()` an `UPDATE ... WHERE` filter,
`.rpc()` a function call. Here the migration role stands in for `authenticator` (it is a member
of `authenticated` and `service_role`); every request opens its own connection.

Each route is a function of its own (`sign_in_sync`, `live_chat`, `delete_conversation`,
`profile_update`, `stripe_checkout`, `stripe_webhook_subscription`, `admin_update_user`,
`user_writes_own_counters`), so tests can call them one at a time before and after
`pgchat migrate`. Facts and their sources: docs/app-later-facts.md.

The data is deterministic (fixed ids and timestamps). What "true" means (as tests/legacy_data.py):
each successful user/assistant message counted once, on the UTC date of its message_timestamp; a
failed reply (error_message set) is not received, its tokens, time and model not counted; the
user message before it was still sent; generation_ms is the sum of the counted replies'
elapsed_ms; input tokens come from user messages, output tokens from replies.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from pgchat.paths import sql_dir

MODEL_A = "openai/gpt-4o-mini"
MODEL_B = "anthropic/claude-3-haiku"
# model_id: (prompt_price, completion_price), per token, as the app stores them (varchar)
PRICES = {MODEL_A: ("0.00000015", "0.0000006"), MODEL_B: ("0.00000025", "0.00000125")}
FIXED_NOW = "2025-11-20T12:00:00+00:00"  # `updated_at` the routes send (new Date() in the app)


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
    elapsed_ms: int = 0
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
    messages: tuple[Message, ...]

    def pair(self, n: int) -> tuple[Message, Message]:
        """The n-th (user message, reply) exchange."""
        return self.messages[2 * n], self.messages[2 * n + 1]

    @property
    def pairs(self) -> int:
        return len(self.messages) // 2


@dataclass(frozen=True)
class Daily:
    messages_sent: int = 0
    messages_received: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    generation_ms: int = 0
    models_used: dict[str, int] = field(default_factory=dict)


def conversation(conv_id: str, user_id: uuid.UUID, start: datetime, model: str, *,
                 pairs: int = 5, failed_replies: tuple[int, ...] = ()) -> Conversation:
    """`pairs` exchanges, a question every 2 minutes from `start`, its reply a minute later.
    A reply carries the prompt tokens too (the app prices it from them), as the app stores it."""
    messages: list[Message] = []
    for n in range(pairs):
        at = start + timedelta(minutes=2 * n)
        qid = f"{conv_id}-m{2 * n:02d}"
        prompt = 20 + 4 * n
        messages.append(Message(qid, conv_id, "user", f"{conv_id} question {n}", at,
                                model=model, input_tokens=prompt, total_tokens=prompt))
        reply = Message(f"{conv_id}-m{2 * n + 1:02d}", conv_id, "assistant",
                        f"{conv_id} answer {n}", at + timedelta(minutes=1), model=model,
                        user_message_id=qid, elapsed_ms=1500 + 125 * n)
        if n in failed_replies:
            reply = replace(reply, content="", error_message="Message failed")
        else:
            completion = 60 + 9 * n
            reply = replace(reply, input_tokens=prompt, output_tokens=completion,
                            total_tokens=prompt + completion, completion_id=f"gen-{conv_id}-{n}")
        messages.append(reply)
    return Conversation(conv_id, user_id, f"Chat {conv_id}", tuple(messages))


@dataclass(frozen=True)
class LaterData:
    users: tuple[User, ...]
    admin: User
    synced: tuple[Conversation, ...]  # uploaded by the sign-in sync (twice)
    reuploaded: str  # the id of a synced conversation deleted and uploaded again
    live: tuple[Conversation, ...]  # written exchange by exchange through the messages route

    @property
    def conversations(self) -> tuple[Conversation, ...]:
        return self.synced + self.live

    def conversations_of(self, user_id: uuid.UUID) -> tuple[Conversation, ...]:
        return tuple(c for c in self.synced if c.user_id == user_id)


def later_plan() -> LaterData:
    """3 users (one an admin), 4 conversations over 3 UTC days; one of them crosses midnight,
    two have a failed reply, one is deleted and uploaded again, one is written live."""
    alice = User(uuid.UUID("00000000-0000-4000-8000-00000000a1ce"), "alice@later.example", "Alice")
    bob = User(uuid.UUID("00000000-0000-4000-8000-000000000b0b"), "bob@later.example", "Bob")
    carol = User(uuid.UUID("00000000-0000-4000-8000-00000000ca01"), "carol@later.example", "Carol")
    return LaterData(
        users=(alice, bob),
        admin=carol,
        synced=(
            conversation("later-a1", alice.id, datetime(2025, 11, 3, 9, 0, tzinfo=UTC), MODEL_A,
                         pairs=6, failed_replies=(2,)),
            # 23:54 on 3 November to 00:01 on 4 November: two UTC days.
            conversation("later-a2", alice.id, datetime(2025, 11, 3, 23, 54, tzinfo=UTC),
                         MODEL_B, pairs=4),
            conversation("later-b1", bob.id, datetime(2025, 11, 4, 14, 0, tzinfo=UTC), MODEL_A,
                         pairs=5, failed_replies=(4,)),
        ),
        reuploaded="later-b1",
        live=(conversation("later-a3", alice.id, datetime(2025, 11, 5, 8, 30, tzinfo=UTC),
                           MODEL_B, pairs=3),),
    )


def true_daily(conversations: Iterable[Conversation]) -> dict[tuple[uuid.UUID, date], Daily]:
    """The true usage per (user, UTC day) of `conversations`."""
    acc: dict[tuple[uuid.UUID, date], Counter[str]] = {}
    models: dict[tuple[uuid.UUID, date], Counter[str]] = {}
    for conv in conversations:
        for m in conv.messages:
            key = (conv.user_id, m.message_timestamp.astimezone(UTC).date())
            c = acc.setdefault(key, Counter())
            if m.role == "user":
                c["messages_sent"] += 1
                c["input_tokens"] += m.input_tokens
            elif m.role == "assistant" and not m.failed:
                c["messages_received"] += 1
                c["output_tokens"] += m.output_tokens
                c["generation_ms"] += m.elapsed_ms
                if m.model:
                    models.setdefault(key, Counter())[m.model] += 1
    return {
        key: Daily(c["messages_sent"], c["messages_received"], c["input_tokens"],
                   c["output_tokens"], c["input_tokens"] + c["output_tokens"],
                   c["generation_ms"], dict(models.get(key, {})))
        for key, c in acc.items()
    }


def true_messages(conversations: Iterable[Conversation]) -> int:
    """How many messages count as usage (sent + received) in `conversations`."""
    return sum(d.messages_sent + d.messages_received for d in true_daily(conversations).values())


def counted_daily(conn: psycopg.Connection, user_id: uuid.UUID) -> dict[date, Daily]:
    """user_usage_daily of one user, in the shape of `true_daily` (rows of all-zero counters,
    such as a row the pricing trigger created for estimated_cost alone, left out)."""
    rows = conn.execute(
        "select usage_date, messages_sent, messages_received, input_tokens, output_tokens,"
        " total_tokens, generation_ms, models_used from public.user_usage_daily"
        " where user_id = %s order by usage_date", (user_id,)).fetchall()
    out = {}
    for r in rows:
        daily = Daily(*(int(v or 0) for v in r[1:7]), dict(r[7] or {}))
        if daily != Daily():
            out[r[0]] = daily
    return out


# --- PostgREST, one request at a time -----------------------------------------------------------


@contextmanager
def request(dsn: str, user_id: uuid.UUID | None) -> Iterator[psycopg.Connection]:
    """One PostgREST request: its own connection and transaction, as `authenticated` with the
    user's JWT claims (`user_id`), or as `service_role` (None); committed at the end, rolled
    back if it raised."""
    role = "authenticated" if user_id is not None else "service_role"
    claims: dict[str, str] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    with psycopg.connect(dsn) as conn:
        conn.execute("select set_config('role', %s, true),"
                     " set_config('request.jwt.claims', %s, true)", (role, json.dumps(claims)))
        yield conn


def _types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute"
        " where attrelid = %s::regclass and attnum > 0 and not attisdropped and attgenerated = ''",
        (f"public.{table}",)).fetchall()
    return {r[0]: r[1] for r in rows}


def _json(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _recordset(conn: psycopg.Connection, table: str, cols: Sequence[str]) -> sql.Composable:
    types = _types(conn, table)
    return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c]))
                              for c in cols)


def _write(conn: psycopg.Connection, table: str, rows: Sequence[dict[str, object]],
           on_conflict: Sequence[str] | None, returning: bool) -> list[tuple[Any, ...]]:
    cols = list(dict.fromkeys(k for r in rows for k in r))  # supabase-js: the union of the keys
    ident = sql.SQL(", ").join(map(sql.Identifier, cols))
    query = sql.SQL("INSERT INTO public.{t} ({c}) SELECT {c} FROM json_to_recordset(%s) AS x({d})"
                    ).format(t=sql.Identifier(table), c=ident, d=_recordset(conn, table, cols))
    if on_conflict:
        query += sql.SQL(" ON CONFLICT ({k}) DO UPDATE SET {s}").format(
            k=sql.SQL(", ").join(map(sql.Identifier, on_conflict)),
            s=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                 for c in cols))
    if returning:
        query += sql.SQL(" RETURNING *")
    payload = json.dumps([{k: _json(v) for k, v in r.items()} for r in rows])
    cur = conn.execute(query, (payload,))
    return cur.fetchall() if returning else []


def upsert(conn: psycopg.Connection, table: str, rows: Sequence[dict[str, object]], *,
           on_conflict: Sequence[str] = ("id",), returning: bool = False) -> list[tuple[Any, ...]]:
    """supabase-js `.from(table).upsert(rows, {onConflict})`, `.select()` if `returning`."""
    return _write(conn, table, rows, on_conflict, returning)


def insert(conn: psycopg.Connection, table: str, rows: Sequence[dict[str, object]], *,
           returning: bool = False) -> list[tuple[Any, ...]]:
    """supabase-js `.from(table).insert(rows)`."""
    return _write(conn, table, rows, None, returning)


def update(conn: psycopg.Connection, table: str, values: dict[str, object],
           where: dict[str, object], *, returning: bool = False) -> int:
    """supabase-js `.from(table).update(values).eq(k, v)...`; the number of rows changed."""
    cols = list(values)
    query = sql.SQL("UPDATE public.{t} SET {s} FROM json_to_record(%s) AS x({d}) WHERE {w}").format(
        t=sql.Identifier(table),
        s=sql.SQL(", ").join(sql.SQL("{c} = x.{c}").format(c=sql.Identifier(c)) for c in cols),
        d=_recordset(conn, table, cols),
        w=sql.SQL(" AND ").join(sql.SQL("{t}.{c} = %s").format(t=sql.Identifier(table),
                                                              c=sql.Identifier(c))
                                for c in where))
    if returning:
        query += sql.SQL(" RETURNING {t}.*").format(t=sql.Identifier(table))
    payload = json.dumps({k: _json(v) for k, v in values.items()})
    cur = conn.execute(query, (payload, *(_json(v) for v in where.values())))
    return cur.rowcount


def delete(conn: psycopg.Connection, table: str, where: dict[str, object]) -> int:
    """supabase-js `.from(table).delete().eq(k, v)...`."""
    query = sql.SQL("DELETE FROM public.{t} WHERE {w}").format(
        t=sql.Identifier(table),
        w=sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in where))
    return conn.execute(query, tuple(_json(v) for v in where.values())).rowcount


def rpc(conn: psycopg.Connection, function: str, args: dict[str, object]) -> object:
    """supabase-js `.rpc(function, args)`: named arguments."""
    query = sql.SQL("SELECT public.{f}({a})").format(
        f=sql.Identifier(function),
        a=sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(k)) for k in args))
    row = conn.execute(query, tuple(_json(v) for v in args.values())).fetchone()
    return row[0] if row else None


# --- the routes ---------------------------------------------------------------------------------


def _message_row(m: Message) -> dict[str, object]:
    """The columns both chat routes send for a message."""
    return {
        "id": m.id, "session_id": m.session_id, "role": m.role, "content": m.content,
        "model": m.model, "total_tokens": m.total_tokens, "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens, "user_message_id": m.user_message_id,
        "content_type": "text", "elapsed_ms": m.elapsed_ms, "completion_id": m.completion_id,
        "reasoning": None, "reasoning_details": None, "has_websearch": False,
        "websearch_result_count": 0, "message_timestamp": m.message_timestamp,
        "is_streaming": False,
    }


def sign_in_sync(dsn: str, user_id: uuid.UUID, conversations: Iterable[Conversation]
                 ) -> dict[str, Any]:
    """POST /api/chat/sync (src/app/api/chat/sync/route.ts), as the user: per conversation one
    request upserting the session WITH its statistics columns (`.upsert(...).select().single()`),
    then one request upserting all its messages (failed replies carry error_message, the others
    send no such key: NULL). Errors are caught per conversation, as the route does."""
    result: dict[str, Any] = {"synced": 0, "errors": 0, "details": []}
    for conv in conversations:
        last = conv.messages[-1]
        try:
            with request(dsn, user_id) as conn:
                upsert(conn, "chat_sessions", [{
                    "id": conv.id, "user_id": user_id, "title": conv.title,
                    "message_count": len(conv.messages),
                    "total_tokens": sum(m.total_tokens for m in conv.messages),
                    "last_model": last.model, "last_message_preview": last.content[:100],
                    "last_message_timestamp": last.message_timestamp,
                    "updated_at": last.message_timestamp,
                }], returning=True)
            rows = []
            for m in conv.messages:
                row = _message_row(m) | {"has_attachments": False, "attachment_count": 0}
                if m.failed:
                    row["error_message"] = "Message failed"
                rows.append(row)
            with request(dsn, user_id) as conn:
                upsert(conn, "chat_messages", rows)
            result["synced"] += 1
            result["details"].append({"conversationId": conv.id, "status": "synced"})
        except psycopg.Error as exc:
            result["errors"] += 1
            result["details"].append({"conversationId": conv.id, "status": "error",
                                      "error": f"{exc.sqlstate} {exc}"})
    return result


def live_chat(dsn: str, user_id: uuid.UUID, conv: Conversation, n: int) -> str | None:
    """POST /api/chat/messages (src/app/api/chat/messages/route.ts) for exchange `n` of `conv`,
    as the user: the session created if missing (id, user_id, title, updated_at), the user
    message and the reply upserted one request each (`onConflict: 'id'`, `.select().single()`),
    the session's messages counted and summed (two reads), then its OWN statistics UPDATE of
    the session. A failing message write raises; the statistics UPDATE's error is returned
    (the route logs it and answers 200), None when it succeeded."""
    question, reply = conv.pair(n)
    with request(dsn, user_id) as conn:
        exists = conn.execute("select 1 from public.chat_sessions where id = %s and user_id = %s",
                              (conv.id, user_id)).fetchone()
    if not exists:
        with request(dsn, user_id) as conn:
            insert(conn, "chat_sessions", [{"id": conv.id, "user_id": user_id,
                                            "title": conv.title, "updated_at": FIXED_NOW}],
                   returning=True)
    written = []
    for m in (question, reply):
        row = _message_row(m) | {
            "metadata": {}, "error_message": m.error_message}
        with request(dsn, user_id) as conn:
            written.append(upsert(conn, "chat_messages", [row], returning=True)[0])
    with request(dsn, user_id) as conn:
        count, tokens = conn.execute(
            "select count(*), coalesce(sum(total_tokens), 0) from public.chat_messages"
            " where session_id = %s", (conv.id,)).fetchone() or (0, 0)
    try:
        with request(dsn, user_id) as conn:
            update(conn, "chat_sessions", {
                "message_count": count, "total_tokens": tokens, "last_model": reply.model,
                "last_message_preview": reply.content[:100],
                "last_message_timestamp": reply.message_timestamp, "updated_at": FIXED_NOW,
            }, {"id": conv.id})
    except psycopg.Error as exc:
        return f"{exc.sqlstate} {exc}"
    return None


def delete_conversation(dsn: str, user_id: uuid.UUID, conv_id: str) -> None:
    """DELETE /api/chat/sessions?id= (src/app/api/chat/sessions/route.ts), as the user: its
    messages, then the session, one request each."""
    with request(dsn, user_id) as conn:
        delete(conn, "chat_messages", {"session_id": conv_id})
    with request(dsn, user_id) as conn:
        delete(conn, "chat_sessions", {"id": conv_id, "user_id": user_id})


def profile_update(dsn: str, user_id: uuid.UUID) -> int:
    """PUT /api/user/data (src/app/api/user/data/route.ts), as the user: preferences and
    updated_at of their own profile. The number of rows updated."""
    with request(dsn, user_id) as conn:
        return update(conn, "profiles", {
            "updated_at": FIXED_NOW,
            "ui_preferences": {"theme": "light", "auto_save": True, "sidebar_width": 300,
                               "show_token_count": True, "code_highlighting": True},
            "default_model": MODEL_B, "temperature": 0.4,
            "system_prompt": "You are a terse assistant.", "personality_preset": "concise",
        }, {"id": user_id})


def stripe_checkout(dsn: str, user_id: uuid.UUID, customer_id: str) -> int:
    """POST /api/stripe/checkout-session, as the user (src/app/api/stripe/checkout-session/
    route.ts uses the user's client): reads the profile, links the new Stripe customer."""
    with request(dsn, user_id) as conn:
        conn.execute("select id, email, stripe_customer_id from public.profiles where id = %s",
                     (user_id,)).fetchone()
    with request(dsn, user_id) as conn:
        return update(conn, "profiles", {"stripe_customer_id": customer_id}, {"id": user_id})


def stripe_webhook_subscription(dsn: str, event_id: str, customer_id: str,
                                subscription_id: str, tier: str = "pro") -> int:
    """POST /api/stripe/webhook, `customer.subscription.created` (src/app/api/stripe/webhook/
    route.ts), as the service role: event seen?, profile by customer, subscriptions upsert
    (onConflict stripe_subscription_id), the profile's subscription columns, the event recorded.
    The number of profiles updated."""
    with request(dsn, None) as conn:
        seen = conn.execute("select id from public.stripe_events where id = %s",
                            (event_id,)).fetchone()
    if seen:
        return 0
    with request(dsn, None) as conn:
        row = conn.execute("select id from public.profiles where stripe_customer_id = %s",
                           (customer_id,)).fetchone()
    assert row is not None, f"no profile with customer {customer_id}"
    with request(dsn, None) as conn:
        upsert(conn, "subscriptions", [{
            "user_id": row[0], "stripe_customer_id": customer_id,
            "stripe_subscription_id": subscription_id, "stripe_price_id": f"price_{tier}",
            "status": "active", "current_period_start": "2025-11-20T00:00:00+00:00",
            "current_period_end": "2025-12-20T00:00:00+00:00", "cancel_at_period_end": False,
            "canceled_at": None,
        }], on_conflict=("stripe_subscription_id",))
    with request(dsn, None) as conn:
        changed = update(conn, "profiles", {"subscription_status": "active",
                                            "subscription_tier": tier,
                                            "subscription_updated_at": FIXED_NOW},
                         {"id": row[0]})
    with request(dsn, None) as conn:
        insert(conn, "stripe_events", [{"id": event_id}])
    return changed


def admin_update_user(dsn: str, actor: uuid.UUID | None, target: uuid.UUID, *,
                      tier: str = "pro", account_type: str = "user", credits: int = 50) -> int:
    """PATCH /api/admin/users (src/app/api/admin/users/route.ts) for one user: the app runs it
    with the ADMIN's JWT (`actor`); None runs the same writes as the service role. rpc
    update_user_tier, then account_type / credits / updated_at of the target's profile, then
    rpc write_admin_audit. The number of profiles updated by the direct UPDATE."""
    with request(dsn, actor) as conn:
        result = rpc(conn, "update_user_tier", {"user_uuid": target, "new_tier": tier})
    assert isinstance(result, dict) and result.get("success"), result
    with request(dsn, actor) as conn:
        changed = update(conn, "profiles", {"account_type": account_type, "credits": credits,
                                            "updated_at": FIXED_NOW}, {"id": target})
    with request(dsn, actor) as conn:
        rpc(conn, "write_admin_audit", {
            "p_actor_user_id": actor, "p_action": "user.update", "p_target": str(target),
            "p_payload": json.dumps({"tier": tier, "account_type": account_type,
                                     "credits": credits})})
    return changed


def user_writes_own_counters(dsn: str, user_id: uuid.UUID, day: date, session_id: str) -> None:
    """A user writing their own counters through PostgREST (the policies let them): an upsert of
    their user_usage_daily row of `day`, their profile's usage_stats, and the statistics of a
    session of theirs (plain UPDATE)."""
    with request(dsn, user_id) as conn:
        upsert(conn, "user_usage_daily", [{
            "user_id": user_id, "usage_date": day, "messages_sent": 9999,
            "messages_received": 9999, "input_tokens": 9999, "output_tokens": 9999,
            "total_tokens": 19998, "generation_ms": 9999999, "sessions_created": 99,
            "models_used": {"fake/model": 9999},
        }], on_conflict=("user_id", "usage_date"))
    with request(dsn, user_id) as conn:
        update(conn, "profiles", {"usage_stats": {"total_messages": 9999, "total_tokens": 9999,
                                                  "sessions_created": 99}}, {"id": user_id})
    with request(dsn, user_id) as conn:
        update(conn, "chat_sessions", {"message_count": 9999, "total_tokens": 9999,
                                       "last_message_preview": "forged"}, {"id": session_id})


# --- building the fixture -----------------------------------------------------------------------


def sign_up(admin: psycopg.Connection, users: Iterable[User]) -> None:
    """Supabase Auth creates the users (their profiles through the app's trigger); commit."""
    for user in users:
        admin.execute(
            "insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s::jsonb)",
            (user.id, user.email, json.dumps({"full_name": user.full_name})))
    admin.commit()


def build_prod_later(admin: psycopg.Connection, migrator_dsn: str,
                     data: LaterData | None = None) -> LaterData:
    """The app's schema at its later state (sql/legacy/prod_later.sql, run as the migration
    role), then its history, written the way its routes write: users sign up; the operator
    makes Carol an admin and lists the models with prices; every user's conversations are
    uploaded by the sign-in sync, twice; Bob deletes a conversation and it is uploaded again;
    Alice chats live; Alice saves preferences and subscribes through Stripe; Carol (admin)
    changes Bob's tier, credits and account type."""
    data = data or later_plan()
    with psycopg.connect(migrator_dsn) as migrator:
        migrator.execute((sql_dir() / "legacy" / "prod_later.sql").read_text())
        migrator.commit()
        sign_up(admin, (*data.users, data.admin))
        migrator.execute("update public.profiles set account_type = 'admin' where id = %s",
                         (data.admin.id,))
        for model_id, (prompt, completion) in PRICES.items():
            migrator.execute(
                "insert into public.model_access (model_id, model_name, prompt_price,"
                " completion_price, status, is_free, is_pro) values (%s, %s, %s, %s, 'active',"
                " true, true)", (model_id, model_id.split("/")[1], prompt, completion))
        migrator.commit()
    for _ in range(2):
        for user in data.users:
            mine = data.conversations_of(user.id)
            result = sign_in_sync(migrator_dsn, user.id, mine)
            assert result["errors"] == 0, result
    gone = next(c for c in data.synced if c.id == data.reuploaded)
    delete_conversation(migrator_dsn, gone.user_id, gone.id)
    assert sign_in_sync(migrator_dsn, gone.user_id, [gone])["errors"] == 0
    alice, bob = data.users
    for conv in data.live:
        for n in range(conv.pairs):
            assert live_chat(migrator_dsn, conv.user_id, conv, n) is None
    assert profile_update(migrator_dsn, alice.id) == 1
    assert stripe_checkout(migrator_dsn, alice.id, "cus_later_alice") == 1
    assert stripe_webhook_subscription(migrator_dsn, "evt_later_1", "cus_later_alice",
                                       "sub_later_alice") == 1
    assert admin_update_user(migrator_dsn, data.admin.id, bob.id) == 1
    return data
