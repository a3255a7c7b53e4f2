"""Adopting a legacy database, and the seeds' story side by side on both schemas.

Migrating the legacy fixture takes what it holds as already counted (its stored rows are the
record; the ledger stays empty) and moves no counter (except the documented unit fix:
active_minutes held seconds); re-syncing the same rows afterwards counts nothing. The legacy
schema inflates the story's counters on every re-upload; pgchat does not, and `pgchat usage
rebuild` repairs an adopted, inflated database. (The CLI's verify/rebuild/show are in
test_usage_cli.py.)
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from click.testing import CliRunner

from pgchat import migrate
from pgchat.cli import main
from pgchat_dev import scenario
from tests.helpers import session_drift, usage_drift
from tests.legacy_data import LegacyData, install_legacy_schema

REUPLOADS = 5


def daily_rows(conn: psycopg.Connection) -> dict[tuple[UUID, date], dict[str, Any]]:
    columns = ("messages_sent", "messages_received", "input_tokens", "output_tokens",
               "total_tokens", "models_used", "sessions_created", "active_minutes")
    rows = conn.execute("SELECT user_id, usage_date, " + ", ".join(columns)
                        + " FROM public.user_usage_daily").fetchall()
    return {(r[0], r[1]): dict(zip(columns, r[2:], strict=True)) for r in rows}


def active_seconds(conn: psycopg.Connection) -> dict[tuple[UUID, date], int]:
    rows = conn.execute("SELECT user_id, usage_date, active_seconds FROM public.user_usage_daily"
                        ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def profile_stats(conn: psycopg.Connection) -> dict[UUID, dict[str, Any]]:
    return dict(conn.execute("SELECT id, usage_stats FROM public.profiles").fetchall())


def legacy_upsert_all(conn: psycopg.Connection, legacy: LegacyData) -> None:
    """The legacy app's per-row upsert of every stored message, failed ones included."""
    for conv in legacy.conversations:
        scenario.legacy_write_messages(conn, conv.id, [{
            "id": m.id, "role": m.role, "content": m.content, "model": m.model,
            "timestamp": m.message_timestamp.isoformat(), "input_tokens": m.input_tokens,
            "output_tokens": m.output_tokens, "total_tokens": m.total_tokens,
            "elapsed_time": m.elapsed_time, "user_message_id": m.user_message_id,
            "completion_id": m.completion_id, "error_message": m.error_message,
        } for m in conv.messages])


def pgchat_resync(conn: psycopg.Connection, legacy: LegacyData) -> None:
    """pgchat's insert-only sync of every conversation (what the app calls now)."""
    for user in legacy.users:
        convs = [{"id": c.id, "title": c.title, "createdAt": c.created_at.isoformat(),
                  "messages": [{"id": m.id, "role": m.role, "content": m.content,
                                "model": m.model, "timestamp": m.message_timestamp.isoformat(),
                                "input_tokens": m.input_tokens, "output_tokens": m.output_tokens,
                                "elapsed_time": m.elapsed_time,
                                "error_message": m.error_message}
                               for m in c.messages]}
                 for c in legacy.conversations if c.user_id == user.id]
        report = scenario.pgchat_upload(conn, user.id, convs)
        assert (report["errors"], report["messages_inserted"]) == ([], 0)


# --- adoption -------------------------------------------------------------------------------


