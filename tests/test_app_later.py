"""Issue 17: adopting the app at its LATER state, one behaviour per test.

The `prod_later` fixture is the app's public schema at teamcmcbot/openrouter-chatbot 8940456
(sql/legacy/prod_later.sql; facts in docs/app-later-facts.md) on Supabase's permission model,
filled the way its routes write (tests/app_later.py: PostgREST requests as `authenticated` or
`service_role`). Every migration here runs as the non-superuser migration role.

The first group checks the fixture itself and the app's own write paths before pgchat: they must
pass. The rest is issue 17's "Done when" (the spec the migrations are being changed to meet).
The 7c23e21 path stays covered by tests/test_adoption.py (fixture `prod`) and the Supabase-role
tests by tests/test_supabase_roles.py; `test_the_7c23e21_fixture_still_adopts` repeats the
essential check here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from click.testing import CliRunner

from pgchat import migrate
from pgchat.cli import main
from tests import app_later
from tests.app_later import LaterData
from tests.conftest import SupabaseDb

DumpSchema = Callable[..., str]
APP_TABLES = ("profiles", "chat_sessions", "chat_messages", "user_usage_daily",
              "message_token_costs", "chat_attachments", "subscriptions", "admin_audit_log")


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def adopt(db: SupabaseDb) -> None:
    """`pgchat migrate` as the migration role."""
    db.admin.commit()
    migrate.migrate(db.dsn)


def scalar(conn: psycopg.Connection, query: str, *args: object) -> Any:
    row = conn.execute(query, args).fetchone()
    conn.commit()
    assert row is not None
    return row[0]


def new_conversation(later: LaterData, conv_id: str, user: int = 0, *, pairs: int = 2,
                     day: int = 10) -> app_later.Conversation:
    return app_later.conversation(conv_id, later.users[user].id,
                                  datetime(2025, 11, day, 10, 0, tzinfo=UTC), app_later.MODEL_A,
                                  pairs=pairs)


def assert_counts_exact(db: SupabaseDb, conversations: tuple[app_later.Conversation, ...],
                        users: tuple[uuid.UUID, ...]) -> None:
    """`usage verify` is clean and every user's daily message, token and model counters equal
    the truth (the time counters have tests of their own)."""
    verify = run("usage", "verify", "--dsn", db.dsn)
    assert verify.exit_code == 0, verify.output
    truth = app_later.true_daily(conversations)
    for user_id in users:
        expected = {d: replace(v, generation_ms=0) for (u, d), v in truth.items() if u == user_id}
        got = {d: replace(v, generation_ms=0)
               for d, v in app_later.counted_daily(db.admin, user_id).items()}
        got = {d: v for d, v in got.items() if v != app_later.Daily()}
        db.admin.commit()
        assert got == expected


def app_objects(dump: str) -> str:
    """The schema dump of the app's schema `public`, for before/after comparisons."""
    return re.sub(r"\n{3,}", "\n\n", dump)


# --- the fixture, and the app's own write paths before pgchat (must pass) -----------------------


def test_the_fixture_is_the_apps_later_state(prod_later: SupabaseDb, later: LaterData) -> None:
    conn = prod_later.admin
    columns = {r[0] for r in conn.execute(
        "select table_name || '.' || column_name from information_schema.columns"
        " where table_schema = 'public'").fetchall()}
    assert {"chat_messages.elapsed_ms", "user_usage_daily.generation_ms",
            "user_usage_daily.estimated_cost", "profiles.stripe_customer_id",
            "profiles.account_type", "profiles.credits", "profiles.personality_preset"} <= columns
    assert not {"chat_messages.elapsed_time", "user_usage_daily.active_minutes",
                "user_usage_daily.active_seconds"} & columns
    triggers = {r[0] for r in conn.execute(
        "select tgname from pg_trigger where not tgisinternal").fetchall()}
    assert {"on_message_change", "after_assistant_message_cost", "on_session_created",
            "after_attachment_link_recompute_cost", "on_auth_user_profile_sync"} <= triggers
    assert scalar(conn, "select count(*) from public.chat_messages") == len(
        [m for c in later.conversations for m in c.messages])
    assert scalar(conn, "select count(*) from public.profiles") == 3


def test_the_app_still_inflates_its_counters(prod_later: SupabaseDb, later: LaterData) -> None:
    # Counted on the day of the upload, and the re-uploaded conversation twice.
    counted = scalar(prod_later.admin, "select sum(messages_sent + messages_received)"
                                       " from public.user_usage_daily")
    gone = next(c for c in later.synced if c.id == later.reuploaded)
    truth = app_later.true_messages(later.conversations)
    assert counted == truth + app_later.true_messages([gone])
    days = {r[0] for r in prod_later.admin.execute(
        "select usage_date from public.user_usage_daily where messages_sent > 0").fetchall()}
    assert days == {date.today()}


