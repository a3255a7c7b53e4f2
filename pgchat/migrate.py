"""Applying, rolling back and inspecting pgchat's migrations (yoyo underneath).

What this adds to yoyo:
- each migration, its yoyo bookkeeping and its checksum commit in ONE transaction, with a
  `lock_timeout`, so a crash or a blocked lock never leaves a half-applied migration;
- a session advisory lock, so two `migrate` runs at once never both apply (the second waits,
  then finds nothing to do), and a killed run leaves no stale lock behind;
- a checksum per applied migration, so `status` reports files edited after they were applied;
- yoyo's tables live in their own schema (`pgchat_migrations`), never in the API-exposed `public`;
- a transaction pooler (Supabase's port 6543, pgbouncer `pool_mode = transaction`) is refused
  before anything is locked or created (PoolerRefused, exit 2): the advisory lock, yoyo's
  prepared statements and CREATE INDEX CONCURRENTLY all need a session of their own, which such
  a pooler does not give (pgchat.connect.transaction_pooler says how it is detected);
- a run waiting for the migration lock says who holds it (pid, application_name, since when)
  and gives up after `lock_wait` seconds (the CLI: its --lock-timeout) with LockTimeout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri
from yoyo.migrations import get_migration_hash

from pgchat.connect import connect, one_line, transaction_pooler
from pgchat.errors import LockTimeout, MigrationError, PoolerRefused, UsageError, diagnostics
from pgchat.paths import migrations_dir

SCHEMA = "pgchat_migrations"
_LOCK_KEY = 0x70676368_6D696772  # 'pgch' 'migr': pg_advisory_lock key for migrate/rollback
_SETUP_LOCK_KEY = _LOCK_KEY + 1  # held briefly while creating the bookkeeping schema and tables
DEFAULT_LOCK_TIMEOUT = "5s"
_DURATION = re.compile(r"([0-9]{1,9})(us|ms|s|min|h|d)")
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
APPLICATION_NAME = "pgchat migrate"  # what pg_stat_activity shows for a running migrate/rollback


def duration_seconds(setting: str) -> float:
    """A lock_timeout_setting() value (5s, 500ms, 1min) in seconds."""
    found = _DURATION.fullmatch(lock_timeout_setting(setting))
    assert found is not None
    return int(found.group(1)) * _SECONDS[found.group(2)]


def refuse_transaction_pooler(dsn: str, what: str) -> None:
    """PoolerRefused, before any lock or change, when `dsn` goes through a transaction pooler."""
    reason = transaction_pooler(dsn)
    if reason is not None:
        raise PoolerRefused(
            f"pgchat {what} needs a session of its own and {reason}: give the direct connection "
            "(Supabase: db.<project>.supabase.co:5432) or the session pooler (port 5432), not "
            "the transaction pooler (port 6543); nothing was done")


def lock_timeout_setting(value: str) -> str:
    """`value` as a PostgreSQL duration with a unit (5s, 500ms, 2min), rebuilt from its parts
    so nothing but digits and a unit ever reaches a script; anything else is a UsageError."""
    found = _DURATION.fullmatch(value)
    if found is None or int(found.group(1)) == 0:
        raise UsageError(f"--lock-timeout {value!r}: give a positive PostgreSQL duration with a "
                         "unit, such as 5s, 500ms or 1min")
    return f"{int(found.group(1))}{found.group(2)}"

Progress = Callable[[str], None]


class _Backend(PostgresqlPsycopgBackend):  # type: ignore[misc]
    """yoyo's psycopg 3 backend, connected from any libpq DSN instead of a yoyo URL."""

    def connect(self, dburi: Any) -> psycopg.Connection:
        self.schema = SCHEMA
        return connect(dburi.args["pgchat_dsn"], autocommit=True,
                       application_name=APPLICATION_NAME)


@dataclass(frozen=True)
class MigrationState:
    id: str
    applied: bool
    applied_at: datetime | None
    on_disk: bool
    drifted: bool  # applied, and the files differ from what was applied


def checksum(migration_id: str, directory: Path | None = None) -> str:
    """sha256 of a migration's apply and rollback files, as they are on disk now."""
    folder = directory or migrations_dir()
    digest = hashlib.sha256()
    for path in (folder / f"{migration_id}.sql", folder / f"{migration_id}.rollback.sql"):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def _migrations(directory: Path | None = None) -> Any:
    return read_migrations(str(directory or migrations_dir()))


