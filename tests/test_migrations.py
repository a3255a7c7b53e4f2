"""pgchat's migration runner against a real server: apply, roll back, adopt, guard."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgchat import migrate
from pgchat.cli import main
from pgchat.errors import MigrationError, UsageError
from pgchat.migrate import SCHEMA
from tests.helpers import make_session, make_user, migration_ids, table_counts, yoyo_log

DumpSchema = Callable[..., str]
Connect = Callable[[str], psycopg.Connection]


def applied(dsn: str) -> list[str]:
    return [s.id for s in migrate.status(dsn) if s.applied]


# --- apply ---------------------------------------------------------------------------------


def test_fresh_apply_applies_every_migration_in_order(
    empty_dsn: str, autocommit_conn: Connect
) -> None:
    ids = migration_ids()
    assert len(ids) >= 2

    assert migrate.migrate(empty_dsn) == ids
    assert yoyo_log(autocommit_conn(empty_dsn)) == [(mid, "apply") for mid in ids]
    states = migrate.status(empty_dsn)
    assert [(s.id, s.applied, s.drifted, s.on_disk) for s in states] == [
        (mid, True, False, True) for mid in ids]


def test_second_apply_is_a_no_op(db_dsn: str, autocommit_conn: Connect) -> None:
    log_before = yoyo_log(autocommit_conn(db_dsn))
    assert len(log_before) == len(migration_ids())
    assert migrate.migrate(db_dsn) == []
    assert yoyo_log(autocommit_conn(db_dsn)) == log_before


def test_migrate_to_applies_up_to_and_including_the_target(empty_dsn: str) -> None:
    first, *rest = migration_ids()
    assert migrate.migrate(empty_dsn, to=first) == [first]
    assert applied(empty_dsn) == [first]
    assert migrate.migrate(empty_dsn, to=first) == []
    assert migrate.migrate(empty_dsn) == rest


def test_migrate_to_an_unknown_id_is_a_usage_error(empty_dsn: str) -> None:
    with pytest.raises(UsageError, match="9999_nope"):
        migrate.migrate(empty_dsn, to="9999_nope")
    assert applied(empty_dsn) == []


def test_dry_run_lists_the_plan_and_changes_nothing(
    empty_dsn: str, dump_schema: DumpSchema
) -> None:
    first, *rest = migration_ids()
    migrate.migrate(empty_dsn, to=first)
    before = dump_schema(empty_dsn)

    assert migrate.migrate(empty_dsn, dry_run=True) == rest
    assert migrate.migrate(empty_dsn, to=rest[0], dry_run=True) == [rest[0]]

    assert dump_schema(empty_dsn) == before
    assert applied(empty_dsn) == [first]


def test_dry_run_and_status_on_a_new_database_create_nothing(
    empty_dsn: str, dump_schema: DumpSchema
) -> None:
    before = dump_schema(empty_dsn)
    first, second, *_ = migration_ids()

    assert migrate.migrate(empty_dsn, dry_run=True) == migration_ids()
    assert migrate.migrate(empty_dsn, to=second, dry_run=True) == [first, second]
    assert applied(empty_dsn) == []

    assert dump_schema(empty_dsn) == before  # not even pgchat's bookkeeping schema


# --- roll back -----------------------------------------------------------------------------


def test_rollback_one_step_and_reapply(db_dsn: str, dump_schema: DumpSchema) -> None:
    *older, newest = migration_ids()
    before = dump_schema(db_dsn)

    assert migrate.rollback(db_dsn, steps=1, dry_run=True) == [newest]
    assert applied(db_dsn) == [*older, newest]

    assert migrate.rollback(db_dsn, steps=1) == [newest]
    assert applied(db_dsn) == older
    assert dump_schema(db_dsn) != before

    assert migrate.migrate(db_dsn) == [newest]
    assert dump_schema(db_dsn) == before


def test_rollback_to_an_id_keeps_that_migration(db_dsn: str) -> None:
    first, *rest = migration_ids()
    assert migrate.rollback(db_dsn, to=first) == list(reversed(rest))
    assert applied(db_dsn) == [first]


def test_rollback_all_then_migrate_gives_an_identical_schema(
    empty_dsn: str, db_dsn: str, dump_schema: DumpSchema
) -> None:
    """Two databases: one migrated straight (db), one migrated, rolled back and migrated again."""
    never_migrated = dump_schema(empty_dsn, exclude_schemas=(SCHEMA,))
    migrate.migrate(empty_dsn)

    assert migrate.rollback(empty_dsn, to="base") == list(reversed(migration_ids()))
    assert applied(empty_dsn) == []
    # Every rollback undoes its migration completely (pgchat's bookkeeping schema aside).
    assert dump_schema(empty_dsn, exclude_schemas=(SCHEMA,)) == never_migrated

    migrate.migrate(empty_dsn)
    assert dump_schema(empty_dsn) == dump_schema(db_dsn)


MUTATIONS = {
    "function body": "create or replace function auth.uid() returns uuid language sql stable"
                     " set search_path = '' as $$ select null::uuid $$",
    "function setting": "alter function auth.uid() reset search_path",
    "missing index": "drop index public.idx_chat_messages_session_id",
    "policy": "alter policy sessions_owner_all on public.chat_sessions using (true)",
    "grant": "grant select on public.chat_messages to anon",
    "revoke": "revoke all on public.chat_messages from service_role",
}


@pytest.mark.parametrize("change", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_schema_comparison_sees_every_kind_of_change(
    change: str, db_dsn: str, autocommit_conn: Connect, dump_schema: DumpSchema
) -> None:
    """The comparison above is only as good as the dump: it must notice these."""
    before = dump_schema(db_dsn)
    autocommit_conn(db_dsn).execute(change)
    assert dump_schema(db_dsn) != before


# --- adopting a legacy (production) database -----------------------------------------------


MESSAGE_COLUMNS = ("id, session_id, role, content, model, total_tokens, input_tokens,"
                   " output_tokens, user_message_id, content_type, elapsed_time, completion_id,"
                   " message_timestamp, error_message, is_streaming, metadata")


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """What adoption must never lose or change (statistics columns may be recomputed)."""
    snap = {
        "counts": table_counts(conn),
        "messages": conn.execute(
            f"select {MESSAGE_COLUMNS} from public.chat_messages order by id").fetchall(),
        "sessions": conn.execute(
            "select id, user_id, title, created_at from public.chat_sessions order by id"
        ).fetchall(),
        "users": conn.execute("select * from auth.users order by id").fetchall(),
        "profiles": conn.execute("select id, email from public.profiles order by id").fetchall(),
    }
    conn.commit()
    return snap


def test_adoption_keeps_every_row(legacy_db: psycopg.Connection, legacy_dsn: str) -> None:
    before = snapshot(legacy_db)
    assert before["counts"]["public.chat_messages"] == 60

    assert migrate.migrate(legacy_dsn) == migration_ids()

    after = snapshot(legacy_db)
    # Tables a migration adds are new; every table that existed keeps its row count.
    assert {t: after["counts"][t] for t in before["counts"]} == before["counts"]
    for key in ("messages", "sessions", "users", "profiles"):
        assert after[key] == before[key], key
    assert migrate.migrate(legacy_dsn) == []


def test_adoption_leaves_supabase_auth_untouched(legacy_dsn: str, dump_schema: DumpSchema) -> None:
    # The auth schema alone: its tables, columns, functions, grants and triggers.
    auth_before = dump_schema(legacy_dsn, include_schemas=("auth",))
    lines: list[str] = []

    migrate.migrate(legacy_dsn, progress=lines.append)

    assert "  pgchat: Supabase auth schema found; it is left untouched" in lines
    assert not any("installed the stand-in" in line for line in lines)
    assert dump_schema(legacy_dsn, include_schemas=("auth",)) == auth_before


def test_fresh_database_gets_the_auth_stand_in(empty_dsn: str, autocommit_conn: Connect) -> None:
    lines: list[str] = []
    migrate.migrate(empty_dsn, progress=lines.append)
    assert any(line.startswith("  pgchat: no Supabase auth schema; installed the stand-in")
               for line in lines)
    comment = autocommit_conn(empty_dsn).execute(
        "select obj_description('auth'::regnamespace)").fetchone()
    assert comment == ("pgchat stand-in for Supabase auth",)


# --- guards ----------------------------------------------------------------------------------


def test_drift_is_reported(db_dsn: str, db: psycopg.Connection) -> None:
    first, *rest = migration_ids()
    db.execute(f"update {SCHEMA}.pgchat_checksum set sha256 = 'x' where migration_id = %s",
               (first,))
    db.commit()

    drifted = {s.id: s.drifted for s in migrate.status(db_dsn)}
    assert drifted == {first: True, **dict.fromkeys(rest, False)}

    result = CliRunner().invoke(main, ["status", "--dsn", db_dsn])
    assert result.exit_code == 1
    assert "CHANGED since applied" in result.stdout


def test_concurrent_migrations_apply_each_migration_once(
    empty_dsn: str, autocommit_conn: Connect
) -> None:
    runners = 4
    start = threading.Barrier(runners)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(migrate.migrate(empty_dsn))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(mid for ids in results for mid in ids) == migration_ids()
    log = Counter(yoyo_log(autocommit_conn(empty_dsn)))
    assert log == Counter({(mid, "apply"): 1 for mid in migration_ids()})


def test_lock_timeout_gives_up_and_leaves_nothing_half_applied(
    empty_dsn: str, autocommit_conn: Connect
) -> None:
    first, second, *_ = migration_ids()
    migrate.migrate(empty_dsn, to=first)
    blocker = autocommit_conn(empty_dsn)
    blocker.execute("begin")
    blocker.execute("lock table auth.users in access exclusive mode")

    with pytest.raises(MigrationError, match="lock_timeout=200ms"):
        migrate.migrate(empty_dsn, lock_timeout="200ms")

    blocker.execute("rollback")
    assert applied(empty_dsn) == [first]
    check = autocommit_conn(empty_dsn)
    assert check.execute("select to_regclass('public.profiles')").fetchone() == (None,)
    assert (second, "apply") not in yoyo_log(check)
    # Once the lock is gone, the same migration goes through.
    assert migrate.migrate(empty_dsn)[0] == second


def test_rollback_refuses_to_drop_tables_with_rows(
    db: psycopg.Connection, db_dsn: str, dump_schema: DumpSchema
) -> None:
    user_id = make_user(db)
    session_id = make_session(db, user_id)
    schema_before = dump_schema(db_dsn)

    with pytest.raises(MigrationError, match="refusing to drop"):
        migrate.rollback(db_dsn, to="base")

    assert applied(db_dsn) == migration_ids()
    assert dump_schema(db_dsn) == schema_before
    owner = db.execute("select user_id from public.chat_sessions where id = %s", (session_id,))
    assert owner.fetchone() == (user_id,)
    assert db.execute("select count(*) from auth.users").fetchone() == (1,)


def test_bookkeeping_schema_holds_only_bookkeeping(db: psycopg.Connection) -> None:
    """Migrations run with search_path = pgchat_migrations (yoyo's schema): an object a migration
    names without a schema would land there, out of sight. Nothing may."""
    relations = db.execute(
        "select relname from pg_class where relnamespace = %s::regnamespace and relkind <> 'i'",
        (SCHEMA,),
    ).fetchall()
    assert {r[0] for r in relations} == {
        "_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", "pgchat_checksum",
        "replaced_objects", "replaced_objects_position_seq"}  # what adoption replaced (0002/0003)
    functions = db.execute(
        "select proname from pg_proc where pronamespace = %s::regnamespace", (SCHEMA,))
    # the templates' helpers of 0002 (what the app's tables have of pgchat's optional columns)
    assert {f[0] for f in functions.fetchall()} == {"has_column", "feature", "render"}