def test_the_fixture_prices_assistant_messages(prod_later: SupabaseDb, later: LaterData) -> None:
    replies = [m for c in later.conversations for m in c.messages
               if m.role == "assistant" and not m.failed]
    assert scalar(prod_later.admin, "select count(*) from public.message_token_costs") == len(
        replies)
    assert scalar(prod_later.admin, "select sum(estimated_cost) from public.user_usage_daily") > 0


def test_the_apps_own_write_paths_work_before_pgchat(prod_later: SupabaseDb,
                                                     later: LaterData) -> None:
    alice, bob = later.users
    dsn = prod_later.dsn
    assert app_later.sign_in_sync(dsn, alice.id, later.conversations_of(alice.id))["errors"] == 0
    conv = new_conversation(later, "pre-live")
    assert app_later.live_chat(dsn, alice.id, conv, 0) is None
    assert app_later.profile_update(dsn, bob.id) == 1
    assert app_later.stripe_checkout(dsn, bob.id, "cus_pre_bob") == 1
    assert app_later.stripe_webhook_subscription(dsn, "evt_pre", "cus_pre_bob", "sub_pre") == 1
    assert app_later.admin_update_user(dsn, later.admin.id, alice.id, credits=7) == 1
    assert app_later.admin_update_user(dsn, None, alice.id, credits=8) == 1
    app_later.delete_conversation(dsn, bob.id, "later-b1")
    assert app_later.sign_in_sync(dsn, bob.id, later.conversations_of(bob.id))["errors"] == 0
    app_later.user_writes_own_counters(dsn, alice.id, date(2025, 11, 3), "later-a1")
    assert scalar(prod_later.admin, "select credits from public.profiles where id = %s",
                  alice.id) == 8


# --- issue 17, "Done when": on the later fixture, as the migration role --------------------------


def test_migrate_exits_0_without_any_hand_change(prod_later: SupabaseDb) -> None:
    prod_later.admin.commit()
    result = run("migrate", "--dsn", prod_later.dsn)
    assert result.exit_code == 0, result.output


def test_migrate_keeps_every_row(prod_later: SupabaseDb) -> None:
    query = ("select " + ", ".join(f"(select count(*) from public.{t})" for t in APP_TABLES))
    before = prod_later.admin.execute(query).fetchone()
    adopt(prod_later)
    assert prod_later.admin.execute(query).fetchone() == before


def test_dry_run_exits_0_and_names_the_counters_pgchat_maintains(prod_later: SupabaseDb,
                                                                 dump_schema: DumpSchema) -> None:
    prod_later.admin.commit()
    before = dump_schema(prod_later.admin_dsn)
    result = run("migrate", "--dry-run", "--dsn", prod_later.dsn)
    assert result.exit_code == 0, result.output
    for counter in ("messages_sent", "messages_received", "generation_ms", "models_used",
                    "sessions_created", "usage_stats", "message_count"):
        assert counter in result.output, counter
    assert "estimated_cost" in result.output  # named as the app's, left to it
    assert dump_schema(prod_later.admin_dsn) == before


def test_sign_in_sync_with_statistics_columns_succeeds_after_migrate(
        prod_later: SupabaseDb, later: LaterData) -> None:
    adopt(prod_later)
    for user in later.users:
        result = app_later.sign_in_sync(prod_later.dsn, user.id, later.conversations_of(user.id))
        assert result["errors"] == 0, result


def test_live_chat_writes_and_its_statistics_update_succeed_after_migrate(
        prod_later: SupabaseDb, later: LaterData) -> None:
    adopt(prod_later)
    conv = new_conversation(later, "post-live")
    for n in range(conv.pairs):
        assert app_later.live_chat(prod_later.dsn, conv.user_id, conv, n) is None
    assert scalar(prod_later.admin, "select count(*) from public.chat_messages"
                                    " where session_id = 'post-live'") == 4


def test_profile_write_succeeds_after_migrate(prod_later: SupabaseDb, later: LaterData) -> None:
    adopt(prod_later)
    assert app_later.profile_update(prod_later.dsn, later.users[1].id) == 1


def test_stripe_checkout_and_webhook_succeed_after_migrate(prod_later: SupabaseDb,
                                                           later: LaterData) -> None:
    adopt(prod_later)
    bob = later.users[1]
    assert app_later.stripe_checkout(prod_later.dsn, bob.id, "cus_post_bob") == 1
    assert app_later.stripe_webhook_subscription(prod_later.dsn, "evt_post", "cus_post_bob",
                                                 "sub_post_bob", tier="enterprise") == 1
    assert scalar(prod_later.admin, "select subscription_tier from public.profiles where id = %s",
                  bob.id) == "enterprise"


