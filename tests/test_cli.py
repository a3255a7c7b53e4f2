"""The `pgchat` command line, through click's runner and through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

from pgchat import migrate
from pgchat.cli import main
from pgchat.migrate import SCHEMA
from tests.helpers import make_session, make_user, migration_ids

BAD_DSN = "postgresql://nobody@127.0.0.1:1/x"
DumpSchema = Callable[..., str]


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def error_line(stderr: str) -> str:
    """The one line of an expected failure: stderr holds it and, at most, the note saying which
    database was used (`database: ...`) before it; never a traceback."""
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("database: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pgchat: error: "), stderr
    return lines[0]


def assert_one_line_error(result: Result, exit_code: int) -> str:
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # an exit, not a crash
    return error_line(result.stderr)


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


ALL_COMMANDS = list(command_paths(main))


def test_the_documented_commands_exist() -> None:
    for path in [(), ("db",), ("migrate",), ("rollback",), ("status",), ("sql",)]:
        assert path in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "pgchat")
def test_help_works_for_every_command(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert " ".join(("main", *path)) in result.stdout.splitlines()[0]


# --- migrate / status / rollback -----------------------------------------------------------


def test_migrate_then_status_json(empty_dsn: str) -> None:
    result = run("migrate", "--dsn", empty_dsn)
    assert result.exit_code == 0, result.output
    assert f"applied {len(migration_ids())} migration(s)" in result.stdout
    assert "database: " in result.stderr  # which database was used is said on stderr

    result = run("status", "--dsn", empty_dsn, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    states = report["migrations"]
    assert (report["applied"], report["pending"], report["problems"]) == (
        len(migration_ids()), 0, 0)
    assert report["risk_summary"] == ["no app function exposes chat, usage or profile data"]
    assert [s["id"] for s in states] == migration_ids()
    assert all(s["applied"] and s["on_disk"] and not s["drifted"] for s in states)


def test_migrate_dry_run_changes_nothing(empty_dsn: str) -> None:
    result = run("migrate", "--dsn", empty_dsn, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would apply: " + ", ".join(migration_ids()) in result.stdout.splitlines()
    assert result.stdout.strip().splitlines()[-1] == "dry run: nothing was changed"
    assert not any(s.applied for s in migrate.status(empty_dsn))

    result = run("migrate", "--dsn", empty_dsn, "--dry-run", "--json")
    report = json.loads(result.stdout)
    assert (report["dry_run"], report["migrations"], report["blocked"]) == (
        True, migration_ids(), False)
    assert [p["id"] for p in report["plan"]] == migration_ids()


def test_status_of_a_new_database_is_all_pending(empty_dsn: str) -> None:
    result = run("status", "--dsn", empty_dsn)
    assert result.exit_code == 0, result.output
    assert f"0 applied, {len(migration_ids())} pending, 0 problem(s)" in result.stdout


def test_rollback_steps_and_refusal(db: psycopg.Connection, db_dsn: str) -> None:
    newest = migration_ids()[-1]
    result = run("rollback", "--dsn", db_dsn, "--steps", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"dry_run": False, "migrations": [newest]}
    assert run("migrate", "--dsn", db_dsn).exit_code == 0

    make_session(db, make_user(db))
    result = run("rollback", "--dsn", db_dsn, "--all")
    assert "refusing to drop" in assert_one_line_error(result, 1)
    assert all(s.applied for s in migrate.status(db_dsn))


def test_rollback_all_with_steps_is_a_usage_error(db_dsn: str) -> None:
    result = run("rollback", "--dsn", db_dsn, "--all", "--steps", "1")
    assert result.exit_code == 2
    assert all(s.applied for s in migrate.status(db_dsn))


# --- failures: one line, the right exit code -------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["migrate"], ["rollback"], ["sql"]])
def test_unreachable_database_is_exit_2_and_one_line(command: list[str]) -> None:
    result = run(*command, "--dsn", BAD_DSN)
    assert "127.0.0.1" in assert_one_line_error(result, 2)


def test_unparseable_dsn_is_exit_2() -> None:
    result = run("status", "--dsn", "not a dsn==")
    assert "invalid DSN" in assert_one_line_error(result, 2)


# --- where the database comes from ----------------------------------------------------------


def test_pgchat_dsn_is_used_before_database_url(db_dsn: str) -> None:
    result = run("status", env={"PGCHAT_DSN": db_dsn, "DATABASE_URL": BAD_DSN})
    assert result.exit_code == 0, result.output
    assert "(PGCHAT_DSN)" in result.stderr


def test_database_url_is_used_without_pgchat_dsn(db_dsn: str) -> None:
    result = run("status", env={"PGCHAT_DSN": None, "DATABASE_URL": db_dsn})
    assert result.exit_code == 0, result.output
    assert "(DATABASE_URL)" in result.stderr


def test_dsn_option_beats_the_environment(db_dsn: str) -> None:
    result = run("status", "--dsn", db_dsn, env={"PGCHAT_DSN": BAD_DSN, "DATABASE_URL": BAD_DSN})
    assert result.exit_code == 0, result.output
    assert "(--dsn)" in result.stderr


# --- scripts for the Supabase SQL editor and the Supabase CLI --------------------------------


def test_sql_all_script_applies_and_is_recorded(
    empty_dsn: str, db_dsn: str, dump_schema: DumpSchema
) -> None:
    result = run("sql", "--all")
    assert result.exit_code == 0, result.output
    script = result.stdout
    assert "BEGIN;" in script and script.rstrip().endswith("COMMIT;")
    for mid in migration_ids():
        assert f"-- ===== {mid} =====" in script

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(script)

    states = migrate.status(empty_dsn)
    assert [(s.id, s.applied, s.drifted) for s in states] == [
        (mid, True, False) for mid in migration_ids()]
    assert migrate.migrate(empty_dsn) == []  # yoyo agrees: nothing left to apply
    # The script builds exactly the schema the runner builds.
    assert dump_schema(empty_dsn, (SCHEMA,)) == dump_schema(db_dsn, (SCHEMA,))


def test_sql_lists_only_what_is_pending(empty_dsn: str) -> None:
    first, *rest = migration_ids()
    migrate.migrate(empty_dsn, to=first)
    script = run("sql", "--dsn", empty_dsn).stdout
    assert f"-- ===== {first} =====" not in script
    assert all(f"-- ===== {mid} =====" in script for mid in rest)

    migrate.migrate(empty_dsn)
    assert run("sql", "--dsn", empty_dsn).stdout == "-- pgchat: nothing to apply\n"


def test_sql_supabase_writes_one_file_per_migration(tmp_path: Path, empty_dsn: str) -> None:
    out = tmp_path / "supabase" / "migrations"
    result = run("sql", "--supabase", str(out), "--all")
    assert result.exit_code == 0, result.output

    files = sorted(out.iterdir())
    assert len(files) == len(migration_ids())
    assert [str(f) for f in files] == result.stdout.split()
    for path, mid in zip(files, migration_ids(), strict=True):
        assert path.name.endswith(f"_pgchat_{mid}.sql")

    # Applied in name order, as the Supabase CLI does, they leave a fully migrated database.
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for path in files:
            with conn.transaction():
                conn.execute(path.read_text())
    assert all(s.applied and not s.drifted for s in migrate.status(empty_dsn))


# --- a real process ---------------------------------------------------------------------------


def pgchat_process(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGCHAT_DSN", "DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "pgchat", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_process_status_exits_0(db_dsn: str) -> None:
    proc = pgchat_process("status", "--dsn", db_dsn)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(migration_ids())} applied, 0 pending, 0 problem(s)" in proc.stdout


def test_process_bad_dsn_exits_2_without_traceback() -> None:
    proc = pgchat_process("status", "--dsn", BAD_DSN)
    assert proc.returncode == 2
    assert "cannot connect" in error_line(proc.stderr)