def _ensure_schema(conn: psycopg.Connection) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.pgchat_checksum ("
        " migration_id text PRIMARY KEY, sha256 text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")


@contextmanager
def _backend(dsn: str) -> Iterator[_Backend]:
    uri = parse_uri("postgresql+psycopg://")._replace(args={"pgchat_dsn": dsn})
    with connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as setup:
        # Runs starting at once take turns at the first-time set-up: concurrent CREATE ... IF NOT
        # EXISTS (ours and yoyo's) still collide in the catalog. Closing `setup` unlocks.
        setup.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK_KEY,))
        _ensure_schema(setup)
        backend = _Backend(uri, "_yoyo_migration")
        try:
            backend.init_database()
            backend.ensure_internal_schema_updated()
        except BaseException:
            backend.connection.close()
            raise
    try:
        yield backend
    finally:
        backend.connection.close()


def _lock_holder(backend: _Backend) -> str:
    """Who holds the migration lock: pid, application_name, since when (its connection)."""
    row = backend.execute(
        "SELECT a.pid, a.application_name, a.backend_start, a.client_addr, a.state"
        " FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        f" AND l.classid = {_LOCK_KEY >> 32} AND l.objid = {_LOCK_KEY & 0xFFFFFFFF}"
        " AND l.database = (SELECT oid FROM pg_catalog.pg_database"
        "                   WHERE datname = current_database())"
    ).fetchone()
    if row is None:
        return "held by a session this role cannot see"
    pid, app, since, addr, state = row
    start = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if since else "?"
    origin = f", from {addr}" if addr else ""
    return (f"held by pid {pid} (application_name {app or ''!r}{origin}, connected since "
            f"{start}, {state or 'state unknown'})")


@contextmanager
def _exclusive(backend: _Backend, wait_seconds: float,
               progress: Progress | None = None) -> Iterator[None]:
    """Hold the migration lock; wait up to `wait_seconds` for another run to finish, saying
    who holds it."""
    deadline = time.monotonic() + wait_seconds
    said = False
    while not backend.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY})").fetchone()[0]:
        holder = _lock_holder(backend)
        if time.monotonic() > deadline:
            raise LockTimeout(
                f"another pgchat migrate/rollback holds the migration lock, {holder}; gave up "
                f"after {wait_seconds:g}s; nothing was changed"
            )
        if progress and not said:
            progress(f"waiting up to {wait_seconds:g}s for the migration lock, {holder}")
            said = True
        time.sleep(0.2)
    try:
        yield
    finally:
        backend.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})")


_APPLIED = (f"SELECT m.migration_id, m.applied_at_utc, c.sha256 FROM {SCHEMA}._yoyo_migration m"
            f" LEFT JOIN {SCHEMA}.pgchat_checksum c ON c.migration_id = m.migration_id")


def _applied(backend: _Backend) -> dict[str, tuple[datetime | None, str | None]]:
    rows = backend.execute(_APPLIED).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def _ever_migrated(dsn: str) -> bool:
    """Whether pgchat's bookkeeping exists in `dsn`; asking creates nothing."""
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = '_yoyo_migration')",
            (SCHEMA,),
        ).fetchone()
    return bool(row and row[0])


def status(dsn: str) -> list[MigrationState]:
    """Every migration on disk or in the database: applied or pending, and drift."""
    applied: dict[str, tuple[datetime | None, str | None]] = {}
    if _ever_migrated(dsn):  # else all is pending: a read-only look must not create bookkeeping
        # A plain read, no lock and no set-up: it works through a transaction pooler too.
        with connect(dsn, autocommit=True, prepare_threshold=None) as conn:
            rows = conn.execute(_APPLIED).fetchall()
        applied = {row[0]: (row[1], row[2]) for row in rows}
    states = []
    on_disk = [m.id for m in _migrations()]
    for mid in on_disk:
        at, digest = applied.get(mid, (None, None))
        drifted = mid in applied and digest is not None and digest != checksum(mid)
        states.append(MigrationState(mid, mid in applied, at, True, drifted))
    for mid in sorted(set(applied) - set(on_disk)):
        states.append(MigrationState(mid, True, applied[mid][0], False, False))
    return states


