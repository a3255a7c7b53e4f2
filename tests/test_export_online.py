"""The Supabase CLI export (`pgchat sql --supabase DIR`) and the steps that are online only
outside a transaction (0002a's CONCURRENTLY index, 0003a's batched backfill).

Each Supabase file says in its header which step is not online there; on a database of more
than OFFLINE_LIMIT chat messages it refuses (changing nothing) and names its online form, a
file for psql next to the migrations folder; run with psql, then the Supabase file marked as
applied (`supabase migration repair`), the whole route ends migrated, verified, and recorded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from click.testing import CliRunner

from pgchat import migrate, usage
from pgchat.cli import main
from tests.conftest import PgServer
from tests.helpers import migration_ids

ONLINE_ONLY = ["0002a_session_latest_index", "0003a_adopt_existing_rows"]


def _export(tmp_path: Path) -> tuple[list[Path], dict[str, Path]]:
    folder = tmp_path / "supabase" / "migrations"
    result = CliRunner().invoke(main, ["sql", "--all", "--supabase", str(folder)])
    assert result.exit_code == 0, result.output
    files = sorted(folder.iterdir())
    online = {p.name.split("_pgchat_", 1)[1].removesuffix(".sql"): p
              for p in sorted((tmp_path / "supabase" / migrate.ONLINE_FOLDER).iterdir())}
    return files, online


def test_the_files_say_which_step_is_not_online_and_where_its_online_form_is(
        tmp_path: Path) -> None:
    files, online = _export(tmp_path)
    assert sorted(online) == ONLINE_ONLY
    for path in files:
        mid = path.name.split("_pgchat_", 1)[1].removesuffix(".sql")
        text = path.read_text()
        if mid in ONLINE_ONLY:
            assert "NOT ONLINE IN THIS FILE" in text
            assert f"{migrate.ONLINE_FOLDER}/{online[mid].name}" in text
            assert "INDEX CONCURRENTLY" not in text  # its one-transaction form
        else:
            assert "NOT ONLINE" not in text
    assert "CREATE INDEX CONCURRENTLY" in online["0002a_session_latest_index"].read_text()
    script = CliRunner().invoke(main, ["sql", "--all"]).stdout
    assert "NOT ONLINE IN THIS SCRIPT" in script
    assert all(f"--   {mid}: " in script for mid in ONLINE_ONLY)


def _fill(conn: psycopg.Connection, messages: int) -> None:
    """A user, a session and `messages` messages, written without triggers (as a legacy
    database that already holds them)."""
    user = uuid4()
    conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'big@example.com')", (user,))
    conn.execute("INSERT INTO public.profiles (id, email) VALUES (%s, 'big@example.com')"
                 " ON CONFLICT DO NOTHING", (user,))
    conn.execute("INSERT INTO public.chat_sessions (id, user_id, title) VALUES ('big', %s, 't')",
                 (user,))
    conn.execute("SET session_replication_role = replica")
    conn.execute("INSERT INTO public.chat_messages (id, session_id, role, content, total_tokens,"
                 " input_tokens, message_timestamp)"
                 " SELECT 'm' || lpad(k::text, 7, '0'), 'big', 'user', 'hello', 3, 3,"
                 "        timestamptz '2025-01-01Z' + k * interval '1 second'"
                 " FROM generate_series(1, %s) k", (messages,))
    conn.execute("RESET session_replication_role")
    conn.commit()


def test_a_large_database_gets_the_online_form(tmp_path: Path, empty_db: psycopg.Connection,
                                               empty_dsn: str, pg_server: PgServer) -> None:
    files, online = _export(tmp_path)
    empty_db.commit()
    applied_by_supabase: list[str] = []
    ran_online: list[str] = []
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for path in files:
            mid = path.name.split("_pgchat_", 1)[1].removesuffix(".sql")
            try:
                with conn.transaction():  # the Supabase CLI: one transaction per file
                    conn.execute(path.read_text())
                applied_by_supabase.append(mid)
            except psycopg.errors.RaiseException as exc:
                assert mid in ONLINE_ONLY
                assert f"more than {migrate.OFFLINE_LIMIT} rows" in exc.diag.message_primary
                assert online[mid].name in (exc.diag.message_hint or "")
                assert "supabase migration repair --status applied" in exc.diag.message_hint
                assert mid not in {s.id for s in migrate.status(empty_dsn) if s.applied}
                psql = subprocess.run(
                    [str(pg_server.bin_dir / "psql"), "-X", "-q", "-f", str(online[mid]),
                     empty_dsn], capture_output=True, text=True, timeout=600, check=False)
                assert psql.returncode == 0, psql.stderr
                ran_online.append(mid)
                # `supabase migration repair` marks the file applied; were it pushed anyway,
                # it would stop at once, saying so
                with pytest.raises(psycopg.errors.RaiseException,
                                   match="already applied") as again, conn.transaction():
                    conn.execute(path.read_text())
                assert "supabase migration repair" in (again.value.diag.message_hint or "")
            if mid == "0002_baseline":
                _fill(conn, migrate.OFFLINE_LIMIT + 1)
    assert ran_online == ONLINE_ONLY
    assert applied_by_supabase == [m for m in migration_ids() if m not in ONLINE_ONLY]
    assert all(s.applied and not s.drifted for s in migrate.status(empty_dsn))
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        index = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid ="
                             " 'public.idx_chat_messages_session_latest'::regclass").fetchone()
        assert index == (True,)
        assert conn.execute("SELECT count(*) FROM pgchat.usage_ledger").fetchone() == (0,)
        counted = conn.execute("SELECT count(*) FROM pgchat.counted_events").fetchone()
        assert counted is not None and counted[0] == migrate.OFFLINE_LIMIT + 1 + 1
        usage.rebuild(conn)
        assert usage.verify(conn) == []


def test_an_online_file_refuses_to_run_before_what_it_depends_on(
        tmp_path: Path, empty_dsn: str, pg_server: PgServer) -> None:
    _, online = _export(tmp_path)
    psql = subprocess.run(
        [str(pg_server.bin_dir / "psql"), "-X", "-q", "-f",
         str(online["0003a_adopt_existing_rows"]), empty_dsn],
        capture_output=True, text=True, timeout=120, check=False)
    assert psql.returncode != 0
    assert "needs 0003_usage_ledger applied first" in psql.stderr


def test_the_backfill_runs_in_one_transaction_only_within_one_statistics_batch(
        tmp_path: Path, empty_db: psycopg.Connection, empty_dsn: str) -> None:
    """More sessions than one statistics batch: the one-transaction backfill would lock them
    batch by batch, out of the writers' order (it deadlocked with a writer at 100,000
    messages), so its file refuses even though the messages are few."""
    files, online = _export(tmp_path)
    empty_db.commit()
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for path in files:
            mid = path.name.split("_pgchat_", 1)[1].removesuffix(".sql")
            if mid == "0003a_adopt_existing_rows":
                with pytest.raises(psycopg.errors.RaiseException) as refused, conn.transaction():
                    conn.execute(path.read_text())
                assert (f"chat_sessions holds more than {migrate.OFFLINE_SESSION_LIMIT} rows"
                        in refused.value.diag.message_primary)
                assert online[mid].name in (refused.value.diag.message_hint or "")
                break
            with conn.transaction():
                conn.execute(path.read_text())
            if mid == "0002_baseline":
                user = uuid4()
                conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'x@example.com')",
                             (user,))
                conn.execute("INSERT INTO public.profiles (id, email) VALUES (%s, 'x@e.com')"
                             " ON CONFLICT DO NOTHING", (user,))
                conn.execute("INSERT INTO public.chat_sessions (id, user_id, title)"
                             " SELECT 's' || k, %s, 't' FROM generate_series(1, %s) k",
                             (user, migrate.OFFLINE_SESSION_LIMIT + 1))
        else:
            pytest.fail("no 0003a file")
