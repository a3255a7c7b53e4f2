"""`pgchat demo`: the seeds' story replayed twice, on the legacy schema and on pgchat's migrations.

Both sides live on the same server. The pgchat side is the target database itself (migrated
first; the demo's data is left there, so that `pgchat usage show` and `pgchat usage verify` can
look at it afterwards). The legacy side is a database of its own, `<target>_legacy_demo`, dropped
and recreated on every run from the auth stand-in (migration 0001, executed raw, as a Supabase
project would have it) and the legacy fixture `sql/legacy/schema.sql`, bugs included.

The story (`pgchat_dev.scenario.story`, the one the tests use) is written on both sides, step by
step: the sign-in upload, the same upload again and again, a failed message and its retry (seed 002:
the retry reuses the message id), deleting a conversation and uploading it once more. After each
step the usage counters of both sides are read and set beside the true, exactly-once value
(`pgchat_dev.scenario.truth`); the rows each step wrote are read from `pg_stat_xact_user_tables`
inside the step's transactions, before they commit, so other activity cannot blur them.

Every function here returns data; `render` turns a `DemoResult` into the text for people.
"""

from __future__ import annotations

import hashlib
import shlex
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgchat import chat as chat_api
from pgchat import migrate as migrations
from pgchat import server
from pgchat import usage as usage_api
from pgchat.connect import EMBEDDED, Target, connect, describe, resolve
from pgchat.errors import ConnectionFailed, PermissionDenied, UsageError, ValidationError
from pgchat.paths import migrations_dir, sql_dir
from pgchat_dev import scenario

Progress = Callable[[str], None]

EMBEDDED_SOURCE = EMBEDDED  # pgchat.connect.resolve's name for the embedded default
REUPLOADS = 5
WRITTEN_SCHEMAS = ("public", "pgchat")  # where "rows written" are counted
LEGACY_SUFFIX = "_legacy_demo"
_LEGACY_COMMENT = "pgchat demo: the legacy side; dropped and recreated by every `pgchat demo`"
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes


# --- what is measured ------------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """One user's usage counters: user_usage_daily summed over all days, and the profile totals
    (profiles.usage_stats)."""

    messages_sent: int = 0
    messages_received: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    sessions_created: int = 0
    profile_messages: int = 0
    profile_tokens: int = 0
    profile_sessions: int = 0

    @property
    def messages(self) -> int:
        return self.messages_sent + self.messages_received

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def shown(self) -> dict[str, int]:
        """The counters the report shows, by label."""
        return {
            "messages": self.messages,
            "tokens": self.tokens,
            "sessions created": self.sessions_created,
            "profile total_messages": self.profile_messages,
            "profile total_tokens": self.profile_tokens,
            "profile sessions_created": self.profile_sessions,
        }

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "messages": self.messages, "tokens": self.tokens}


STANDIN_COMMENT = "pgchat stand-in for Supabase auth"  # see migrations/0001


def true_counters(truth: scenario.Truth) -> Counters:
    """What exactly-once counting reports, daily sums and profile totals alike."""
    return Counters(truth.messages_sent, truth.messages_received, truth.input_tokens,
                    truth.output_tokens, truth.sessions_created, truth.total_messages,
                    truth.total_tokens, truth.sessions_created)


def read_counters(conn: psycopg.Connection, user_id: UUID) -> Counters:
    """The user's counters as the database holds them now."""
    daily = conn.execute(
        "SELECT coalesce(sum(messages_sent), 0), coalesce(sum(messages_received), 0),"
        " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " coalesce(sum(sessions_created), 0)"
        " FROM public.user_usage_daily WHERE user_id = %s", (user_id,)).fetchone()
    profile = conn.execute(
        "SELECT coalesce((usage_stats ->> 'total_messages')::bigint, 0),"
        " coalesce((usage_stats ->> 'total_tokens')::bigint, 0),"
        " coalesce((usage_stats ->> 'sessions_created')::bigint, 0)"
        " FROM public.profiles WHERE id = %s", (user_id,)).fetchone()
    assert daily is not None
    if profile is None:
        raise ValidationError(f"unknown user {user_id}")
    return Counters(*(int(v) for v in (*daily, *profile)))


def read_days(conn: psycopg.Connection, user_id: UUID) -> dict[date, int]:
    """Messages (sent + received) per usage_date: the days the usage landed on."""
    rows = conn.execute(
        "SELECT usage_date, messages_sent + messages_received FROM public.user_usage_daily"
        " WHERE user_id = %s AND messages_sent + messages_received <> 0 ORDER BY usage_date",
        (user_id,)).fetchall()
    return {row[0]: int(row[1]) for row in rows}