def _run_one(backend: _Backend, migration: Any, direction: str, lock_timeout: str) -> None:
    """Apply or roll back one migration, its bookkeeping and checksum, in one transaction.

    A migration declaring `-- transactional: false` (an index built CONCURRENTLY, a backfill
    committing batch by batch) runs its statements outside a transaction, with the same
    lock_timeout; its bookkeeping commits after it. Such a migration is resumable by design:
    interrupted, it is not recorded, and the next run applies it again from the start. Its
    rollback runs in a transaction like any other.
    """
    migration.load()  # reads the directives (use_transactions)
    if direction == "rollback":
        # A rollback is all or nothing, in the caller's transaction: the rollback files of
        # non-transactional migrations are written to run inside one.
        migration.use_transactions = True
    try:
        if not migration.use_transactions:
            backend.execute("SELECT set_config('lock_timeout', :t, false)", {"t": lock_timeout})
            try:
                migration.process_steps(backend, direction)
            finally:
                backend.execute("RESET lock_timeout")
        with backend.transaction():
            backend.execute("SELECT set_config('lock_timeout', :t, true)", {"t": lock_timeout})
            if migration.use_transactions:
                migration.process_steps(backend, direction)
            if direction == "apply":
                backend.mark_one(migration, log=False)
                backend.log_migration(migration, "apply")  # mark_one would log "mark"
                backend.execute(
                    f"INSERT INTO {SCHEMA}.pgchat_checksum (migration_id, sha256)"
                    " VALUES (:id, :sha) ON CONFLICT (migration_id)"
                    " DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
                    {"id": migration.id, "sha": checksum(migration.id)},
                )
            else:
                backend.unmark_one(migration, log=False)
                backend.log_migration(migration, "rollback")  # unmark_one would log "unmark"
                backend.execute(
                    f"DELETE FROM {SCHEMA}.pgchat_checksum WHERE migration_id = :id",
                    {"id": migration.id},
                )
    except psycopg.errors.LockNotAvailable as exc:
        raise MigrationError(
            f"{migration.id}: could not get a lock within lock_timeout={lock_timeout} "
            "(a long transaction holds a table it needs); nothing was changed, retry later",
            **diagnostics(exc),
        ) from exc
    except psycopg.Error as exc:
        verb = "apply" if direction == "apply" else "roll back"
        raise MigrationError(f"cannot {verb} {migration.id}: {one_line(exc)}",
                             **diagnostics(exc)) from exc


def _select(ids: list[str], target: str | None, *, inclusive: bool) -> list[str]:
    if target is None:
        return ids
    if target not in ids:
        raise UsageError(f"unknown or not applicable migration id: {target}")
    cut = ids.index(target)
    return ids[: cut + 1] if inclusive else ids[:cut]


def migrate(
    dsn: str,
    *,
    to: str | None = None,
    dry_run: bool = False,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    lock_wait: float | None = 60.0,
    progress: Progress | None = None,
    started: Progress | None = None,
) -> list[str]:
    """Apply pending migrations (up to and including `to`); return the ids applied or planned.

    `lock_wait`: how long to wait for another migrate/rollback (None: `lock_timeout`).
    `progress` gets a line after each migration (and its `pgchat:` notices); `started` a line
    when each one starts and every `pgchat:` notice as it arrives (the CLI: on a terminal)."""
    all_ids = [m.id for m in _migrations()]
    if to is not None and to not in all_ids:
        raise UsageError(f"unknown migration id: {to}")
    refuse_transaction_pooler(dsn, "migrate")
    if dry_run and not _ever_migrated(dsn):
        return _select(all_ids, to, inclusive=True)  # all of it; and a dry run creates nothing
    wait = duration_seconds(lock_timeout) if lock_wait is None else lock_wait
    with _backend(dsn) as backend, _exclusive(backend, wait, progress):
        pending = {m.id: m for m in backend.to_apply(_migrations())}
        ids = [mid for mid in _select(all_ids, to, inclusive=True) if mid in pending]
        if dry_run:
            return ids
        _refuse_blocked(dsn, ids)
        notices: list[str] = []
        # Migrations speak to the operator through NOTICEs that start with "pgchat:".
        def notice(d: psycopg.errors.Diagnostic) -> None:
            text = d.message_primary or ""
            if text.startswith("pgchat:"):
                notices.append(text)
                if started:
                    started(f"  {text}")

        backend.connection.add_notice_handler(notice)
        for n, mid in enumerate(ids, 1):
            if started:
                started(f"[{n}/{len(ids)}] applying {mid} ...")
            _run_one(backend, pending[mid], "apply", lock_timeout)
            if progress:
                progress(f"applied {mid}")
                for note in notices:
                    progress(f"  {note}")
            notices.clear()
        return ids