def test_admin_write_succeeds_after_migrate(prod_later: SupabaseDb, later: LaterData) -> None:
    adopt(prod_later)
    alice = later.users[0]
    assert app_later.admin_update_user(prod_later.dsn, later.admin.id, alice.id, tier="enterprise",
                                       account_type="admin", credits=123) == 1
    assert prod_later.admin.execute(
        "select subscription_tier, account_type, credits from public.profiles where id = %s",
        (alice.id,)).fetchone() == ("enterprise", "admin", 123)


def test_admin_write_as_service_role_succeeds_after_migrate(prod_later: SupabaseDb,
                                                            later: LaterData) -> None:
    adopt(prod_later)
    assert app_later.admin_update_user(prod_later.dsn, None, later.users[0].id, credits=5) == 1


def test_new_assistant_messages_are_still_priced(prod_later: SupabaseDb,
                                                 later: LaterData) -> None:
    adopt(prod_later)
    costs = "select count(*), coalesce(sum(total_cost), 0) from public.message_token_costs"
    estimated = "select coalesce(sum(estimated_cost), 0) from public.user_usage_daily"
    before, cost_before = scalar(prod_later.admin, costs), scalar(prod_later.admin, estimated)
    conv = new_conversation(later, "post-priced", pairs=3)
    for n in range(conv.pairs):  # the messages are stored even if the statistics UPDATE fails
        app_later.live_chat(prod_later.dsn, conv.user_id, conv, n)
    assert scalar(prod_later.admin, costs) == before + 3
    assert scalar(prod_later.admin, estimated) > cost_before


def test_generation_ms_stays_maintained(prod_later: SupabaseDb, later: LaterData) -> None:
    adopt(prod_later)
    assert run("usage", "rebuild", "--yes", "--dsn", prod_later.dsn).exit_code == 0
    conv = new_conversation(later, "post-generation", day=12)
    for n in range(conv.pairs):  # the messages are stored even if the statistics UPDATE fails
        app_later.live_chat(prod_later.dsn, conv.user_id, conv, n)
    got = scalar(prod_later.admin, "select generation_ms from public.user_usage_daily"
                                   " where user_id = %s and usage_date = '2025-11-12'",
                 conv.user_id)
    assert got == sum(m.elapsed_ms for m in conv.messages if m.role == "assistant")