@dataclass(frozen=True)
class Writes:
    """Rows written (inserted, updated, deleted) in the tables of WRITTEN_SCHEMAS."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    transactions: int = 0
    by_table: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.deleted

    def __add__(self, other: Writes) -> Writes:
        tables = Counter(self.by_table)
        tables.update(other.by_table)
        return Writes(self.inserted + other.inserted, self.updated + other.updated,
                      self.deleted + other.deleted, self.transactions + other.transactions,
                      dict(sorted(tables.items())))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def table_writes(conn: psycopg.Connection) -> dict[str, tuple[int, int, int]]:
    """(inserted, updated, deleted) per table of WRITTEN_SCHEMAS, as this backend's pending
    statistics have them (pg_stat_xact_user_tables).

    Pending statistics are flushed only while the backend is idle outside a transaction, and
    from PostgreSQL 15 on they may still hold the counts of transactions committed a moment ago:
    what one transaction wrote is the difference between a reading at its start and one before
    its commit (see `Side.transaction`), never a single reading.
    """
    rows = conn.execute(
        "SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_del"
        " FROM pg_catalog.pg_stat_xact_user_tables WHERE schemaname = ANY(%s)",
        (list(WRITTEN_SCHEMAS),)).fetchall()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def writes_between(before: dict[str, tuple[int, int, int]],
                   after: dict[str, tuple[int, int, int]]) -> Writes:
    """What was written between two readings of `table_writes` in the same transaction."""
    delta = {t: tuple(a - b for a, b in zip(counts, before.get(t, (0, 0, 0)), strict=True))
             for t, counts in after.items()}
    return Writes(sum(d[0] for d in delta.values()), sum(d[1] for d in delta.values()),
                  sum(d[2] for d in delta.values()), 1,
                  {t: sum(d) for t, d in sorted(delta.items()) if any(d)})


# --- the two sides ---------------------------------------------------------------------------


class Side:
    """One database the story is written to, through the write paths of its app.

    The connection is in autocommit mode: every `transaction` is a real transaction of its own.
    """

    name = ""

    def __init__(self, conn: psycopg.Connection, user_id: UUID) -> None:
        if not conn.autocommit:
            raise UsageError("the demo needs an autocommit connection")
        self.conn = conn
        self.user_id = user_id

    def transaction(self, work: Callable[..., object], *args: Any) -> Writes:
        """Run `work(*args)` in one transaction; return the rows it wrote."""
        with self.conn.transaction():
            before = table_writes(self.conn)
            work(*args)
            return writes_between(before, table_writes(self.conn))

    def upload(self, conversations: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def exchange(self, session_id: str, user_message: dict[str, Any],
                 reply: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def delete(self, session_id: str) -> None:
        """The user deletes a conversation (its messages go with it, ON DELETE CASCADE)."""
        self.conn.execute("DELETE FROM public.chat_sessions WHERE id = %s AND user_id = %s",
                          (session_id, self.user_id))

    def counters(self) -> Counters:
        return read_counters(self.conn, self.user_id)


class LegacySide(Side):
    """The old app: /api/chat/sync upserts everything; the chat API upserts each message."""

    name = "legacy"

    def upload(self, conversations: list[dict[str, Any]]) -> None:
        scenario.legacy_upload(self.conn, self.user_id, conversations)

    def exchange(self, session_id: str, user_message: dict[str, Any],
                 reply: dict[str, Any] | None) -> None:
        messages = [user_message] if reply is None else [user_message, reply]
        scenario.legacy_write_messages(self.conn, session_id, messages)


class PgchatSide(Side):
    """pgchat: the insert-only sync and the one-call exchange write (migration 0004)."""

    name = "pgchat"

    def upload(self, conversations: list[dict[str, Any]]) -> None:
        report = scenario.pgchat_upload(self.conn, self.user_id, conversations)
        if report.get("errors"):
            raise ValidationError(f"sync_user_conversations rejected the story: {report['errors']}")

    def exchange(self, session_id: str, user_message: dict[str, Any],
                 reply: dict[str, Any] | None) -> None:
        chat_api.write_chat_exchange(self.conn, self.user_id, session_id, user_message, reply)


# --- the story and its steps -----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The story plus the extra writes of steps 3 and 4; ids start with `prefix`."""

    prefix: str
    conversations: list[dict[str, Any]]
    retry_session: str
    failed_message: dict[str, Any]  # the user message as stored when the reply failed
    retried_message: dict[str, Any]  # the same message id, sent again, answered this time
    reply: dict[str, Any]
    deleted: dict[str, Any]  # the conversation deleted and uploaded again in step 4

    @property
    def truth_before_retry(self) -> scenario.Truth:
        return scenario.truth(self.conversations)

    @property
    def truth_after_retry(self) -> scenario.Truth:
        """The story with the retried exchange in its conversation: the failed attempt counts
        nothing, the successful retry counts once."""
        conversations = [c | {"messages": [*c["messages"], self.retried_message, self.reply]}
                         if c["id"] == self.retry_session else c for c in self.conversations]
        return scenario.truth(conversations)