def _refuse_blocked(dsn: str, ids: list[str]) -> None:
    """Refuse the whole run, before its first migration, when any pending one would refuse:
    each migration is its own transaction, so a refusal half-way would leave the earlier ones
    applied. The checks are the migrations' own (see pgchat.plan)."""
    from pgchat.plan import plan  # pgchat.plan reads the migration files; imported when used

    for item in plan(dsn, ids):
        if item.blocks:
            raise MigrationError(f"cannot apply {item.id}: cannot adopt this database: "
                                 f"{'; '.join(item.blocks)}; nothing was changed")


def rollback(
    dsn: str,
    *,
    to: str | None = None,
    steps: int | None = None,
    dry_run: bool = False,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    lock_wait: float | None = 60.0,
    progress: Progress | None = None,
) -> list[str]:
    """Roll back the newest `steps` migrations, or all after `to` ("base": all of them)."""
    if to is not None and steps is not None:
        raise UsageError("give --to or --steps, not both")
    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    refuse_transaction_pooler(dsn, "rollback")
    if not _ever_migrated(dsn):
        return []  # never migrated: nothing to roll back, and looking creates nothing
    wait = duration_seconds(lock_timeout) if lock_wait is None else lock_wait
    with _backend(dsn) as backend, _exclusive(backend, wait, progress):
        applied_ids = list(_applied(backend))
        on_disk = {m.id: m for m in _migrations()}
        missing = [mid for mid in applied_ids if mid not in on_disk]
        newest_first = [m.id for m in backend.to_rollback(_migrations())]
        if to is None:
            ids = newest_first[: steps or 1]
        elif to == "base":
            ids = newest_first
        else:
            if to not in newest_first:
                raise UsageError(f"{to} is not an applied migration")
            ids = newest_first[: newest_first.index(to)]
        if missing:
            raise MigrationError(f"applied migrations have no files here: {', '.join(missing)}")
        if dry_run:
            return ids
        # All or nothing: when one rollback refuses (a table holds rows), the newer ones already
        # rolled back before it are restored too, so a refused rollback changes nothing.
        with backend.transaction():
            for mid in ids:
                _run_one(backend, on_disk[mid], "rollback", lock_timeout)
        if progress:
            for mid in ids:
                progress(f"rolled back {mid}")
        return ids


# --- scripts for the Supabase SQL editor and the Supabase CLI ---------------------------------

_BOOKKEEPING = f"""\
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}._yoyo_migration (
    migration_hash varchar(64) PRIMARY KEY, migration_id varchar(255), applied_at_utc timestamp);
CREATE TABLE IF NOT EXISTS {SCHEMA}._yoyo_log (
    id varchar(36) PRIMARY KEY, migration_hash varchar(64), migration_id varchar(255),
    operation varchar(10), username varchar(255), hostname varchar(255), comment varchar(255),
    created_at_utc timestamp);
CREATE TABLE IF NOT EXISTS {SCHEMA}._yoyo_version (
    version int PRIMARY KEY, installed_at_utc timestamp);
INSERT INTO {SCHEMA}._yoyo_version VALUES (2, now() AT TIME ZONE 'utc') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {SCHEMA}.pgchat_checksum (
    migration_id text PRIMARY KEY, sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());
"""


_DEFAULT_HINT = ("pgchat status lists what is applied; pgchat sql --dsn ... writes only the "
                 "pending migrations")