def test_adoption_moves_no_counter_except_the_active_time_unit(
    legacy_db: psycopg.Connection, legacy_dsn: str
) -> None:
    before_daily, before_profiles = daily_rows(legacy_db), profile_stats(legacy_db)
    legacy_db.commit()
    assert any(row["active_minutes"] for row in before_daily.values())

    migrate.migrate(legacy_dsn)

    after_daily = daily_rows(legacy_db)
    assert active_seconds(legacy_db) == {k: v["active_minutes"] for k, v in before_daily.items()}
    assert after_daily == {k: v | {"active_minutes": v["active_minutes"] // 60}
                           for k, v in before_daily.items()}
    assert profile_stats(legacy_db) == before_profiles


def test_adoption_takes_every_successful_message_and_session_as_counted_without_a_backfill(
    legacy_db: psycopg.Connection, legacy_dsn: str, legacy: LegacyData
) -> None:
    legacy_db.commit()
    migrate.migrate(legacy_dsn)

    assert legacy_db.execute("SELECT count(*) FROM pgchat.usage_ledger").fetchone() == (0,)
    booked = legacy_db.execute(
        "SELECT kind, event_key, source FROM pgchat.counted_events ORDER BY 1, 2").fetchall()
    assert booked == sorted(
        [("message", m.id, "stored") for m in legacy.messages if not m.failed]
        + [("session", c.id, "stored") for c in legacy.conversations])
    # What was counted holds the true numbers, on the true (UTC) days, for rebuild to restore.
    expected = legacy_db.execute(
        "SELECT user_id, usage_date, messages_sent, messages_received, input_tokens,"
        " output_tokens, models_used, sessions_created FROM pgchat.expected_usage_daily"
    ).fetchall()
    truth = legacy.expected_daily_usage()
    assert {(r[0], r[1]): r[2:] for r in expected} == {
        key: (u.messages_sent, u.messages_received, u.input_tokens, u.output_tokens,
              u.models_used, u.sessions_created) for key, u in truth.items()}


def test_adoption_recomputes_session_statistics_without_touching_updated_at(
    legacy_db: psycopg.Connection, legacy_dsn: str, legacy: LegacyData
) -> None:
    query = "SELECT id, updated_at, last_activity FROM public.chat_sessions ORDER BY id"
    before = legacy_db.execute(query).fetchall()
    legacy_db.commit()
    migrate.migrate(legacy_dsn)

    assert legacy_db.execute(query).fetchall() == before
    assert session_drift(legacy_db) == []
    counts = dict(legacy_db.execute("SELECT id, message_count FROM public.chat_sessions"
                                    ).fetchall())
    assert counts == {c.id: sum(not m.failed for m in c.messages) for c in legacy.conversations}


@pytest.mark.parametrize("resync", [legacy_upsert_all, pgchat_resync],
                         ids=["legacy_upsert_of_every_row", "pgchat_sync"])
def test_a_resync_after_adoption_counts_nothing(
    legacy_db: psycopg.Connection, legacy_dsn: str, legacy: LegacyData, resync: Any
) -> None:
    legacy_db.commit()
    migrate.migrate(legacy_dsn)
    ledger = "SELECT * FROM pgchat.counted_events ORDER BY kind, event_key"
    before = (daily_rows(legacy_db), profile_stats(legacy_db),
              legacy_db.execute(ledger).fetchall())

    for _ in range(3):
        resync(legacy_db, legacy)
        legacy_db.commit()

    assert (daily_rows(legacy_db), profile_stats(legacy_db),
            legacy_db.execute(ledger).fetchall()) == before
    assert session_drift(legacy_db) == []


# --- the seeds' story, side by side -----------------------------------------------------------


def totals(conn: psycopg.Connection, user_id: UUID) -> dict[str, Any]:
    row = conn.execute(
        "SELECT coalesce(sum(messages_sent), 0), coalesce(sum(messages_received), 0),"
        " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " coalesce(sum(sessions_created), 0) FROM public.user_usage_daily WHERE user_id = %s",
        (user_id,)).fetchone()
    assert row is not None
    keys = ("messages_sent", "messages_received", "input_tokens", "output_tokens",
            "sessions_created")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def true_totals(truth: scenario.Truth) -> dict[str, int]:
    return {"messages_sent": truth.messages_sent, "messages_received": truth.messages_received,
            "input_tokens": truth.input_tokens, "output_tokens": truth.output_tokens,
            "sessions_created": truth.sessions_created}


def days_and_models(conn: psycopg.Connection, user_id: UUID) -> tuple[Counter[date], Counter[str]]:
    rows = conn.execute("SELECT usage_date, messages_sent + messages_received, models_used"
                        " FROM public.user_usage_daily WHERE user_id = %s", (user_id,)).fetchall()
    days: Counter[date] = Counter({d: n for d, n, _ in rows if n})
    models: Counter[str] = Counter()
    for _, _, used in rows:
        models.update(used)
    return days, models


def profile_totals(conn: psycopg.Connection, user_id: UUID) -> dict[str, int]:
    row = conn.execute("SELECT usage_stats FROM public.profiles WHERE id = %s",
                       (user_id,)).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row[0].items()}