def make_plan(prefix: str) -> Plan:
    """The seeds' story for one run; the retried exchange happens on the story's last day, a few
    minutes after its last message, so that every date stays meaningful."""
    conversations = scenario.story(prefix)
    last = conversations[-1]
    when = max(datetime.fromisoformat(m["timestamp"])
               for c in conversations for m in c["messages"]) + timedelta(minutes=3)
    user_id = f"{prefix}-retry-u1"
    retried = {"id": user_id, "role": "user", "content": "one more question, please",
               "timestamp": when.isoformat(), "input_tokens": 37}
    failed = retried | {"error_message": "the model did not answer (timeout)"}
    reply = {"id": f"{prefix}-retry-a1", "role": "assistant", "content": "here it is " * 12,
             "timestamp": (when + timedelta(seconds=9)).isoformat(), "input_tokens": 37,
             "output_tokens": 412, "total_tokens": 449, "elapsed_time": 6,
             "model": scenario.MODELS[0], "user_message_id": user_id, "contentType": "markdown",
             "completion_id": f"gen-{prefix}-retry"}
    return Plan(prefix, conversations, last["id"], failed, retried, reply, conversations[0])


def _sign_in_upload(side: Side, plan: Plan) -> Writes:
    return side.transaction(side.upload, plan.conversations)


def _same_upload_again(side: Side, plan: Plan) -> Writes:
    total = Writes()
    for _ in range(REUPLOADS):  # each sync is a request, each request a transaction
        total += side.transaction(side.upload, plan.conversations)
    return total


def _failed_then_retry(side: Side, plan: Plan) -> Writes:
    failed = side.transaction(side.exchange, plan.retry_session, plan.failed_message, None)
    return failed + side.transaction(side.exchange, plan.retry_session, plan.retried_message,
                                     plan.reply)


def _delete_and_upload_again(side: Side, plan: Plan) -> Writes:
    deleted = side.transaction(side.delete, plan.deleted["id"])
    return deleted + side.transaction(side.upload, [plan.deleted])


@dataclass(frozen=True)
class StepSpec:
    key: str
    title: str
    run: Callable[[Side, Plan], Writes]
    truth: Callable[[Plan], scenario.Truth]


STEPS = (
    StepSpec("sign_in_upload", "sign-in upload", _sign_in_upload,
             lambda p: p.truth_before_retry),
    StepSpec("same_upload_again", f"same upload, {REUPLOADS} more times", _same_upload_again,
             lambda p: p.truth_before_retry),
    StepSpec("failed_then_retry", "failed message, then its retry", _failed_then_retry,
             lambda p: p.truth_after_retry),
    # Deleting a conversation does not un-consume usage; uploading it again consumes nothing.
    StepSpec("delete_and_upload_again", "delete a conversation, upload it again",
             _delete_and_upload_again, lambda p: p.truth_after_retry),
)


@dataclass(frozen=True)
class Step:
    """The counters of both sides and the truth after one step, and what the step wrote."""

    key: str
    title: str
    legacy: Counters
    pgchat: Counters
    true: Counters
    legacy_writes: Writes
    pgchat_writes: Writes

    @property
    def pgchat_ok(self) -> bool:
        return self.pgchat == self.true

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "legacy": self.legacy.to_json(),
                "pgchat": self.pgchat.to_json(), "true": self.true.to_json(),
                "pgchat_ok": self.pgchat_ok,
                "rows_written": {"legacy": self.legacy_writes.to_json(),
                                 "pgchat": self.pgchat_writes.to_json()}}