def _guard(mid: str, hint: str = _DEFAULT_HINT) -> str:
    """Refuse, before changing anything, a migration that pgchat's bookkeeping says is applied."""
    return (
        "DO $pgchat_guard$ BEGIN\n"
        f"  IF EXISTS (SELECT FROM {SCHEMA}._yoyo_migration WHERE migration_id = '{mid}') THEN\n"
        f"    RAISE EXCEPTION 'pgchat: migration {mid} is already applied to this database; "
        "nothing was changed'\n"
        f"      USING HINT = '{hint}';\n"
        "  END IF;\n"
        "END $pgchat_guard$;\n"
    )


def _record(mid: str) -> str:
    return (
        f"INSERT INTO {SCHEMA}._yoyo_migration VALUES ('{get_migration_hash(mid)}', '{mid}',"
        f" now() AT TIME ZONE 'utc') ON CONFLICT DO NOTHING;\n"
        f"INSERT INTO {SCHEMA}._yoyo_log VALUES (gen_random_uuid()::text,"
        f" '{get_migration_hash(mid)}', '{mid}', 'apply', current_user, 'sql-script', NULL,"
        f" now() AT TIME ZONE 'utc');\n"
        f"INSERT INTO {SCHEMA}.pgchat_checksum VALUES ('{mid}', '{checksum(mid)}')"
        " ON CONFLICT (migration_id) DO UPDATE SET sha256 = EXCLUDED.sha256;\n"
    )


_CONCURRENTLY = re.compile(r"\s+CONCURRENTLY\b")
_NON_TRANSACTIONAL = re.compile(r"^--\s*transactional:\s*false\s*$", re.MULTILINE)


def _body(mid: str) -> str:
    """A migration as a script runs it: inside one transaction. The online form of a
    non-transactional migration becomes its one-transaction form: indexes are built and
    dropped without CONCURRENTLY (which no transaction allows), and its batches do not commit
    (pgchat.one_transaction, which they read)."""
    text = (migrations_dir() / f"{mid}.sql").read_text()
    if not _NON_TRANSACTIONAL.search(text):
        return text
    return ("SELECT set_config('pgchat.one_transaction', 'on', true);\n"
            + _CONCURRENTLY.sub("", text))


# --- the steps that are online only outside a transaction ----------------------------------
#
# A migration declaring `-- transactional: false` is online under `pgchat migrate` (an index
# built CONCURRENTLY, statistics recomputed batch by batch). In a one-transaction script (the
# SQL editor's `pgchat sql`, a Supabase CLI file) it cannot be: what it does there instead is
# said in the files (OFFLINE_NOTES), and a Supabase file refuses it on a database larger than
# its OFFLINE_LIMITS, naming its online form (a file for psql, outside a transaction).
# docs/adoption-export.md has the measured writer waits of both forms: at 100,000 messages the
# one-transaction index build held writers 0.2 s; the one-transaction 0003a held them 2 s
# and deadlocked with them (its statistics batches lock profiles and sessions batch by batch,
# so across batches the lock order is not the writers' one): it runs in one transaction only
# while the sessions fit in one statistics batch (200, c_stats_batch in 0003a).

OFFLINE_LIMIT = 100_000  # chat messages
OFFLINE_SESSION_LIMIT = 200  # chat sessions: one statistics batch of 0003a
OFFLINE_LIMITS: dict[str, tuple[tuple[str, int], ...]] = {
    "0003a_adopt_existing_rows": (("chat_messages", OFFLINE_LIMIT),
                                  ("chat_sessions", OFFLINE_SESSION_LIMIT)),
}
OFFLINE_NOTES = {
    "0002a_session_latest_index":
        "builds idx_chat_messages_session_latest WITHOUT CONCURRENTLY: every write to "
        "public.chat_messages waits until the build (and the file) ends",
    "0003a_adopt_existing_rows":
        "recomputes session statistics in ONE transaction: the sessions (and the profiles of their "
        "users) whose statistics it recomputes stay locked until the file ends, so writes to "
        "them wait (and may deadlock with it)",
}
ONLINE_FOLDER = "pgchat-online"  # next to the Supabase migrations folder, where the CLI never looks
_DEPENDS = re.compile(r"^--\s*depends:\s*(.+)$", re.MULTILINE)


def _offline_note(mid: str) -> str:
    return OFFLINE_NOTES.get(mid, "runs in one transaction instead of online")


def _is_online_only(mid: str) -> bool:
    return bool(_NON_TRANSACTIONAL.search((migrations_dir() / f"{mid}.sql").read_text()))


