"""`pgchat demo`: the seeds' story on the legacy schema and on pgchat, side by side, with the truth.

The demo and these tests share one story (pgchat_dev.scenario): what the demo prints is what is
asserted here. Each test's demo writes into the test's migrated database and rebuilds its legacy
side in `<test database>_legacy_demo` on the same server, dropped again afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgchat import migrate, usage
from pgchat.cli import main
from pgchat.errors import UsageError
from pgchat_dev import demo, scenario

RunDemo = Callable[[], demo.DemoResult]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def legacy_name(db: psycopg.Connection) -> str:
    return demo.legacy_database_name(db.info.dbname)


@pytest.fixture
def run_demo(db: psycopg.Connection, db_dsn: str) -> Iterator[RunDemo]:
    """`run_demo()`: the demo on this test's migrated database; its legacy database is dropped
    after the test."""
    db.commit()  # nothing of the fixture's connection may hold a transaction open
    yield lambda: demo.run(db_dsn)
    demo.drop_legacy_database(db_dsn, legacy_name(db))


@pytest.fixture
def result(run_demo: RunDemo) -> demo.DemoResult:
    return run_demo()


def step(result: demo.DemoResult, key: str) -> demo.Step:
    return next(s for s in result.steps if s.key == key)


# --- the numbers ------------------------------------------------------------------------------


def test_pgchat_reports_the_truth_after_every_step(result: demo.DemoResult) -> None:
    assert [s.key for s in result.steps] == [
        "sign_in_upload", "same_upload_again", "failed_then_retry", "delete_and_upload_again"]
    for s in result.steps:
        assert s.pgchat == s.true, s.key
    assert result.ok
    assert result.drift == []


def test_the_true_column_is_the_scenario_truth(result: demo.DemoResult) -> None:
    story_truth = scenario.truth(scenario.story(result.prefix))
    first, again, retry, delete = result.steps
    assert first.true == again.true == demo.true_counters(story_truth)
    # The failed attempt counts nothing; the retry counts one message each way, once.
    assert retry.true.messages_sent == first.true.messages_sent + 1
    assert retry.true.messages_received == first.true.messages_received + 1
    assert retry.true.sessions_created == first.true.sessions_created == 3
    # Deleting a conversation gives no usage back; uploading it again consumes nothing.
    assert delete.true == retry.true


def test_legacy_is_inflated_by_the_re_uploads(result: demo.DemoResult) -> None:
    first, again = step(result, "sign_in_upload"), step(result, "same_upload_again")
    assert again.legacy.messages > again.true.messages
    assert again.legacy.tokens > again.true.tokens
    # Every upload counts every message again: six uploads, six times the first one.
    assert again.legacy.messages == (1 + demo.REUPLOADS) * first.legacy.messages
    # Already the first upload counts the failed messages, and no session ever.
    assert first.legacy.messages == first.true.messages + result.failed_messages
    assert all(s.legacy.sessions_created == 0 for s in result.steps)
    # Re-uploading a deleted conversation counts it once more.
    delete, retry = step(result, "delete_and_upload_again"), step(result, "failed_then_retry")
    assert delete.legacy.messages > retry.legacy.messages


def test_re_uploads_write_nothing_on_pgchat(result: demo.DemoResult) -> None:
    again = step(result, "same_upload_again")
    assert again.pgchat_writes.total == 0
    assert again.pgchat_writes.by_table == {}
    assert again.pgchat_writes.transactions == demo.REUPLOADS
    assert again.legacy_writes.total > 0
    # The first upload did write: the measurement sees writes when there are some.
    first = step(result, "sign_in_upload")
    assert first.pgchat_writes.by_table["public.chat_messages"] == first.true.messages
    # ... and nothing into the ledger: the stored rows are the record of what was counted.
    assert "pgchat.usage_ledger" not in first.pgchat_writes.by_table


def test_the_days_usage_landed_on(result: demo.DemoResult, db_dsn: str) -> None:
    truth_days = scenario.truth(scenario.story(result.prefix)).days
    assert set(result.pgchat_days) == set(result.story_days) == set(truth_days)
    assert result.pgchat_days == result.true_days
    assert sum(result.true_days.values()) == step(result, "delete_and_upload_again").true.messages
    # Legacy books everything on the day of the write, the legacy server's CURRENT_DATE.
    legacy_dsn = make_conninfo(db_dsn, dbname=result.legacy_database)
    with psycopg.connect(legacy_dsn) as conn:
        row = conn.execute("SELECT CURRENT_DATE").fetchone()
    assert row is not None and row[0] == result.legacy_today
    assert set(result.legacy_days) == {result.legacy_today}


# --- what it leaves behind --------------------------------------------------------------------


def test_pgchat_data_stays_for_the_usage_commands(
    result: demo.DemoResult, db: psycopg.Connection, db_dsn: str
) -> None:
    days = usage.show(db, result.user_id)
    assert {d.usage_date for d in days} == set(result.story_days)
    assert usage.verify(db) == []  # nothing anywhere in the target drifted
    db.rollback()
    shown = cli("usage", "show", str(result.user_id), "--dsn", db_dsn, "--json")
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.stdout)) == len(result.story_days)
    assert cli("usage", "verify", "--dsn", db_dsn).exit_code == 0


def test_the_legacy_side_never_touches_the_target(
    result: demo.DemoResult, db: psycopg.Connection, db_dsn: str
) -> None:
    assert result.legacy_database == legacy_name(db) != db.info.dbname
    assert all(s.applied and not s.drifted for s in migrate.status(db_dsn))
    # The target holds one demo user and the story's conversations, nothing legacy wrote.
    row = db.execute("SELECT count(*) FROM public.profiles WHERE email = %s",
                     (result.email,)).fetchone()
    assert row == (1,)
    row = db.execute("SELECT count(*) FROM public.chat_sessions WHERE user_id = %s",
                     (result.user_id,)).fetchone()
    assert row == (result.conversations,)
    functions = db.execute(
        "SELECT count(*) FROM pg_proc WHERE oid = 'public.track_user_usage'::regproc"
        " AND pg_get_function_identity_arguments(oid) LIKE '%p_event_key%'").fetchone()
    assert functions == (1,)  # pgchat's, not the legacy one


def test_running_it_again_does_not_conflict(run_demo: RunDemo) -> None:
    first, second = run_demo(), run_demo()
    assert first.ok and second.ok
    assert first.user_id != second.user_id and first.prefix != second.prefix
    assert second.migrations_applied == []
    # The legacy side starts from scratch every time: the same story gives the same numbers.
    assert [s.legacy for s in first.steps] == [s.legacy for s in second.steps]
    assert [s.true for s in first.steps] == [s.true for s in second.steps]


def test_a_foreign_database_of_the_legacy_name_is_never_dropped(
    db: psycopg.Connection, db_dsn: str
) -> None:
    name = legacy_name(db)
    with psycopg.connect(db_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            with pytest.raises(UsageError, match="not created by `pgchat demo`"):
                demo.run(db_dsn)
            result = cli("demo", "--dsn", db_dsn)
            assert result.exit_code == 2
            assert "refusing to drop it" in result.stderr
            row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (name,)).fetchone()
            assert row == (1,)
        finally:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_legacy_database_name() -> None:
    assert demo.legacy_database_name("pgchat") == "pgchat_legacy_demo"
    long = "x" * 60
    name = demo.legacy_database_name(long)
    assert len(name.encode()) <= 63 and name.endswith("_legacy_demo")
    assert name != demo.legacy_database_name("x" * 59 + "y")


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def cleanup_legacy(db: psycopg.Connection, db_dsn: str) -> Iterator[None]:
    db.commit()
    yield
    demo.drop_legacy_database(db_dsn, legacy_name(db))


@pytest.mark.usefixtures("cleanup_legacy")
def test_cli_json(db_dsn: str) -> None:
    result = cli("demo", "--dsn", db_dsn, "--json")
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["database"]["source"] == "--dsn"
    steps = {s["key"]: s for s in doc["steps"]}
    for s in doc["steps"]:
        assert s["pgchat"] == s["true"], s["key"]
    again = steps["same_upload_again"]
    assert again["legacy"]["messages"] > again["true"]["messages"]
    assert again["legacy"]["tokens"] > again["true"]["tokens"]
    assert again["rows_written"]["pgchat"]["total"] == 0
    assert doc["rows_written"]["same_upload_again"]["pgchat"] == 0
    assert doc["dates"]["pgchat"] == doc["dates"]["true"]
    assert sorted(doc["dates"]["pgchat"]) == doc["story"]["days"]
    assert list(doc["dates"]["legacy"]) == [doc["dates"]["legacy_today"]]
    assert doc["usage_verify"] == {"ok": True, "drift": []}
    user = doc["user"]["id"]
    assert any(cmd.startswith(f"pgchat usage show {user} --dsn ") for cmd in doc["next"])


@pytest.mark.usefixtures("cleanup_legacy")
def test_cli_for_people(db_dsn: str) -> None:
    result = cli("demo", "--dsn", db_dsn)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for heading in ("Usage counters after each step", "Dates the usage landed on",
                    "Rows written by each step", "Next:"):
        assert heading in out
    assert "ok: pgchat reports the true value at every step" in out
    next_block = out.split("Next:", 1)[1]
    for command in ("pgchat status --dsn", "pgchat usage show", "pgchat usage verify --dsn"):
        assert command in next_block
    assert "legacy side: " in out and "pgchat side: " in out


@pytest.mark.usefixtures("cleanup_legacy")
def test_cli_exits_1_when_pgchat_misses_the_truth(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = demo.true_counters

    def off_by_one(truth: scenario.Truth) -> demo.Counters:
        counters = real(truth)
        return replace(counters, messages_sent=counters.messages_sent + 1)

    monkeypatch.setattr(demo, "true_counters", off_by_one)
    result = cli("demo", "--dsn", db_dsn)
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.stdout and "pgchat WRONG" in result.stdout


def test_refuses_a_real_supabase_auth_schema(empty_db: psycopg.Connection, empty_dsn: str) -> None:
    # A real Supabase project: an auth schema that is not pgchat's stand-in.
    empty_db.execute("CREATE SCHEMA auth")
    empty_db.commit()
    with pytest.raises(UsageError, match="real Supabase auth schema"):
        demo.run(empty_dsn)
    # Refused before doing anything: not even migrated.
    row = empty_db.execute("SELECT to_regnamespace('pgchat_migrations')").fetchone()
    assert row == (None,)
    result = CliRunner().invoke(main, ["demo", "--dsn", empty_dsn])
    assert result.exit_code == 2
    assert "--yes" in result.output