def run_steps(plan: Plan, legacy: Side, pgchat: Side) -> list[Step]:
    """Replay the plan on both sides, step by step, reading the counters after each step."""
    steps = []
    for spec in STEPS:
        legacy_writes = spec.run(legacy, plan)
        pgchat_writes = spec.run(pgchat, plan)
        steps.append(Step(spec.key, spec.title, legacy.counters(), pgchat.counters(),
                          true_counters(spec.truth(plan)), legacy_writes, pgchat_writes))
    return steps


# --- the legacy database ---------------------------------------------------------------------


def legacy_database_name(dbname: str) -> str:
    """The legacy side's database for target `dbname`: `<dbname>_legacy_demo`, shortened with a
    hash when that would exceed PostgreSQL's 63-byte identifiers."""
    name = dbname + LEGACY_SUFFIX
    if len(name.encode()) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(dbname.encode()).hexdigest()[:8]
    room = _MAX_IDENTIFIER - len(LEGACY_SUFFIX) - len(digest) - 1
    head = dbname.encode()[:room].decode(errors="ignore")
    return f"{head}_{digest}{LEGACY_SUFFIX}"


@contextmanager
def _maintenance(dsn: str) -> Iterator[psycopg.Connection]:
    """A connection to the server's `postgres` database; the target itself if there is none
    (CREATE / DROP DATABASE work from any database but the one dropped)."""
    try:
        conn = connect(make_conninfo(dsn, dbname="postgres"), autocommit=True)
    except ConnectionFailed:
        conn = connect(dsn, autocommit=True)
    with conn:
        yield conn


def drop_legacy_database(dsn: str, name: str) -> bool:
    """Drop the demo's legacy database `name` (only one the demo created); False if absent."""
    with _maintenance(dsn) as admin:
        row = admin.execute(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database"
            " WHERE datname = %s", (name,)).fetchone()
        if row is None:
            return False
        if row[0] != _LEGACY_COMMENT:
            raise UsageError(f"database {name} exists and was not created by `pgchat demo`: "
                             "refusing to drop it")
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return True


def recreate_legacy_database(dsn: str, name: str) -> str:
    """Drop (if it is the demo's) and create the legacy database; return its DSN."""
    drop_legacy_database(dsn, name)
    with _maintenance(dsn) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise PermissionDenied(
                f"cannot create database {name} for the legacy side: the demo needs a role "
                "with CREATEDB") from None
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(_LEGACY_COMMENT)))
    return make_conninfo(dsn, dbname=name)


def install_legacy_schema(conn: psycopg.Connection) -> None:
    """The auth stand-in (as a Supabase project has auth) and the legacy schema, executed raw."""
    with conn.transaction():
        conn.execute((migrations_dir() / "0001_supabase_standin.sql").read_text())
        conn.execute((sql_dir() / "legacy" / "schema.sql").read_text())


# --- the whole demo --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo did and measured."""

    url: str  # the pgchat side's DSN, password masked
    source: str  # where the DSN came from: --dsn, PGCHAT_DSN, DATABASE_URL, embedded default
    database: str
    data_dir: str | None  # the embedded default's data directory, when that is the database
    legacy_url: str
    legacy_database: str
    migrations_applied: list[str]
    user_id: UUID
    email: str
    legacy_user_id: UUID
    prefix: str
    conversations: int
    messages: int
    failed_messages: int
    story_days: list[date]
    deleted_conversation: str
    retry_conversation: str
    steps: list[Step]
    legacy_days: dict[date, int]
    pgchat_days: dict[date, int]
    true_days: dict[date, int]
    legacy_today: date  # CURRENT_DATE of the legacy side: the day it books everything on
    drift: list[usage_api.Drift]  # `pgchat usage verify` for the demo user; empty when all is well

    @property
    def ok(self) -> bool:
        """pgchat reports the true value after every step, on the true days, and its counters
        agree with its ledger."""
        return (all(s.pgchat_ok for s in self.steps) and self.pgchat_days == self.true_days
                and not self.drift)

    def next_commands(self) -> list[str]:
        """What to run next, aimed at the same database."""
        if self.source == EMBEDDED_SOURCE:
            option = " --embedded"
        elif self.source == "--dsn":
            option = f" --dsn {shlex.quote(self.url)}"
        else:  # the environment variable that named the database
            option = f' --dsn "${self.source}"'
        return [f"pgchat status{option}", f"pgchat usage show {self.user_id}{option}",
                f"pgchat usage verify{option}"]

    def to_json(self) -> dict[str, Any]:
        def days(counts: dict[date, int]) -> dict[str, int]:
            return {d.isoformat(): n for d, n in sorted(counts.items())}

        return {
            "ok": self.ok,
            "database": {"url": self.url, "source": self.source, "name": self.database,
                         "data_dir": self.data_dir},
            "legacy_database": {"url": self.legacy_url, "name": self.legacy_database},
            "migrations_applied": self.migrations_applied,
            "user": {"id": str(self.user_id), "email": self.email,
                     "legacy_id": str(self.legacy_user_id)},
            "story": {"prefix": self.prefix, "conversations": self.conversations,
                      "messages": self.messages, "failed_messages": self.failed_messages,
                      "days": [d.isoformat() for d in self.story_days],
                      "retry_conversation": self.retry_conversation,
                      "deleted_conversation": self.deleted_conversation},
            "steps": [s.to_json() for s in self.steps],
            "dates": {"legacy": days(self.legacy_days), "pgchat": days(self.pgchat_days),
                      "true": days(self.true_days), "legacy_today": self.legacy_today.isoformat()},
            "rows_written": {s.key: {"legacy": s.legacy_writes.total,
                                     "pgchat": s.pgchat_writes.total} for s in self.steps},
            "usage_verify": {"ok": not self.drift, "drift": [
                {"usage_date": d.usage_date and d.usage_date.isoformat(), "field": d.field,
                 "recorded": d.recorded, "expected": d.expected} for d in self.drift]},
            "next": self.next_commands(),
        }