def _offline_limits(mid: str) -> tuple[tuple[str, int], ...]:
    return OFFLINE_LIMITS.get(mid, (("chat_messages", OFFLINE_LIMIT),))


def _offline_guard(mid: str, version: str, online: str) -> str:
    """In a Supabase file: refuse the one-transaction form of `mid` on a large database."""
    note = _offline_note(mid).replace("'", "''")
    checks = "".join(
        f"  IF to_regclass('public.{table}') IS NOT NULL AND (SELECT count(*) FROM (SELECT\n"
        f"      FROM public.{table} LIMIT {limit + 1}) t) > {limit} THEN\n"
        f"    RAISE EXCEPTION 'pgchat: {table} holds more than {limit} rows, and "
        f"this file {note}; nothing was changed'\n"
        f"      USING HINT = 'Run {online} with psql outside a transaction, over the direct "
        f"connection (psql -v ON_ERROR_STOP=1 -f FILE), then: supabase migration repair "
        f"--status applied {version}; then push again. See docs/adoption-export.md.';\n"
        "  END IF;\n"
        for table, limit in _offline_limits(mid))
    return f"DO $pgchat_offline$ BEGIN\n{checks}END $pgchat_offline$;\n"


def _online_file(mid: str, version: str, timeout: str) -> str:
    """`mid` as `pgchat migrate` runs it (outside a transaction), for psql, with pgchat's
    bookkeeping, refusing if the migrations it depends on are not applied yet."""
    text = (migrations_dir() / f"{mid}.sql").read_text()
    depends = [d for m in _DEPENDS.finditer(text) for d in m.group(1).split()]
    check = "".join(
        f"  IF NOT EXISTS (SELECT FROM {SCHEMA}._yoyo_migration WHERE migration_id = '{dep}')"
        f" THEN\n    RAISE EXCEPTION 'pgchat: {mid} needs {dep} applied first (push the files "
        "before it, or pgchat migrate --to it); nothing was changed';\n  END IF;\n"
        for dep in depends)
    repair = f"supabase migration repair --status applied {version}"
    return (
        f"-- pgchat migration {mid}, ONLINE form (generated by `pgchat sql --supabase`; do not "
        "edit).\n"
        "-- Run it with psql OUTSIDE a transaction, over the direct connection (not the "
        "transaction pooler):\n"
        "--   psql -v ON_ERROR_STOP=1 -f THIS_FILE \"$DIRECT_DATABASE_URL\"\n"
        "-- Not in the SQL editor, not with psql -1/--single-transaction: CREATE INDEX "
        "CONCURRENTLY\n-- and the backfill's batch commits need to run outside a transaction "
        "block. Interrupted, it\n-- records nothing and is simply run again. Then mark the "
        "Supabase file as applied so that\n-- `supabase db push` skips its one-transaction "
        f"form:\n--   {repair}\n"
        "\\set ON_ERROR_STOP on\n"
        f"SET lock_timeout = '{timeout}';\n{_BOOKKEEPING}\n"
        f"{_guard(mid, f'already done: {repair} marks the Supabase file')}"
        + (f"DO $pgchat_depends$ BEGIN\n{check}END $pgchat_depends$;\n" if check else "")
        + f"\n{text}\n{_record(mid)}"
    )


def pending_ids(dsn: str | None) -> list[str]:
    """Migrations not yet applied to `dsn` (all of them without a database)."""
    if dsn is None:
        return [m.id for m in _migrations()]
    return [s.id for s in status(dsn) if s.on_disk and not s.applied]