def legacy_story_database(conn: psycopg.Connection, story: list[dict[str, Any]]) -> UUID:
    """The legacy schema in `conn`'s (empty) database, the story uploaded 1 + REUPLOADS times
    through the legacy app's sync route; committed."""
    install_legacy_schema(conn)
    user = scenario.create_user(conn, "legacy@example.com")
    for _ in range(1 + REUPLOADS):
        scenario.legacy_upload(conn, user, story)
        conn.commit()
    return user


def test_the_legacy_schema_inflates_the_story_and_pgchat_does_not(
    empty_db: psycopg.Connection, db: psycopg.Connection
) -> None:
    story = scenario.story("side")
    truth = scenario.truth(story)
    messages = [m for conv in story for m in conv["messages"]]

    legacy_user = legacy_story_database(empty_db, story)
    inflated = totals(empty_db, legacy_user)
    # Every upload booked every message again, failed ones included.
    assert inflated["messages_sent"] == (1 + REUPLOADS) * sum(m["role"] == "user"
                                                              for m in messages)
    assert inflated["messages_sent"] > truth.messages_sent
    assert inflated["output_tokens"] > truth.output_tokens

    user = scenario.create_user(db, "pgchat@example.com")
    for _ in range(1 + REUPLOADS):
        scenario.pgchat_upload(db, user, story)
        db.commit()
    assert totals(db, user) == true_totals(truth)
    assert days_and_models(db, user) == (truth.days, truth.models)
    assert profile_totals(db, user) == {"total_messages": truth.total_messages,
                                        "total_tokens": truth.total_tokens,
                                        "sessions_created": truth.sessions_created}
    assert usage_drift(db) == []


def test_the_legacy_write_path_on_pgchat_counts_the_truth(db: psycopg.Connection) -> None:
    """Even the legacy app's upsert-everything route, pointed at pgchat, counts exactly once."""
    story = scenario.story("route")
    user = scenario.create_user(db, "route@example.com")
    for _ in range(1 + REUPLOADS):
        scenario.legacy_upload(db, user, story)
        db.commit()
    truth = scenario.truth(story)
    assert totals(db, user) == true_totals(truth)
    assert days_and_models(db, user) == (truth.days, truth.models)
    assert usage_drift(db) == []
    assert session_drift(db) == []


def test_rebuild_restores_the_truth_on_an_adopted_inflated_story(
    empty_db: psycopg.Connection, empty_dsn: str
) -> None:
    story = scenario.story("adopt")
    truth = scenario.truth(story)
    user = legacy_story_database(empty_db, story)
    migrate.migrate(empty_dsn)
    assert totals(empty_db, user)["messages_sent"] > truth.messages_sent
    empty_db.commit()

    result = CliRunner().invoke(main, ["usage", "rebuild", "--dsn", empty_dsn, "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["written"] > 0

    assert totals(empty_db, user) == true_totals(truth)
    assert days_and_models(empty_db, user) == (truth.days, truth.models)
    assert profile_totals(empty_db, user)["total_messages"] == truth.total_messages
    assert usage_drift(empty_db) == []

    # ... and from now on, re-uploads count nothing.
    scenario.pgchat_upload(empty_db, user, story)
    scenario.legacy_upload(empty_db, user, story)
    empty_db.commit()
    assert totals(empty_db, user) == true_totals(truth)


def test_story_days_are_utc_days() -> None:
    """The story really spans several UTC days (else the day assertions above prove little)."""
    truth = scenario.truth(scenario.story("days"))
    assert len(truth.days) == 3
    assert min(truth.days) == datetime(2025, 7, 21, tzinfo=UTC).date()