def test_active_time_stays_maintained(prod_later: SupabaseDb, later: LaterData) -> None:
    # At this state the app's time counter is generation_ms (active_minutes is gone). After a
    # rebuild every day's generation_ms is the truth (the sum of its counted replies'
    # elapsed_ms); an active_seconds / active_minutes column, if pgchat keeps one here, agrees
    # with it (rounded per reply or per day).
    adopt(prod_later)
    assert run("usage", "rebuild", "--yes", "--dsn", prod_later.dsn).exit_code == 0
    columns = {r[0] for r in prod_later.admin.execute(
        "select column_name from information_schema.columns where table_schema = 'public'"
        " and table_name = 'user_usage_daily'").fetchall()}
    truth = app_later.true_daily(later.conversations)
    for (user_id, day), daily in truth.items():
        row = prod_later.admin.execute(
            "select to_jsonb(u) from public.user_usage_daily u"
            " where user_id = %s and usage_date = %s", (user_id, day)).fetchone()
        prod_later.admin.commit()
        assert row is not None, (user_id, day)
        got = row[0]
        assert got["generation_ms"] == daily.generation_ms, (user_id, day)
        replies = daily.messages_received
        if "active_seconds" in columns:
            assert daily.generation_ms // 1000 - replies <= got["active_seconds"] \
                <= daily.generation_ms // 1000 + 1, (user_id, day, got)
        if "active_minutes" in columns:
            assert got["active_minutes"] in (daily.generation_ms // 60000,
                                             (daily.generation_ms // 1000 - replies) // 60)


def test_counters_equal_a_recount_after_rebuild(prod_later: SupabaseDb, later: LaterData) -> None:
    adopt(prod_later)
    rebuild = run("usage", "rebuild", "--yes", "--dsn", prod_later.dsn)
    assert rebuild.exit_code == 0, rebuild.output
    assert_counts_exact(prod_later, later.conversations, tuple(u.id for u in later.users))


def test_counters_equal_a_recount_after_every_later_write_path(prod_later: SupabaseDb,
                                                               later: LaterData) -> None:
    adopt(prod_later)
    assert run("usage", "rebuild", "--yes", "--dsn", prod_later.dsn).exit_code == 0
    alice, bob = later.users
    dsn = prod_later.dsn
    live = new_conversation(later, "post-recount", day=14)

    def live_so_far(n: int) -> tuple[app_later.Conversation, ...]:
        done = app_later.Conversation(live.id, live.user_id, live.title, live.messages[:2 * n])
        return (*later.conversations, done)

    # (write path, what the database holds afterwards)
    steps: list[tuple[str, Callable[[], object], tuple[app_later.Conversation, ...]]] = [
        ("sign-in sync", lambda: app_later.sign_in_sync(
            dsn, alice.id, later.conversations_of(alice.id)), later.conversations),
        *((f"live chat {n}", lambda n=n: app_later.live_chat(dsn, alice.id, live, n),
           live_so_far(n + 1)) for n in range(live.pairs)),
        # usage is consumption, not content: deleting a conversation keeps its usage
        ("delete", lambda: app_later.delete_conversation(dsn, bob.id, "later-b1"),
         live_so_far(live.pairs)),
        ("re-upload", lambda: app_later.sign_in_sync(
            dsn, bob.id, later.conversations_of(bob.id)), live_so_far(live.pairs)),
        ("profile", lambda: app_later.profile_update(dsn, alice.id), live_so_far(live.pairs)),
        ("stripe", lambda: app_later.stripe_checkout(dsn, bob.id, "cus_recount"),
         live_so_far(live.pairs)),
        ("admin", lambda: app_later.admin_update_user(dsn, later.admin.id, bob.id),
         live_so_far(live.pairs)),
    ]
    for name, step, holds in steps:
        result = step()
        assert result in (None, 1) or (isinstance(result, dict) and result["errors"] == 0), (
            name, result)
        verify = run("usage", "verify", "--dsn", dsn)
        assert verify.exit_code == 0, (name, verify.output)
        assert_counts_exact(prod_later, holds, (alice.id, bob.id))


def test_a_user_writing_their_own_counters_changes_nothing_and_does_not_fail(
        prod_later: SupabaseDb, later: LaterData) -> None:
    adopt(prod_later)
    assert run("usage", "rebuild", "--yes", "--dsn", prod_later.dsn).exit_code == 0
    alice = later.users[0]
    state = ("select (select jsonb_agg(to_jsonb(u) - 'updated_at' - 'estimated_cost'"
             " order by usage_date) from public.user_usage_daily u where user_id = %(u)s),"
             " (select usage_stats from public.profiles where id = %(u)s),"
             " (select jsonb_build_object('n', message_count, 't', total_tokens,"
             " 'p', last_message_preview) from public.chat_sessions where id = 'later-a1')")
    before = prod_later.admin.execute(state, {"u": alice.id}).fetchone()
    prod_later.admin.commit()
    app_later.user_writes_own_counters(prod_later.dsn, alice.id, date(2025, 11, 3), "later-a1")
    assert prod_later.admin.execute(state, {"u": alice.id}).fetchone() == before


def test_rollback_all_restores_the_apps_own_behaviour_and_keeps_its_data(
        prod_later: SupabaseDb, later: LaterData, dump_schema: DumpSchema) -> None:
    prod_later.admin.commit()
    before = app_objects(dump_schema(prod_later.admin_dsn, include_schemas=("public",)))
    query = ("select " + ", ".join(f"(select count(*) from public.{t})" for t in APP_TABLES))
    rows_before = prod_later.admin.execute(query).fetchone()
    prod_later.admin.commit()
    adopt(prod_later)
    result = run("rollback", "--all", "--dsn", prod_later.dsn)
    assert result.exit_code == 0, result.output
    prod_later.admin.commit()
    assert app_objects(dump_schema(prod_later.admin_dsn, include_schemas=("public",))) == before
    assert prod_later.admin.execute(query).fetchone() == rows_before


def test_after_rollback_the_apps_write_paths_work_as_before(prod_later: SupabaseDb,
                                                            later: LaterData) -> None:
    adopt(prod_later)
    assert run("rollback", "--all", "--dsn", prod_later.dsn).exit_code == 0
    alice = later.users[0]
    assert app_later.sign_in_sync(prod_later.dsn, alice.id,
                                  later.conversations_of(alice.id))["errors"] == 0
    conv = new_conversation(later, "after-rollback")
    today = ("select coalesce(sum(messages_sent), 0) from public.user_usage_daily"
             " where usage_date = current_date")
    before = scalar(prod_later.admin, today)
    assert app_later.live_chat(prod_later.dsn, alice.id, conv, 0) is None
    assert scalar(prod_later.admin, today) == before + 1  # the app's own trigger counts again


def test_the_7c23e21_fixture_still_adopts(prod: SupabaseDb) -> None:
    # The full 7c23e21 path is tests/test_adoption.py; this is its essential check.
    adopt(prod)
    assert run("usage", "rebuild", "--yes", "--dsn", prod.dsn).exit_code == 0
    assert run("usage", "verify", "--dsn", prod.dsn).exit_code == 0
