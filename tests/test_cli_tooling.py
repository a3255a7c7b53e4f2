"""The DBA's tooling: where the database comes from, Supabase CLI files, guarded scripts,
--lock-timeout, one-line errors for bad files and folders, and --json everywhere."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

from pgchat import migrate
from pgchat.cli import main
from pgchat.errors import UsageError
from tests.helpers import make_user, migration_ids, yoyo_log

NO_DB = {"PGCHAT_DSN": None, "DATABASE_URL": None}


def run(*args: str, env: dict[str, str | None] | None = None, stdin: bytes | None = None
        ) -> Result:
    return CliRunner().invoke(main, list(args), env={**NO_DB, **(env or {})}, input=stdin)


def one_line(result: Result, exit_code: int) -> str:
    """The single `pgchat: error: ...` line of an expected failure; never a traceback."""
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("database: ")]
    assert len(lines) == 1 and lines[0].startswith("pgchat: error: "), result.stderr
    return lines[0]


# --- which database -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["migrate"], ["rollback"], ["status"], ["sql"], ["sql", "--supabase", "x"],
    ["usage", "verify"], ["usage", "rebuild", "--yes"], ["usage", "show", str(uuid4())],
    ["sync", "--user", str(uuid4()), "-"],
])
def test_no_database_given_is_a_usage_error(command: list[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """No silent embedded server started in whatever folder the command runs from."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGCHAT_HOME", raising=False)
    line = one_line(run(*command, stdin=b"[]"), 2)
    assert list(tmp_path.iterdir()) == []
    assert line == ("pgchat: error: no database given: pass --dsn, set PGCHAT_DSN or "
                    "DATABASE_URL, or --embedded for the local embedded PostgreSQL (./.pgchat)")


def test_dsn_and_embedded_together_is_a_usage_error(db_dsn: str) -> None:
    result = run("status", "--dsn", db_dsn, "--embedded")
    assert one_line(result, 2) == "pgchat: error: give --dsn or --embedded, not both"


def test_embedded_is_used_when_asked_and_named() -> None:
    # Not under pytest's tmp_path: the server runs as another user (as root), and a concurrent
    # pytest session re-closes /tmp/pytest-of-<user> to 0700 under it.
    base = Path(tempfile.mkdtemp(prefix="pgchat-test-home-"))
    home = {"PGCHAT_HOME": str(base / "home")}
    try:
        result = run("status", "--embedded", env=home)
        assert result.exit_code == 0, result.output
        url = json.loads(run("db", "url", "--json", env=home).stdout)
        assert url["data_dir"] == str(base / "home" / "data")
        assert (f"(--embedded, data in {base / 'home' / 'data'})"
                in result.stderr.splitlines()[0])
        assert result.stderr.startswith("database: ")
    finally:
        stopped = run("db", "stop", "--json", env=home)
        shutil.rmtree(base, ignore_errors=True)
    assert json.loads(stopped.stdout)["stopped"] is True, stopped.output


def test_an_unusable_pgchat_home_is_one_line() -> None:
    line = one_line(run("db", "url", env={"PGCHAT_HOME": "/proc/x"}), 2)
    assert line.startswith("pgchat: error: cannot create the embedded server's folder /proc/x")


# --- pgchat sql --supabase ------------------------------------------------------------------


