"""`pgchat risks`: the app's functions that put chat, usage or profile data at risk.

The functions are shaped like the production app's at 7c23e21 (tests/app_functions.py). The
report is derived from facts (what a body writes and reads, whether it compares its user id
with auth.uid(), who may execute it, its search_path), changes nothing unless --fix, and
--fix only takes EXECUTE from anon and PUBLIC and pins the search_path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgchat import migrate, risks
from pgchat.cli import main
from pgchat.risks import Write
from tests import app_functions
from tests.helpers import make_user
from tests.test_security import acting_as

BAD_DSN = "postgresql://nobody@127.0.0.1:1/x"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def by_function(found: list[risks.Risk]) -> dict[str, risks.Risk]:
    return {r.function: r for r in found}


def can_execute(db: psycopg.Connection, role: str, function: str) -> bool:
    row = db.execute("select has_function_privilege(%s, %s::regprocedure, 'EXECUTE')",
                     (role, function)).fetchone()
    return bool(row and row[0])


def test_a_fresh_database_has_no_app_function_at_risk(db: psycopg.Connection,
                                                      db_dsn: str) -> None:
    assert risks.risk_findings(db) == []
    result = run("risks", "--dsn", db_dsn)
    assert result.exit_code == 0, result.output
    assert "ok: no app function exposes chat, usage or profile data" in result.output
    assert risks.summary([]) == ["no app function exposes chat, usage or profile data"]


def test_the_production_shaped_functions_are_reported_and_nothing_else(
        db: psycopg.Connection) -> None:
    app_functions.install(db)
    found = by_function(risks.risk_findings(db))
    assert sorted(found) == app_functions.REPORTED
    for r in found.values():
        assert r.security_definer and r.search_path is None
        assert r.executable_by == ("PUBLIC", "anon", "authenticated")
        assert len(r.risks) == 2 and r.risks[1].startswith("mutable search_path")


def test_the_risk_says_what_the_function_lets_anyone_do(db: psycopg.Connection) -> None:
    app_functions.install(db)
    found = by_function(risks.risk_findings(db))
    tier = found["public.update_user_tier(uuid, character varying)"]
    assert tier.writes == (Write("UPDATE", "profiles", ("subscription_tier", "updated_at")),)
    assert (tier.user_parameters, tier.checks_caller) == (("user_uuid",), False)
    assert "anyone, signed in or not, can change profiles (subscription_tier, updated_at) of " \
           "any user: it acts for the user named by user_uuid and never compares it with " \
           "auth.uid()" in tier.risks[0]
    export = found["public.export_user_data(uuid)"]
    assert export.writes == ()
    assert "can read chat_messages, chat_sessions, profiles, user_usage_daily of any user" \
        in export.risks[0]
    session = found["public.get_session_with_messages(text, uuid)"]
    assert "named by requesting_user_uuid and never compares it with auth.uid()" \
        in session.risks[0]
    cleanup = found["public.cleanup_old_data(integer)"]
    assert [w.op + " " + w.table for w in cleanup.writes] == [
        "DELETE user_activity_log", "DELETE user_usage_daily"]
    assert "of every user: nothing in it limits it to the caller" in cleanup.risks[0]
    preferences = found["public.update_user_preferences(uuid, character varying, jsonb)"]
    assert preferences.needed_schemas == ("public",)
    assert any("SET search_path = public, pg_temp" in f for f in preferences.fixes)
    assert any("SET search_path = ''" in f for f in tier.fixes)


def test_the_risk_is_real_anon_sets_another_users_tier(db: psycopg.Connection) -> None:
    app_functions.install(db)
    bob = make_user(db)
    with acting_as(db, "anon"):
        db.execute("select public.update_user_tier(%s, 'enterprise')", (bob,))
        db.commit()
    assert db.execute("select subscription_tier from public.profiles where id = %s",
                      (bob,)).fetchone() == ("enterprise",)


def test_a_function_that_checks_the_caller_is_reported_with_that_said(
        db: psycopg.Connection) -> None:
    db.execute("""
        CREATE FUNCTION public.my_usage() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = '' AS $$ SELECT sum(messages_sent) FROM public.user_usage_daily
                                  WHERE user_id = (SELECT auth.uid()) $$;
        REVOKE EXECUTE ON FUNCTION public.my_usage() FROM PUBLIC, anon""")
    (found,) = risks.risk_findings(db)
    assert (found.function, found.executable_by, found.checks_caller) == \
        ("public.my_usage()", ("authenticated",), True)
    assert "any signed-in user can read user_usage_daily (it refers to auth.uid()" in found.risks[0]
    assert risks.fix_statements(db, found) == []  # nothing pgchat would change
    db.execute("REVOKE EXECUTE ON FUNCTION public.my_usage() FROM authenticated")
    assert risks.risk_findings(db) == []


def test_a_trigger_function_is_reported_for_its_search_path_only(db: psycopg.Connection) -> None:
    db.execute("""
        CREATE FUNCTION public.touch_profile() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
        AS $$ BEGIN UPDATE public.profiles SET last_active = now() WHERE id = NEW.user_id;
                    RETURN NEW; END $$;
        CREATE TRIGGER touch_profile AFTER INSERT ON public.chat_sessions
            FOR EACH ROW EXECUTE FUNCTION public.touch_profile()""")
    (found,) = risks.risk_findings(db)
    assert (found.function, found.is_trigger, found.trigger_on) == \
        ("public.touch_profile()", True, ("chat_sessions",))
    assert len(found.risks) == 1
    assert found.risks[0].startswith("mutable search_path: it runs as ")
    assert "on every write to chat_sessions" in found.risks[0]
    assert risks.fix_statements(db, found) == [
        "ALTER FUNCTION \"public\".\"touch_profile\"() SET search_path = ''"]


def test_the_report_changes_nothing(db: psycopg.Connection, db_dsn: str,
                                    dump_schema: Callable[..., str]) -> None:
    app_functions.install(db)
    before = dump_schema(db_dsn)
    result = run("risks", "--dsn", db_dsn)
    assert result.exit_code == 1
    assert dump_schema(db_dsn) == before
    assert "6 function(s) at risk; pgchat changed none of them" in result.output
    for name in app_functions.REPORTED:
        assert f"\n{name}\n  risk: SECURITY DEFINER" in result.output


def test_fix_takes_execute_from_anon_and_public_and_pins_the_search_path(
        db: psycopg.Connection, db_dsn: str) -> None:
    app_functions.install(db)
    bob = make_user(db)
    result = run("risks", "--dsn", db_dsn, "--fix", "--json")
    assert result.exit_code == 1, result.output  # authenticated still holds EXECUTE: reported
    report: dict[str, Any] = json.loads(result.stdout)
    assert sorted(f["function"] for f in report["fixed"]) == app_functions.REPORTED
    assert all(f["error"] is None for f in report["fixed"])
    db.rollback()
    for name in app_functions.REPORTED:
        assert not can_execute(db, "anon", name)
        assert can_execute(db, "authenticated", name) and can_execute(db, "service_role", name)
    public = db.execute(
        "select count(*) from pg_proc p, aclexplode(p.proacl) a"
        " where p.oid = any(%s::regprocedure[]) and a.grantee = 0",
        (app_functions.REPORTED,)).fetchone()
    assert public == (0,)
    remaining = by_function(risks.risk_findings(db))
    assert sorted(remaining) == app_functions.REPORTED
    for r in remaining.values():
        assert r.executable_by == ("authenticated",) and r.search_path is not None
        assert r.risks[0].startswith("SECURITY DEFINER") and "any signed-in user" in r.risks[0]
    assert [r["executable_by"] for r in report["risks"]] == [["authenticated"]] * 6
    # The pinned path keeps what the body needs: the unqualified helper is still found ...
    with acting_as(db, "authenticated", bob):
        db.execute("set local search_path = pg_catalog")
        assert db.execute("select public.update_user_preferences(%s, 'ui', '{\"a\": 1}')",
                          (bob,)).fetchone() == ({"success": True},)
    # ... where '' would have broken it.
    db.execute("alter function public.update_user_preferences(uuid, varchar, jsonb)"
               " set search_path = ''")
    with pytest.raises(psycopg.errors.UndefinedFunction, match="jsonb_deep_merge"):
        db.execute("select public.update_user_preferences(%s, 'ui', '{}')", (bob,))
    db.rollback()
    # anon no longer reaches it.
    with acting_as(db, "anon"), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("select public.update_user_tier(%s, 'admin')", (bob,))
    # A second --fix has nothing left to do.
    again = run("risks", "--dsn", db_dsn, "--fix")
    assert again.exit_code == 1
    assert "fixed:" not in again.output and "6 function(s) at risk" in again.output


def test_json_and_exit_codes(db: psycopg.Connection, db_dsn: str) -> None:
    app_functions.install(db)
    result = run("risks", "--dsn", db_dsn, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["fixed"] == []
    tier = next(r for r in report["risks"] if r["function"].startswith("public.update_user_tier"))
    assert tier["writes"] == [{"op": "UPDATE", "table": "profiles",
                               "columns": ["subscription_tier", "updated_at"]}]
    bad = run("risks", "--dsn", BAD_DSN)
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert run("risks", "--nope").exit_code == 2


def test_summary_lines_for_migrate_and_status(db: psycopg.Connection) -> None:
    app_functions.install(db)
    lines = risks.summary(risks.risk_findings(db))
    assert lines[0] == ("6 app function(s) expose chat, usage or profile data "
                        "(pgchat changed none of them; see `pgchat risks`):")
    assert "  public.update_user_tier(uuid, character varying): SECURITY DEFINER, executable by" \
           " PUBLIC, anon, authenticated; mutable search_path" in lines


def test_the_legacy_functions_at_risk_are_gone_after_migrate(legacy_db: psycopg.Connection,
                                                             legacy_dsn: str) -> None:
    before = by_function(risks.risk_findings(legacy_db))
    legacy_usage = ("public.track_user_usage(uuid, integer, integer, integer, integer, "
                    "character varying, boolean, integer)")
    assert legacy_usage in before and "public.handle_user_profile_sync()" in before
    assert ("anyone, signed in or not, can change profiles (last_active, usage_stats); insert "
            "rows into user_usage_daily of any user: it acts for the user named by p_user_id"
            in before[legacy_usage].risks[0])
    (sync_risk,) = before["public.handle_user_profile_sync()"].risks
    assert sync_risk.startswith("mutable search_path: it runs as ")
    assert " on every write to auth.users, " in sync_risk
    legacy_db.rollback()
    migrate.migrate(legacy_dsn)
    after = by_function(risks.risk_findings(legacy_db))
    # pgchat replaced the keyless track_user_usage; the app's own functions are tolerated,
    # left as they are, and still reported.
    assert legacy_usage not in after
    assert "public.handle_user_profile_sync()" in after
    assert not any(risks.is_owned(*f.split(".", 1), "function") for f in after)


def test_migrate_and_status_print_the_risk_summary(legacy_db: psycopg.Connection,
                                                   legacy_dsn: str) -> None:
    legacy_db.rollback()
    applied = run("migrate", "--dsn", legacy_dsn)
    assert applied.exit_code == 0, applied.output
    assert "app function(s) expose chat, usage or profile data" in applied.output
    assert "  public.handle_user_profile_sync(): mutable search_path" in applied.output
    shown = run("status", "--dsn", legacy_dsn)
    assert shown.exit_code == 0, shown.output
    assert "public.handle_user_profile_sync()" in shown.output
    as_json = json.loads(run("migrate", "--dsn", legacy_dsn, "--json").stdout)
    assert "public.handle_user_profile_sync()" in {r["function"] for r in as_json["app_risks"]}


def test_status_on_a_fresh_database_says_no_function_is_at_risk(db: psycopg.Connection,
                                                                db_dsn: str) -> None:
    db.rollback()
    shown = run("status", "--dsn", db_dsn)
    assert shown.exit_code == 0, shown.output
    assert "no app function exposes chat, usage or profile data" in shown.output