def render_script(ids: list[str], lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> str:
    """One reviewable script applying `ids` in a single transaction, bookkeeping included,
    so that `pgchat status` knows afterwards what was applied. Each migration's block starts
    with a guard that stops the whole script, before anything changed, if pgchat's bookkeeping
    says that migration is already applied there."""
    timeout = lock_timeout_setting(lock_timeout)
    if not ids:
        return "-- pgchat: nothing to apply\n"
    offline = [f"--   {mid}: {_offline_note(mid)}\n" for mid in ids if _is_online_only(mid)]
    if offline:
        offline = ["-- NOT ONLINE IN THIS SCRIPT (one transaction; `pgchat migrate` over the "
                   "direct connection\n-- runs these online, see docs/adoption-export.md):\n",
                   *offline]
    parts = [
        f"-- pgchat migrations: {', '.join(ids)}\n",
        "-- Review, then run it whole (one transaction).\n",
        *offline,
        "BEGIN;\n",
        f"SET LOCAL lock_timeout = '{timeout}';\n",
        _BOOKKEEPING,
    ]
    for mid in ids:
        parts.append(f"\n-- ===== {mid} =====\n{_guard(mid)}{_body(mid)}\n{_record(mid)}")
    parts.append("COMMIT;\n")
    return "".join(parts)


@dataclass(frozen=True)
class SupabaseFiles:
    written: list[Path]
    already_there: list[Path]  # a file for that migration was in the folder: left as it was
    online: list[Path] = dataclasses.field(default_factory=list)  # psql files, ONLINE_FOLDER


_SUPABASE_NAME = re.compile(r"([0-9]{14})_.*\.sql")


def write_supabase(
    directory: Path, ids: list[str], lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    now: datetime | None = None,
) -> SupabaseFiles:
    """Write `ids` as Supabase CLI migration files, `<UTC timestamp>_pgchat_<id>.sql`.

    The Supabase CLI applies files in name order and expects new ones to sort after those it
    applied: the first file is stamped now, or one second after the newest file already in the
    folder if that is later, and each next one a second later. A migration that already has a
    file there is left alone. Nothing pending writes nothing (not even the folder).

    The Supabase CLI runs each file in a transaction: a migration that is online only outside
    one (`-- transactional: false`) says so in its file, which refuses on a database of more
    than OFFLINE_LIMITS rows; its online form, for psql, is written to the folder
    ONLINE_FOLDER next to `directory` (where the Supabase CLI does not look).
    """
    timeout = lock_timeout_setting(lock_timeout)
    try:
        existing = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    except OSError as exc:
        raise UsageError(f"cannot read {directory}: {exc.strerror or exc}") from None
    there = {mid: directory / name for mid in ids for name in existing
             if name.endswith(f"_pgchat_{mid}.sql")}
    todo = [mid for mid in ids if mid not in there]
    written: list[Path] = []
    online: list[Path] = []
    if todo:
        stamps = [datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
                  for m in map(_SUPABASE_NAME.fullmatch, existing) if m]
        stamp = (now or datetime.now(UTC)).replace(microsecond=0)
        if stamps and max(stamps) >= stamp:
            stamp = max(stamps) + timedelta(seconds=1)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for mid in todo:
                version = f"{stamp:%Y%m%d%H%M%S}"
                path = directory / f"{version}_pgchat_{mid}.sql"
                header = (f"-- pgchat migration {mid} (generated by `pgchat sql --supabase`; "
                          "do not edit)\n")
                guard = _guard(mid)
                if _is_online_only(mid):
                    online_path = directory.parent / ONLINE_FOLDER / path.name
                    online_name = f"{ONLINE_FOLDER}/{online_path.name}"
                    limits = " or ".join(f"{limit} rows in {table}"
                                         for table, limit in _offline_limits(mid))
                    header += (
                        "-- NOT ONLINE IN THIS FILE: the Supabase CLI runs it in one "
                        f"transaction, so it\n-- {_offline_note(mid)}.\n"
                        f"-- With more than {limits} it refuses (changing nothing)\n"
                        f"-- and names its online form, {online_name} (psql, outside a "
                        "transaction);\n-- see docs/adoption-export.md.\n")
                    guard = (_guard(mid, f"if you ran {online_name}: supabase migration repair "
                                         f"--status applied {version}")
                             + _offline_guard(mid, version, online_name))
                    online_path.parent.mkdir(parents=True, exist_ok=True)
                    online_path.write_text(_online_file(mid, version, timeout))
                    online.append(online_path)
                path.write_text(
                    f"{header}SET lock_timeout = '{timeout}';\n{_BOOKKEEPING}\n"
                    f"{guard}{_body(mid)}\n{_record(mid)}"
                )
                written.append(path)
                stamp += timedelta(seconds=1)
        except OSError as exc:
            raise UsageError(f"cannot write to {directory}: {exc.strerror or exc}") from exc
    return SupabaseFiles(written, [there[mid] for mid in ids if mid in there], online)