def stamps(folder: Path) -> list[datetime]:
    return [datetime.strptime(p.name[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
            for p in sorted(folder.iterdir())]


def test_supabase_files_are_stamped_now_and_in_order(tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    result = run("sql", "--all", "--supabase", str(tmp_path / "m"))
    assert result.exit_code == 0, result.output
    times = stamps(tmp_path / "m")
    assert len(times) == len(migration_ids())
    assert times[0] >= before and times == sorted(set(times))
    assert times[-1] <= datetime.now(UTC) + (times[-1] - times[0])


def test_supabase_files_sort_after_the_projects_own(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20991231235959_future_feature.sql").write_text("select 1;\n")
    (folder / "20240101000000_initial.sql").write_text("select 1;\n")
    result = run("sql", "--all", "--supabase", str(folder))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in folder.iterdir())
    assert names[:2] == ["20240101000000_initial.sql", "20991231235959_future_feature.sql"]
    assert [n[:14] for n in names[2:]] == [f"2100010100000{n}" for n in range(len(names) - 2)]
    assert [n[15:] for n in names[2:]] == [f"pgchat_{mid}.sql" for mid in migration_ids()]


def test_supabase_rerun_leaves_the_written_files_alone(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    run("sql", "--all", "--supabase", str(folder))
    first = sorted(folder.iterdir())
    result = run("sql", "--all", "--supabase", str(folder), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["written"] == [] and doc["already_there"] == [str(p) for p in first]
    assert sorted(folder.iterdir()) == first


def test_supabase_with_nothing_pending_says_so_and_writes_nothing(db_dsn: str,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "m"
    result = run("sql", "--dsn", db_dsn, "--supabase", str(folder))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"nothing pending: no file written to {folder}\n"
    assert not folder.exists()


def test_supabase_into_an_unusable_folder_is_one_line() -> None:
    line = one_line(run("sql", "--all", "--supabase", "/proc/x"), 2)
    assert line.startswith("pgchat: error: cannot write to /proc/x: ")


# --- scripts detect an applied migration ------------------------------------------------------


def test_sql_all_on_a_migrated_database_refuses_and_changes_nothing(db_dsn: str) -> None:
    script = run("sql", "--all").stdout
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        log = yoyo_log(conn)
        with pytest.raises(psycopg.errors.RaiseException) as err:
            conn.execute(script)
        conn.execute("ROLLBACK")  # the script's BEGIN left the session in a failed transaction
        first = migration_ids()[0]
        assert err.value.diag.message_primary == (
            f"pgchat: migration {first} is already applied to this database; nothing was changed")
        assert "pgchat sql --dsn" in (err.value.diag.message_hint or "")
        assert yoyo_log(conn) == log


def test_sql_all_on_a_half_migrated_database_changes_nothing(empty_dsn: str) -> None:
    first = migration_ids()[0]
    migrate.migrate(empty_dsn, to=first)
    script = run("sql", "--all").stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn, pytest.raises(
            psycopg.errors.RaiseException, match=f"{first} is already applied"):
        conn.execute(script)
    assert [s.id for s in migrate.status(empty_dsn) if s.applied] == [first]


def test_a_supabase_file_refuses_an_applied_migration(db_dsn: str, tmp_path: Path) -> None:
    run("sql", "--all", "--supabase", str(tmp_path))
    newest = sorted(tmp_path.iterdir())[-1]
    with psycopg.connect(db_dsn, autocommit=True) as conn, pytest.raises(
            psycopg.errors.RaiseException, match="is already applied to this database"):
        conn.execute(newest.read_text())


# --- --lock-timeout --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["500ms", "5s", "2min", "1h"])
def test_a_duration_reaches_the_script(value: str) -> None:
    result = run("sql", "--all", "--lock-timeout", value)
    assert result.exit_code == 0, result.output
    assert f"SET LOCAL lock_timeout = '{value}';\n" in result.stdout


@pytest.mark.parametrize("value", ["5s'; select 1; --", "5", "0s", "5 s", "-1s", "5sec", "",
                                   "1e3ms"])
def test_anything_else_is_refused(value: str, tmp_path: Path) -> None:
    for command in (["sql", "--all"], ["sql", "--all", "--supabase", str(tmp_path)],
                    ["migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/x"]):
        result = run(*command, "--lock-timeout", value)
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--lock-timeout'" in result.stderr
        assert "select 1" not in result.stdout
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="positive PostgreSQL duration"):
        migrate.render_script(migration_ids(), value)


# --- files given to pgchat sync ---------------------------------------------------------------


def test_a_non_utf8_file_to_sync_is_one_line(db: psycopg.Connection, db_dsn: str,
                                             tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_bytes(b'[{"id": "c1", "title": "caf\xe9", "messages": []}]')
    result = run("sync", "--user", str(make_user(db)), str(export), "--dsn", db_dsn)
    line = one_line(result, 2)
    assert line == (f"pgchat: error: {export}: not UTF-8 text (byte 0xe9 at offset 27); "
                    "export the conversations as UTF-8 JSON")
    assert db.execute("select count(*) from public.chat_sessions").fetchone() == (0,)


def test_a_utf8_file_with_a_byte_order_mark_is_read(db: psycopg.Connection, db_dsn: str,
                                                    tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_bytes('\ufeff[{"id": "c1", "title": "café", "messages": []}]'.encode())
    result = run("sync", "--user", str(make_user(db)), str(export), "--dsn", db_dsn, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sessions_inserted"] == 1


# --- usage show and usage verify agree --------------------------------------------------------


def test_an_unknown_user_is_the_same_error_everywhere(db_dsn: str) -> None:
    stranger = uuid4()
    lines = {one_line(run(*cmd, "--dsn", db_dsn), 1) for cmd in (
        ["usage", "show", str(stranger)], ["usage", "verify", "--user", str(stranger)],
        ["usage", "rebuild", "--user", str(stranger), "--yes"])}
    assert lines == {f"pgchat: error: unknown user {stranger}"}


# --- --json -----------------------------------------------------------------------------------


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()
                  ) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += leaf_commands(command, (*prefix, name))
        else:
            out.append(((*prefix, name), command))
    return out


def test_every_command_has_json() -> None:
    """The README says so."""
    missing = [" ".join(path) for path, command in leaf_commands(main)
               if not any("--json" in p.opts for p in command.params)]
    assert missing == []


def test_sql_json(db_dsn: str, empty_dsn: str) -> None:
    doc = json.loads(run("sql", "--all", "--json").stdout)
    assert doc["migrations"] == migration_ids()
    assert doc["script"].startswith("-- pgchat migrations: ")
    done = run("sql", "--dsn", db_dsn, "--json")
    assert json.loads(done.stdout) == {"migrations": [], "script": "-- pgchat: nothing to apply\n"}
    assert done.stderr == ""


def test_the_database_note_names_the_source(db_dsn: str) -> None:
    result = run("status", env={"PGCHAT_DSN": db_dsn})
    assert result.exit_code == 0, result.output
    assert re.match(r"database: .+ \(PGCHAT_DSN\)$", result.stderr.splitlines()[0])
    assert not result.stdout.startswith("database: ")
