"""The typed Python API of the write paths (pgchat.chat) and `pgchat sync --user UUID FILE`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import pgchat.chat as chat
from pgchat import PermissionDenied, ValidationError
from pgchat.cli import main
from pgchat_dev import scenario
from tests.helpers import make_user, message

# --- the Python API ---------------------------------------------------------------------------


def test_sync_takes_dataclasses_and_returns_a_typed_report(db: psycopg.Connection) -> None:
    user = make_user(db)
    conversations = [
        chat.Conversation(id="c1", title="Hi", createdAt="2025-07-24T16:14:00Z", messages=[
            chat.ChatMessage(id="m1", role="user", content="hello",
                             timestamp="2025-07-24T16:14:11Z", input_tokens=5),
            chat.ChatMessage(id="m2", role="assistant", content="hi!",
                             timestamp="2025-07-24T16:14:13Z", output_tokens=9, model="x/y",
                             user_message_id="m1", elapsed_time=1.5, contentType="markdown"),
            chat.ChatMessage(id="m3", role="user", content="again?",
                             timestamp="2025-07-24T16:15:00Z", error=True)]),
        chat.Conversation(id="c2", messages=[chat.ChatMessage(
            id="m4", role="robot", content="?", timestamp="2025-07-24")]),  # type: ignore[arg-type]
    ]
    report = chat.sync_user_conversations(db, user, conversations)
    assert report == chat.SyncReport(
        conversations_received=2, conversations_failed=1, sessions_inserted=1,
        sessions_existing=0, messages_inserted=2, messages_existing=0, messages_skipped_failed=1,
        errors=[chat.SyncError("c2", "m4", 'unknown role "robot" (expected user or assistant)')])
    assert not report.ok
    assert db.execute("select elapsed_time, content_type from public.chat_messages"
                      " where id = 'm2'").fetchone() == (2, "markdown")


def test_sync_takes_plain_dicts_and_the_wrapped_form(db: psycopg.Connection) -> None:
    user = make_user(db)
    report = chat.sync_user_conversations(
        db, user, {"conversations": [{"id": "c1", "messages": [message("m1")]}]})
    assert report.ok and (report.sessions_inserted, report.messages_inserted) == (1, 1)
    again = chat.sync_user_conversations(db, user, [{"id": "c1", "messages": [message("m1")]}])
    assert again.ok and (again.sessions_existing, again.messages_existing) == (1, 1)


def test_reports_add_up_across_batches() -> None:
    total = chat.SyncReport()
    total.add(chat.SyncReport(conversations_received=2, sessions_inserted=2, messages_inserted=7))
    total.add(chat.SyncReport.from_json({
        "conversations_received": 1, "conversations_failed": 1, "sessions_inserted": 0,
        "sessions_existing": 0, "messages_inserted": 0, "messages_existing": 0,
        "messages_skipped_failed": 0,
        "errors": [{"conversation_id": "c9", "message_id": None, "reason": "r"}]}))
    assert total.to_json() == {
        "conversations_received": 3, "conversations_failed": 1, "sessions_inserted": 2,
        "sessions_existing": 0, "messages_inserted": 7, "messages_existing": 0,
        "messages_skipped_failed": 0,
        "errors": [{"conversation_id": "c9", "message_id": None, "reason": "r"}]}
    assert not total.ok


def test_write_chat_exchange_takes_dataclasses(db: psycopg.Connection) -> None:
    user = make_user(db)
    question = chat.ChatMessage(id="u1", role="user", content="q", input_tokens=3)
    reply = chat.ChatMessage(id="a1", role="assistant", content="a", output_tokens=40, model="x")
    assert chat.write_chat_exchange(db, user, "c1", question, reply, "Title") == \
        chat.ExchangeResult(session_created=True, messages_written=2)
    assert db.execute("select user_message_id from public.chat_messages where id = 'a1'"
                      ).fetchone() == ("u1",)
    assert chat.update_session_title(db, user, "c1", "Other") is True
    assert chat.update_session_title(db, user, "c1", "Other") is False


@pytest.mark.parametrize(("call", "error"), [
    (lambda db, u: chat.sync_user_conversations(db, u, {"items": []}), ValidationError),
    (lambda db, u: chat.sync_user_conversations(db, uuid.uuid4(), []), ValidationError),
    (lambda db, u: chat.write_chat_exchange(db, u, "c1", {"content": "no id"}), ValidationError),
    (lambda db, u: chat.update_session_title(db, u, "missing", "t"), ValidationError),
    (lambda db, u: chat.update_session_title(db, u, "c1", ""), ValidationError),
], ids=["payload", "unknown user", "exchange", "missing conversation", "empty title"])
def test_expected_failures_raise_pgchat_exceptions(db: psycopg.Connection, call: Any,
                                                   error: type[Exception]) -> None:
    user = make_user(db)
    with pytest.raises(error) as raised:
        call(db, user)
    assert "\n" not in str(raised.value)  # one line, fit to print


def test_acting_for_another_user_raises_permission_denied(db: psycopg.Connection) -> None:
    alice, bob = make_user(db), make_user(db)
    db.execute("set local role authenticated")
    db.execute("select set_config('request.jwt.claims', %s, true)",
               (json.dumps({"sub": str(alice), "role": "authenticated"}),))
    with pytest.raises(PermissionDenied, match=f"not allowed to act for user {bob}"):
        chat.sync_user_conversations(db, bob, [])


# --- `pgchat sync` ----------------------------------------------------------------------------


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["sync", *args], input=stdin)


def one_error_line(result: Result, exit_code: int) -> str:
    """An expected failure: the exit code, and one line on stderr (no traceback)."""
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("database: ")]
    assert len(lines) == 1 and lines[0].startswith("pgchat: error: "), result.stderr
    return lines[0]


def write(tmp_path: Path, data: Any, name: str = "export.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def session_ids(conn: psycopg.Connection) -> list[str]:
    conn.rollback()  # see what the CLI committed
    return [r[0] for r in conn.execute("select id from public.chat_sessions order by id")]


def test_sync_a_file_and_print_the_report_as_json(db: psycopg.Connection, db_dsn: str,
                                                  tmp_path: Path) -> None:
    user = make_user(db)
    story = scenario.story("cli")
    export = write(tmp_path, {"conversations": story})
    result = run("--user", str(user), export, "--dsn", db_dsn, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {
        "conversations_received": 3, "conversations_failed": 0, "sessions_inserted": 3,
        "sessions_existing": 0, "messages_inserted": 58, "messages_existing": 0,
        "messages_skipped_failed": 2, "errors": []}
    assert session_ids(db) == ["cli-c0", "cli-c1", "cli-c2"]
    again = json.loads(run("--user", str(user), export, "--dsn", db_dsn, "--json").stdout)
    assert (again["sessions_existing"], again["messages_existing"],
            again["messages_inserted"]) == (3, 58, 0)


def test_sync_from_stdin_prints_a_table(db: psycopg.Connection, db_dsn: str) -> None:
    user = make_user(db)
    payload = json.dumps([{"id": "c1", "messages": [message("m1"), message("m2", error=True)]}])
    result = run("--user", str(user), "-", "--dsn", db_dsn, stdin=payload)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["inserted", "already", "there", "skipped", "(failed)"]
    assert lines[2].split() == ["conversations", "1", "0"]
    assert lines[3].split() == ["messages", "1", "0", "1"]
    assert "database: " in result.stderr and "syncing" not in result.stderr
    assert session_ids(db) == ["c1"]


def test_a_rejected_conversation_exits_1_and_says_why(db: psycopg.Connection, db_dsn: str,
                                                     tmp_path: Path) -> None:
    user = make_user(db)
    export = write(tmp_path, [{"id": "good", "messages": [message("m1")]},
                              {"id": "bad", "messages": [message("m2", input_tokens=-1)]}])
    as_json = run("--user", str(user), export, "--dsn", db_dsn, "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert (report["conversations_failed"], report["sessions_inserted"]) == (1, 1)
    reason = "input_tokens must be an integer from 0 to 10000000, got -1"
    assert report["errors"] == [{"conversation_id": "bad", "message_id": "m2", "reason": reason}]
    assert session_ids(db) == ["good"]

    for_people = run("--user", str(user), export, "--dsn", db_dsn)
    assert for_people.exit_code == 1
    assert "1 conversation(s) rejected, nothing of them was written:" in for_people.stdout
    assert "input_tokens must be an integer from 0 to 10000000, got -1" in for_people.stdout


@pytest.mark.parametrize(("content", "says"), [
    ("this is not json", "not valid JSON"),
    ("", "not valid JSON"),
    ('{"conversations": 5}', "expected an array of conversations"),
    ('{"id": "c1", "messages": []}', "expected an array of conversations"),
    ("42", "expected an array of conversations"),
], ids=["text", "empty", "conversations not a list", "one conversation", "a number"])
def test_a_file_that_is_not_a_list_of_conversations_exits_2(
        db: psycopg.Connection, db_dsn: str, tmp_path: Path, content: str, says: str) -> None:
    user = make_user(db)
    result = run("--user", str(user), write(tmp_path, content), "--dsn", db_dsn)
    assert says in one_error_line(result, 2)
    assert session_ids(db) == []


def test_not_json_on_stdin_exits_2(db: psycopg.Connection, db_dsn: str) -> None:
    result = run("--user", str(make_user(db)), "-", "--dsn", db_dsn, stdin="[{")
    assert "not valid JSON" in one_error_line(result, 2)


def test_an_unknown_user_exits_1_with_one_line(db: psycopg.Connection, db_dsn: str,
                                               tmp_path: Path) -> None:
    export = write(tmp_path, [{"id": "c1", "messages": [message("m1")]}])
    result = run("--user", str(uuid.uuid4()), export, "--dsn", db_dsn)
    assert "unknown user" in one_error_line(result, 1)
    assert session_ids(db) == []


def test_a_user_that_is_not_a_uuid_is_a_usage_error(tmp_path: Path) -> None:
    result = run("--user", "alice", write(tmp_path, []))
    assert result.exit_code == 2 and "is not a valid UUID" in result.stderr


def test_batches_sync_everything_and_show_progress(db: psycopg.Connection, db_dsn: str,
                                                   tmp_path: Path) -> None:
    user = make_user(db)
    export = write(tmp_path, [{"id": f"c{i}", "messages": [message(f"m{i}")]} for i in range(5)])
    result = run("--user", str(user), export, "--dsn", db_dsn, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "syncing" in result.stderr  # progress, on stderr, for people only
    assert result.stdout.splitlines()[2].split() == ["conversations", "5", "0"]
    assert session_ids(db) == ["c0", "c1", "c2", "c3", "c4"]

    quiet = run("--user", str(user), export, "--dsn", db_dsn, "--batch-size", "2", "--json")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    report = json.loads(quiet.stdout)
    assert (report["conversations_received"], report["sessions_existing"],
            report["messages_existing"]) == (5, 5, 5)


def test_a_failing_batch_does_not_undo_the_others(db: psycopg.Connection, db_dsn: str,
                                                  tmp_path: Path) -> None:
    user = make_user(db)
    conversations = [{"id": f"c{i}", "messages": [message(f"m{i}")]} for i in range(4)]
    conversations[3]["messages"][0]["role"] = "robot"
    export = write(tmp_path, conversations)
    result = run("--user", str(user), export, "--dsn", db_dsn, "--batch-size", "2", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["conversations_received"], report["conversations_failed"],
            report["sessions_inserted"]) == (4, 1, 3)
    assert [e["conversation_id"] for e in report["errors"]] == ["c3"]
    assert session_ids(db) == ["c0", "c1", "c2"]
