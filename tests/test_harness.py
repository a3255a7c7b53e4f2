"""The harness itself: each fixture database is what it claims to be."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg

from pgchat import migrate
from tests.helpers import make_user, migration_ids, table_counts
from tests.legacy_data import LegacyData


def test_db_has_every_migration_applied(db_dsn: str) -> None:
    states = migrate.status(db_dsn)
    assert [s.id for s in states] == migration_ids()
    assert all(s.applied and not s.drifted for s in states)


def test_empty_db_is_empty(empty_db: psycopg.Connection) -> None:
    assert table_counts(empty_db, ("public", "auth", "pgchat_migrations")) == {}
    assert empty_db.execute("select to_regnamespace('auth')").fetchone() == (None,)


def test_make_user_creates_profile_through_trigger(db: psycopg.Connection) -> None:
    user_id = make_user(db, "someone@example.com")
    row = db.execute("select email from public.profiles where id = %s", (user_id,)).fetchone()
    assert row == ("someone@example.com",)


def test_legacy_fixture_holds_the_plan(legacy_db: psycopg.Connection, legacy: LegacyData) -> None:
    counts = table_counts(legacy_db)
    assert counts["auth.users"] == counts["public.profiles"] == len(legacy.users) == 2
    assert counts["public.chat_sessions"] == len(legacy.conversations) == 3
    assert counts["public.chat_messages"] == len(legacy.messages) == 60
    failed = legacy_db.execute(
        "select id from public.chat_messages where error_message is not null order by id"
    ).fetchall()
    assert [r[0] for r in failed] == sorted(m.id for m in legacy.failed_messages)
    assert len(failed) == 2
    days = legacy_db.execute(
        "select count(distinct (message_timestamp at time zone 'UTC')::date)"
        " from public.chat_messages"
    ).fetchone()
    assert days == (3,)
    # Not pgchat's stand-in: the migrations must treat it like a real Supabase auth schema.
    assert legacy_db.execute("select obj_description('auth'::regnamespace)").fetchone() == (None,)
    assert legacy_db.execute("select to_regnamespace('pgchat_migrations')").fetchone() == (None,)


def test_legacy_counters_are_inflated(legacy_db: psycopg.Connection, legacy: LegacyData) -> None:
    """The bugs the fixture exists for: every re-sync booked the usage again, failed replies
    included, all of it on the day of the write instead of the day of the message."""
    rows = legacy_db.execute(
        "select user_id, count(*), sum(messages_sent), sum(messages_received),"
        " sum(input_tokens), sum(output_tokens) from public.user_usage_daily group by user_id"
    ).fetchall()
    truth = legacy.expected_daily_usage()
    passes = 1 + legacy.resyncs
    for user_id, days, sent, received, input_tokens, output_tokens in rows:
        mine = [u for (uid, _), u in truth.items() if uid == user_id]
        assert days == 1  # everything booked on one day, the day the fixture was built
        assert sent == passes * sum(u.messages_sent for u in mine)
        failed = sum(1 for m in legacy.failed_messages if legacy.owner(m.session_id) == user_id)
        assert received == passes * (sum(u.messages_received for u in mine) + failed)
        assert input_tokens == passes * sum(u.input_tokens for u in mine)
        assert output_tokens == passes * sum(u.output_tokens for u in mine)
    assert len(rows) == len(legacy.users)


def test_legacy_truth_spans_three_days(legacy: LegacyData) -> None:
    alice, bob = (u.id for u in legacy.users)
    truth = legacy.expected_daily_usage()
    assert sorted(d for (uid, d) in truth if uid == alice) == [
        date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)]
    assert sorted(d for (uid, d) in truth if uid == bob) == [date(2025, 3, 3)]
    assert sum(u.messages_sent for u in truth.values()) == 30
    assert sum(u.messages_received for u in truth.values()) == 28
    last = legacy.expected_session_stats()["legacy-a2"].last_message_timestamp
    assert last == datetime(2025, 3, 3, 0, 9, tzinfo=UTC)
