"""`pgchat usage verify | rebuild | show` through click's runner.

On the adopted legacy fixture (inflated counters, a ledger holding the truth): verify reports the
drift and exits 1, rebuild shows it, asks, writes (or not) and leaves verify clean with the true
numbers of tests/legacy_data.py. On a migrated database: show prints a user's days.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgchat import migrate
from pgchat.cli import main
from tests.helpers import make_user, usage_days, usage_drift, usage_stats, write_messages
from tests.legacy_data import LegacyData


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["usage", *args], input=input)


def one_line_error(result: Result, exit_code: int) -> str:
    """The single `pgchat: error: ...` line of an expected failure (the `database: ...` note
    may precede it); never a traceback."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("database: ")]
    assert len(lines) == 1 and lines[0].startswith("pgchat: error: "), result.stderr
    return lines[0]


def counters(conn: psycopg.Connection) -> tuple[Any, ...]:
    """Every counter in the database (daily rows and profile totals), for before/after."""
    daily = conn.execute("SELECT * FROM public.user_usage_daily ORDER BY user_id, usage_date"
                         ).fetchall()
    profiles = conn.execute("SELECT id, usage_stats FROM public.profiles ORDER BY id").fetchall()
    conn.commit()
    return daily, profiles


def true_days(legacy: LegacyData, user_id: UUID) -> dict[date, dict[str, Any]]:
    """What exactly-once counting of the fixture gives, as usage_days() rows (the build day of
    the legacy fixture, where everything was booked, is rewritten to zeros)."""
    seconds: dict[date, int] = {}
    for m in legacy.messages:
        if m.role == "assistant" and not m.failed and legacy.owner(m.session_id) == user_id:
            day = m.message_timestamp.date()
            seconds[day] = seconds.get(day, 0) + m.elapsed_time
    return {d: {"messages_sent": u.messages_sent, "messages_received": u.messages_received,
                "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                "total_tokens": u.total_tokens, "models_used": u.models_used,
                "sessions_created": u.sessions_created, "active_seconds": seconds.get(d, 0),
                "active_minutes": seconds.get(d, 0) // 60}
            for (uid, d), u in legacy.expected_daily_usage().items() if uid == user_id}


def assert_the_truth(conn: psycopg.Connection, legacy: LegacyData) -> None:
    for user in legacy.users:
        days = {d: v for d, v in usage_days(conn, user.id).items()
                if any(v[k] for k in v if k != "models_used")}
        assert days == true_days(legacy, user.id)
        want = legacy.expected_daily_usage()
        mine = [u for (uid, _), u in want.items() if uid == user.id]
        assert usage_stats(conn, user.id) == {
            "total_messages": sum(u.messages_sent + u.messages_received for u in mine),
            "total_tokens": sum(u.total_tokens for u in mine),
            "sessions_created": sum(u.sessions_created for u in mine)}
    conn.commit()


@pytest.fixture
def adopted(legacy_db: psycopg.Connection, legacy_dsn: str) -> str:
    """The legacy fixture, migrated: inflated counters, a ledger that holds the truth."""
    legacy_db.commit()
    migrate.migrate(legacy_dsn)
    return legacy_dsn


# --- verify -------------------------------------------------------------------------------------


def test_verify_reports_the_drift_of_an_adopted_database_and_exits_1(adopted: str) -> None:
    result = run("verify", "--dsn", adopted)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0].split() == ["user", "date", "field", "recorded",
                                                     "counted"]
    assert "counter(s) drifted for 2 user(s); `pgchat usage rebuild` repairs them" in result.stdout
    assert "Traceback" not in result.output