def resolve_target(dsn: str | None, embedded: bool = False) -> tuple[Target, str | None]:
    """The database, resolved like every command's (pgchat.connect.resolve), but the embedded
    default when nothing is configured; for it also a line saying whether it was started or
    reused, and where its data is."""
    was_running = server.embedded_status().running
    target = resolve(dsn, embedded=embedded, default_embedded=True)
    if target.source != EMBEDDED_SOURCE:
        return target, None
    verb = "reused the running" if was_running else "started the"
    return target, f"server: {verb} embedded PostgreSQL, data in {server.embedded_data_dir()}"


def has_real_supabase_auth(dsn: str) -> bool:
    """Whether `dsn` has an `auth` schema that is not pgchat's stand-in (a real Supabase)."""
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_regnamespace('auth') IS NOT NULL AND obj_description("
            "to_regnamespace('auth'), 'pg_namespace') IS DISTINCT FROM %s",
            (STANDIN_COMMENT,),
        ).fetchone()
    return bool(row and row[0])


def run(dsn: str, *, source: str = "--dsn", progress: Progress | None = None,
        allow_real_auth: bool = False) -> DemoResult:
    """Migrate `dsn`, rebuild the legacy side next to it, replay the story on both.

    `source` says where `dsn` came from (pgchat.connect.Target.source); `progress` receives a
    line for each thing done, as it is done. Refuses a database with a real Supabase `auth`
    schema (the demo user would be a real auth user) unless `allow_real_auth`.
    """
    if not allow_real_auth and has_real_supabase_auth(dsn):
        raise UsageError("this database has a real Supabase auth schema: the demo would create "
                         "a user in auth.users there; use a scratch database, or pass --yes")
    say = progress or (lambda _line: None)
    say(f"pgchat side: {describe(dsn)} ({source})")
    applied = migrations.migrate(dsn, progress=lambda line: say(f"  {line}"))
    if not applied:
        say("  migrations: up to date")

    short = uuid.uuid4().hex[:8]
    prefix, email = f"demo-{short}", f"demo-{short}@pgchat.local"
    plan = make_plan(prefix)
    with connect(dsn, autocommit=True) as conn:
        database = conn.info.dbname
        legacy_name = legacy_database_name(database)
        legacy_dsn = recreate_legacy_database(dsn, legacy_name)
        say(f"legacy side: {describe(legacy_dsn)}"
            " (recreated: auth stand-in + sql/legacy/schema.sql)")
        with connect(legacy_dsn, autocommit=True) as legacy_conn:
            install_legacy_schema(legacy_conn)
            with legacy_conn.transaction():
                legacy_user = scenario.create_user(legacy_conn, email)
            with conn.transaction():
                user = scenario.create_user(conn, email)
            say(f"demo user: {user} ({email}); story ids start with {prefix}")
            steps = run_steps(plan, LegacySide(legacy_conn, legacy_user), PgchatSide(conn, user))
            legacy_days = read_days(legacy_conn, legacy_user)
            row = legacy_conn.execute("SELECT CURRENT_DATE").fetchone()
            assert row is not None
            legacy_today: date = row[0]
        pgchat_days = read_days(conn, user)
        drift = usage_api.verify(conn, user)

    truth = plan.truth_after_retry
    return DemoResult(
        url=describe(dsn), source=source, database=database,
        data_dir=str(server.embedded_data_dir()) if source == EMBEDDED_SOURCE else None,
        legacy_url=describe(legacy_dsn),
        legacy_database=legacy_name, migrations_applied=applied, user_id=user, email=email,
        legacy_user_id=legacy_user, prefix=prefix, conversations=len(plan.conversations),
        messages=sum(len(c["messages"]) for c in plan.conversations),
        failed_messages=sum(1 for c in plan.conversations for m in c["messages"]
                            if m.get("error")),
        story_days=sorted(plan.truth_before_retry.days),
        deleted_conversation=plan.deleted["id"], retry_conversation=plan.retry_session,
        steps=steps, legacy_days=legacy_days, pgchat_days=pgchat_days,
        true_days=dict(sorted(truth.days.items())), legacy_today=legacy_today, drift=drift,
    )