def test_verify_json_lists_every_drifted_counter(
    adopted: str, legacy_db: psycopg.Connection, legacy: LegacyData
) -> None:
    result = run("verify", "--dsn", adopted, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert len(report["drift"]) == len(usage_drift(legacy_db))
    assert {d["user_id"] for d in report["drift"]} == {str(u.id) for u in legacy.users}
    # The ledger's side of the drift is the truth, e.g. the sessions created per day and in all.
    sessions = {(d["user_id"], d["usage_date"]): d["expected"] for d in report["drift"]
                if d["field"] == "sessions_created" and d["expected"] != "0"}
    truth = legacy.expected_daily_usage()
    assert sessions == {(str(uid), day.isoformat()): str(u.sessions_created)
                        for (uid, day), u in truth.items() if u.sessions_created} | {
        (str(user.id), None): str(sum(u.sessions_created for (uid, _), u in truth.items()
                                      if uid == user.id)) for user in legacy.users}


def test_verify_for_one_user_reports_only_that_user(adopted: str, legacy: LegacyData) -> None:
    bob = legacy.users[1].id
    result = run("verify", "--dsn", adopted, "--user", str(bob), "--json")
    assert result.exit_code == 1
    assert {d["user_id"] for d in json.loads(result.stdout)["drift"]} == {str(bob)}


def test_verify_of_a_clean_database_exits_0(db: psycopg.Connection, db_dsn: str) -> None:
    user = make_user(db)
    db.execute("INSERT INTO public.chat_sessions (id, user_id) VALUES ('s1', %s)", (user,))
    write_messages(db, [{"id": "m1", "session_id": "s1", "input_tokens": 3}])
    db.commit()
    result = run("verify", "--dsn", db_dsn)
    assert (result.exit_code, result.stdout) == (0, "ok: every counter matches what was counted\n")
    result = run("verify", "--dsn", db_dsn, "--json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, {"ok": True, "drift": []})


def test_verify_on_a_database_without_the_ledger_is_a_one_line_usage_error(
    legacy_db: psycopg.Connection, legacy_dsn: str
) -> None:
    legacy_db.commit()
    for command in ("verify", "rebuild"):
        assert "run `pgchat migrate` first" in one_line_error(run(command, "--dsn", legacy_dsn), 2)


# --- rebuild ------------------------------------------------------------------------------------


def test_rebuild_yes_restores_the_truth_and_verify_is_clean_afterwards(
    adopted: str, legacy_db: psycopg.Connection, legacy: LegacyData
) -> None:
    result = run("rebuild", "--dsn", adopted, "--yes")
    assert result.exit_code == 0, result.output
    assert "rewrote " in result.stdout

    assert_the_truth(legacy_db, legacy)
    assert run("verify", "--dsn", adopted).exit_code == 0
    again = run("rebuild", "--dsn", adopted, "--yes")
    assert (again.exit_code, again.stdout) == (
        0, "nothing to do: every counter matches what was counted\n")


def test_after_rebuild_edits_and_deletes_move_no_counter(
    adopted: str, legacy_db: psycopg.Connection, legacy: LegacyData
) -> None:
    assert run("rebuild", "--dsn", adopted, "--yes").exit_code == 0
    before = counters(legacy_db)
    legacy_db.execute("UPDATE public.chat_messages SET content = content || ' (synced again)'")
    legacy_db.execute("DELETE FROM public.chat_messages WHERE session_id = 'legacy-a2'")
    legacy_db.commit()
    assert counters(legacy_db) == before
    assert run("verify", "--dsn", adopted).exit_code == 0


def test_rebuild_json_reports_what_it_wrote(adopted: str, legacy: LegacyData,
                                            legacy_db: psycopg.Connection) -> None:
    planned = len(usage_drift(legacy_db))
    legacy_db.commit()
    result = run("rebuild", "--dsn", adopted, "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["dry_run"], report["written"], len(report["changes"])) == (False, planned,
                                                                              planned)
    assert_the_truth(legacy_db, legacy)


def test_rebuild_dry_run_writes_nothing(adopted: str, legacy_db: psycopg.Connection) -> None:
    before = counters(legacy_db)
    planned = len(usage_drift(legacy_db))
    legacy_db.commit()

    result = run("rebuild", "--dsn", adopted, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"dry run: {planned} counter(s) would change; nothing written" in result.stdout
    result = run("rebuild", "--dsn", adopted, "--dry-run", "--json")
    report = json.loads(result.stdout)
    assert (report["dry_run"], report["written"], len(report["changes"])) == (True, 0, planned)

    assert counters(legacy_db) == before
    assert run("verify", "--dsn", adopted).exit_code == 1


def test_rebuild_asks_and_no_aborts_without_writing(
    adopted: str, legacy_db: psycopg.Connection
) -> None:
    before = counters(legacy_db)
    result = run("rebuild", "--dsn", adopted, input="n\n")
    assert result.exit_code == 1
    assert "counter(s)? [y/N]" in result.stderr  # the question, after the before/after table
    assert "Aborted" in result.output
    assert counters(legacy_db) == before


def test_rebuild_asks_and_yes_writes(
    adopted: str, legacy_db: psycopg.Connection, legacy: LegacyData
) -> None:
    result = run("rebuild", "--dsn", adopted, input="y\n")
    assert result.exit_code == 0, result.output
    assert "counter(s)? [y/N]" in result.stderr
    assert_the_truth(legacy_db, legacy)
    assert run("verify", "--dsn", adopted).exit_code == 0


def test_rebuild_json_that_asks_still_prints_only_json_on_stdout(adopted: str) -> None:
    result = run("rebuild", "--dsn", adopted, "--json", input="y\n")
    if result.stdout.strip():  # refusing without --yes would be fine too
        json.loads(result.stdout)


def test_rebuild_for_one_user_leaves_the_others_drift(
    adopted: str, legacy_db: psycopg.Connection, legacy: LegacyData
) -> None:
    alice, bob = (u.id for u in legacy.users)
    assert run("rebuild", "--dsn", adopted, "--user", str(alice), "--yes").exit_code == 0
    assert {row[0] for row in usage_drift(legacy_db)} == {bob}
    legacy_db.commit()
    assert run("verify", "--dsn", adopted, "--user", str(alice)).exit_code == 0


# --- show ---------------------------------------------------------------------------------------


@pytest.fixture
def shown(db: psycopg.Connection) -> UUID:
    """A user with usage on 2025-03-01, 03-02 and 03-03 (UTC) and a session created 03-01."""
    user = make_user(db)
    db.execute("INSERT INTO public.chat_sessions (id, user_id, created_at)"
               " VALUES ('s1', %s, '2025-03-01T08:00:00Z')", (user,))
    write_messages(db, [
        {"id": "q1", "session_id": "s1", "input_tokens": 5, "total_tokens": 5,
         "message_timestamp": "2025-03-01T10:00:00Z"},
        {"id": "a1", "session_id": "s1", "role": "assistant", "model": "m/a", "output_tokens": 50,
         "total_tokens": 50, "elapsed_time": 130, "message_timestamp": "2025-03-01T23:30:00-05:00"},
        {"id": "q2", "session_id": "s1", "input_tokens": 7, "total_tokens": 7,
         "message_timestamp": "2025-03-03T00:00:00Z"},
    ])
    db.commit()
    return user


def test_show_prints_a_table_of_the_users_days(db_dsn: str, shown: UUID) -> None:
    result = run("show", str(shown), "--dsn", db_dsn)
    assert result.exit_code == 0, result.output
    header, _rule, *rows = result.stdout.splitlines()
    assert header.split() == ["date", "sent", "received", "input", "tok", "output", "tok",
                              "total", "tok", "sessions", "active", "min", "models"]
    assert [r.split() for r in rows] == [
        ["2025-03-01", "1", "0", "5", "0", "5", "1", "0"],
        ["2025-03-02", "0", "1", "0", "50", "50", "0", "2", "m/a:", "1"],
        ["2025-03-03", "1", "0", "7", "0", "7", "0", "0"],
    ]


def test_show_from_to_is_inclusive(db_dsn: str, shown: UUID) -> None:
    result = run("show", str(shown), "--dsn", db_dsn, "--from", "2025-03-02", "--to",
                 "2025-03-03", "--json")
    assert result.exit_code == 0, result.output
    assert [d["usage_date"] for d in json.loads(result.stdout)] == ["2025-03-02", "2025-03-03"]
    result = run("show", str(shown), "--dsn", db_dsn, "--to", "2025-03-01", "--json")
    assert [d["usage_date"] for d in json.loads(result.stdout)] == ["2025-03-01"]


def test_show_json_parses_and_holds_every_counter(db_dsn: str, shown: UUID) -> None:
    result = run("show", str(shown), "--dsn", db_dsn, "--from", "2025-03-02", "--to",
                 "2025-03-02", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{
        "user_id": str(shown), "usage_date": "2025-03-02", "messages_sent": 0,
        "messages_received": 1, "input_tokens": 0, "output_tokens": 50, "total_tokens": 50,
        "models_used": {"m/a": 1}, "sessions_created": 0, "active_seconds": 130,
        "active_minutes": 2}]


def test_show_an_empty_range_says_so(db_dsn: str, shown: UUID) -> None:
    result = run("show", str(shown), "--dsn", db_dsn, "--from", "2030-01-01")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "(no usage recorded in that range)"
    result = run("show", str(shown), "--dsn", db_dsn, "--from", "2030-01-01", "--json")
    assert json.loads(result.stdout) == []


def test_show_a_reversed_range_is_a_one_line_error(db_dsn: str, shown: UUID) -> None:
    result = run("show", str(shown), "--dsn", db_dsn, "--from", "2025-03-03", "--to",
                 "2025-03-01")
    line = one_line_error(result, 2)  # a usage error
    assert line == "pgchat: error: --from 2025-03-03 is after --to 2025-03-01"


def test_show_an_unparseable_date_is_a_usage_error(db_dsn: str, shown: UUID) -> None:
    result = run("show", str(shown), "--dsn", db_dsn, "--from", "2025-13-01")
    assert result.exit_code == 2
    assert "Invalid value for '--from'" in result.stderr
    assert "Traceback" not in result.output


def test_show_an_unknown_user_is_a_one_line_error(db_dsn: str) -> None:
    stranger = uuid4()
    line = one_line_error(run("show", str(stranger), "--dsn", db_dsn), 1)
    assert line == f"pgchat: error: unknown user {stranger}"