# --- for people -------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Aligned columns; numbers right-aligned."""
    cells = [headers] + [["" if v is None else str(v) for v in r] for r in rows]
    numeric = [all(isinstance(r[i], int) or r[i] in (None, "-") for r in rows)
               for i in range(len(headers))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(row, widths, numeric, strict=True)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths).rstrip()]
    out += [line(row) for row in cells[1:]]
    return out


def render(result: DemoResult) -> str:
    """The demo's report for people: counters, dates, rows written, and what to run next."""
    out: list[str] = [
        "",
        f"The story: {result.conversations} conversations, {result.messages} messages "
        f"({result.failed_messages} failed, never answered), written on "
        + ", ".join(d.isoformat() for d in result.story_days) + ".",
        f"Step 3 retries a failed message in {result.retry_conversation}; "
        f"step 4 deletes {result.deleted_conversation} and uploads it again.",
        "True = each successful message counted once, on its own UTC day; a failed attempt"
        " counts nothing;",
        "a deleted conversation gives no usage back, and uploading it again consumes nothing.",
        "",
        "Usage counters after each step (user_usage_daily summed over all days;"
        " profile = profiles.usage_stats)",
    ]
    rows: list[list[Any]] = []
    wrong = total = 0
    for n, step in enumerate(result.steps, 1):
        legacy, pgchat, true = step.legacy.shown(), step.pgchat.shown(), step.true.shown()
        for k, label in enumerate(true):
            total += 1
            wrong += legacy[label] != true[label]
            mark = "" if pgchat[label] == true[label] else "  <- pgchat WRONG"
            rows.append([f"{n}. {step.title}" if k == 0 else "", label, legacy[label],
                         pgchat[label], true[label], mark])
    out += _table(["step", "counter", "legacy", "pgchat", "true", ""], rows)

    out += ["", "Dates the usage landed on (messages per usage_date, after the last step)"]
    dates = sorted(set(result.legacy_days) | set(result.pgchat_days) | set(result.true_days))
    out += _table(["date", "legacy", "pgchat", "true"], [
        [d.isoformat() + (" (today)" if d == result.legacy_today else ""),
         result.legacy_days.get(d, "-"), result.pgchat_days.get(d, "-"),
         result.true_days.get(d, "-")] for d in dates])

    out += ["", "Rows written by each step (inserted + updated + deleted in public and pgchat,"
            " read inside its transactions)"]
    out += _table(["step", "legacy", "pgchat"], [
        [f"{n}. {s.title}", s.legacy_writes.total, s.pgchat_writes.total]
        for n, s in enumerate(result.steps, 1)])

    out.append("")
    if result.ok:
        out.append(f"ok: pgchat reports the true value at every step, on the days the messages "
                   f"were written; legacy is off in {wrong} of {total} counters.")
    else:
        problems = [what for what, bad in (
            ("counters differ from the true value", not all(s.pgchat_ok for s in result.steps)),
            ("usage landed on other days", result.pgchat_days != result.true_days),
            (f"{len(result.drift)} counter(s) disagree with the ledger", bool(result.drift)),
        ) if bad]
        out.append("FAILED: pgchat " + "; ".join(problems) + " (see above).")
    out += ["", f"The demo's data stays in {result.database}; the legacy side stays in "
            f"{result.legacy_database} until the next `pgchat demo`.", "Next:"]
    out += [f"  {cmd}" for cmd in result.next_commands()]
    out.append(f"  psql {shlex.quote(result.url)}")
    return "\n".join(out)
