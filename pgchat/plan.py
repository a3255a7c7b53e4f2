"""What `pgchat migrate` would do to THIS database, found by read-only catalog queries.

Nothing here runs a migration. It runs, in a READ ONLY transaction that is rolled back:
- the migrations' own read-only parts, taken from their files, so the plan and the migration
  can never disagree: 0002's refusal check (the `$check$` block, which only reads and raises)
  and 0003's competing-analytics scan (the query between `-- scan:begin` and `-- scan:end`);
- plain catalog and row-count queries for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from pgchat.connect import connect, one_line
from pgchat.paths import migrations_dir

OWNED = ("chat_sessions", "chat_messages", "user_usage_daily")
APP_TABLES = ("profiles", "user_activity_log", "chat_sessions", "chat_messages",
              "user_usage_daily", "model_access")
PGCHAT_POLICIES = {"chat_sessions": "sessions_owner_all", "chat_messages": "messages_owner_all",
                   "user_usage_daily": "usage_owner_select"}
# The privileges 0002 leaves the API roles on the owned tables (everything else is revoked).
INTENDED = {
    ("authenticated", "chat_sessions"): {"SELECT", "INSERT", "UPDATE", "DELETE"},
    ("authenticated", "chat_messages"): {"SELECT", "INSERT", "UPDATE", "DELETE"},
    ("authenticated", "user_usage_daily"): {"SELECT"},
    ("authenticated", "profiles"): {"SELECT"},
    **{("service_role", t): {"SELECT", "INSERT", "UPDATE", "DELETE"}
       for t in ("chat_sessions", "chat_messages", "user_usage_daily", "profiles")},
}


@dataclass
class MigrationPlan:
    """One pending migration: what it does here, as lines a DBA reads, and what blocks it."""

    id: str
    actions: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)


def _migration_text(migration_id: str) -> str:
    return (migrations_dir() / f"{migration_id}.sql").read_text()


def _between(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"(.*?)" + re.escape(end), text, re.S)
    if match is None:
        raise RuntimeError(f"migration text has no {start} ... {end} section")
    return match.group(1)


def _scalar(conn: psycopg.Connection, query: str, params: tuple[object, ...] = ()) -> object:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return _scalar(conn, "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (name,)) is True


def _plan_0001(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    if _scalar(conn, "SELECT pg_catalog.to_regnamespace('auth') IS NOT NULL"):
        plan.actions.append("auth schema exists (Supabase): left untouched")
    else:
        plan.actions.append("creates the Supabase stand-in: schema auth, auth.users, auth.uid(),"
                            " auth.role(), auth.jwt()")
    missing = conn.execute(
        "SELECT r FROM unnest(ARRAY['anon', 'authenticated', 'service_role']) r"
        " WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) ORDER BY 1"
    ).fetchall()
    for (role,) in missing:
        plan.actions.append(f"creates role {role}")


def _check_0002(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    """Run 0002's own refusal check (a DO block that only reads) and report what it refuses."""
    block = "DO $check$" + _between(_migration_text("0002_baseline"), "DO $check$", "$check$;")
    block += "$check$"
    conn.execute("SAVEPOINT pgchat_check")
    try:
        conn.execute(block)
    except psycopg.errors.RaiseException as exc:
        conn.execute("ROLLBACK TO SAVEPOINT pgchat_check")
        plan.blocks.append(one_line(exc).removeprefix("cannot adopt this database: "))
    except psycopg.Error as exc:
        conn.execute("ROLLBACK TO SAVEPOINT pgchat_check")
        plan.blocks.append(one_line(exc))


def _plan_0002(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    _check_0002(conn, plan)
    created = [t for t in APP_TABLES if not _exists(conn, f"public.{t}")]
    for table in created:
        plan.actions.append(f"creates table public.{table} (absent)")
    if "profiles" in created:
        plan.actions.append("creates functions update_updated_at_column(), log_user_activity(...),"
                            " handle_user_profile_sync() and their triggers (profiles, auth.users)")
    for table in OWNED:
        if table in created:
            plan.actions.append(f"creates policy {PGCHAT_POLICIES[table]} on public.{table}")
            continue
        names = conn.execute(
            "SELECT policyname FROM pg_catalog.pg_policies WHERE schemaname = 'public'"
            " AND tablename = %s ORDER BY 1", (table,)).fetchall()
        for (name,) in names:
            plan.actions.append(f'drops policy "{name}" on public.{table} (saved for rollback)')
        plan.actions.append(f"creates policy {PGCHAT_POLICIES[table]} on public.{table}")
        rls = _scalar(conn, "SELECT relrowsecurity FROM pg_catalog.pg_class"
                            " WHERE oid = %s::regclass", (f"public.{table}",))
        if not rls:
            plan.actions.append(f"enables row level security on public.{table}")
    if _exists(conn, "public.api_user_summary"):
        columns = _scalar(conn, "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid ="
                                " 'public.api_user_summary'::regclass AND attnum > 0"
                                " AND NOT attisdropped")
        plan.actions.append(f"keeps view public.api_user_summary ({columns} columns) and sets"
                            " security_invoker = on")
    else:
        plan.actions.append("creates view public.api_user_summary (security_invoker)")
    revoked: dict[tuple[str, str], list[str]] = {}
    for (role, table, privilege) in _extra_privileges(conn, created):
        revoked.setdefault((table, role), []).append(privilege)
    for (table, role), privileges in revoked.items():
        plan.actions.append(f"revokes {', '.join(privileges)} on public.{table} from {role}")
    if not created and _exists(conn, "public.profiles"):
        plan.actions.append("grants authenticated UPDATE on profiles' settings columns only"
                            " (never tier, credits or usage_stats)")


def _extra_privileges(conn: psycopg.Connection,
                      created: list[str]) -> list[tuple[str, str, str]]:
    tables = [t for t in (*OWNED, "profiles") if t not in created and _exists(conn, f"public.{t}")]
    rows = conn.execute(
        "SELECT r, t, p FROM unnest(%s::text[]) t"
        " CROSS JOIN unnest(ARRAY['PUBLIC', 'anon', 'authenticated', 'service_role']) r"
        " CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',"
        " 'REFERENCES', 'TRIGGER']) p"
        " WHERE (r = 'PUBLIC' AND EXISTS (SELECT FROM pg_catalog.pg_class c,"
        "        aclexplode(c.relacl) a WHERE c.oid = ('public.' || t)::regclass"
        "        AND a.grantee = 0 AND a.privilege_type = p))"
        "    OR (r <> 'PUBLIC' AND pg_catalog.to_regrole(r) IS NOT NULL"
        "        AND has_table_privilege(r, 'public.' || t, p))"
        " ORDER BY t, r, p", (tables,)).fetchall()
    return [(r, t, p) for r, t, p in rows if p not in INTENDED.get((r, t), set())]


def _plan_0003(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    scan = _between(_migration_text("0003_usage_ledger"), "-- scan:begin", "-- scan:end")
    for trigger, table, function, reason, detachable, _ in conn.execute(scan).fetchall():
        if trigger is None:
            plan.actions.append(f"leaves function {function} in place (no trigger runs it);"
                                f" it {reason}")
        elif detachable:
            plan.actions.append(f"detaches trigger {trigger} on {table} (saved): its function"
                                f" {function} {reason}")
        else:
            plan.blocks.append(f"trigger {trigger} on {table} (its function {function} {reason})"
                               " cannot be detached: the migrating role does not own the table")
    for (signature,) in conn.execute(
            "SELECT oid::regprocedure::text FROM pg_catalog.pg_proc WHERE pronamespace ="
            " 'public'::regnamespace AND proname = 'track_user_usage' ORDER BY 1").fetchall():
        plan.actions.append(f"drops legacy function {signature} (saved for rollback)")
    plan.actions.append("creates public.track_user_usage(uuid, text, date, ...)"
                        " (keyed: each event counted once)")
    for name in ("update_session_stats", "update_session_timestamp"):
        verb = "replaces" if _scalar(conn, "SELECT to_regprocedure(%s) IS NOT NULL",
                                     (f"public.{name}()",)) else "creates"
        plan.actions.append(f"{verb} function public.{name}()")
    plan.actions.append("creates triggers _000_skip_noop_update, on_session_updated,"
                        " _500_book_session_created on chat_sessions; _000_skip_noop_update,"
                        " _500_session_stats_insert/update/delete on chat_messages;"
                        " _900_forget_usage on profiles")
    if not _exists(conn, "public.chat_sessions"):
        return
    minutes = _scalar(conn, "SELECT count(*) FROM public.user_usage_daily"
                            " WHERE active_minutes <> 0")
    plan.actions.append(f"converts active_minutes (legacy seconds) of {minutes} user_usage_daily"
                        " row(s) into active_seconds and minutes")
    daily = _scalar(conn, "SELECT count(*) FROM public.user_usage_daily")
    plan.actions.append(f"leaves the {daily} user_usage_daily row(s) and the profile totals as"
                        " they are: `pgchat usage verify` then shows any inflation,"
                        " `pgchat usage rebuild` repairs it")
    stale = _scalar(conn, """
        SELECT count(*) FROM public.chat_sessions s
        LEFT JOIN (SELECT session_id, count(*) AS n, sum(coalesce(total_tokens, 0)) AS tokens
                   FROM public.chat_messages WHERE coalesce(error_message, '') = ''
                   GROUP BY session_id) m ON m.session_id = s.id
        WHERE (s.message_count, s.total_tokens) IS DISTINCT FROM
              (coalesce(m.n, 0)::integer, coalesce(m.tokens, 0)::integer)""")
    sessions = _scalar(conn, "SELECT count(*) FROM public.chat_sessions")
    plan.actions.append(f"recomputes session statistics (0003a): {stale} of {sessions} session(s)"
                        " have counts that change (failed messages are no longer counted)")


def _plan_0002a(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    plan.actions.append("builds index public.idx_chat_messages_session_latest CONCURRENTLY"
                        " (the app keeps writing)")


def _plan_0002b(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    plan.actions.append("adds column public.user_usage_daily.active_seconds")


def _plan_0003a(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    if not _exists(conn, "public.chat_sessions"):
        return
    sessions = _scalar(conn, "SELECT count(*) FROM public.chat_sessions")
    messages = _scalar(conn, "SELECT count(*) FROM public.chat_messages WHERE role IN"
                             " ('user', 'assistant') AND coalesce(error_message, '') = ''")
    plan.actions.append(f"backfills the usage ledger: {sessions} session(s) and {messages}"
                        " successful message(s), booked as already counted (no counter moves),"
                        " in committed batches")


def _plan_0004(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    for signature in ("sync_user_conversations(uuid, jsonb)",
                      "write_chat_exchange(uuid, text, jsonb, jsonb, text)",
                      "update_session_title(uuid, text, text)"):
        name = signature.split("(")[0]
        if _scalar(conn, "SELECT to_regprocedure(%s) IS NOT NULL", (f"public.{signature}",)):
            plan.actions.append(f"replaces the app's function public.{signature} (saved for"
                                " rollback)")
        plan.actions.append(f"creates public.{name} (SECURITY INVOKER) calling"
                            f" pgchat_private.{name} (SECURITY DEFINER, not exposed)")


def _integrity_checks() -> list[tuple[str, str, str]]:
    """(table, constraint, expression) of every CHECK that 0005 adds NOT VALID."""
    checks = []
    text = _migration_text("0005_integrity")
    for block in text.split("ALTER TABLE public.")[1:]:
        table = block.split(None, 1)[0]
        body = block.split(";", 1)[0]
        for name, expr in re.findall(r"ADD CONSTRAINT (\w+)\s+CHECK \((.*?)\)\s*NOT VALID",
                                     body, flags=re.DOTALL):
            checks.append((table, name, " ".join(expr.split())))
    return checks


def _plan_0005(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    for table, name, _ in _integrity_checks():
        plan.actions.append(f"adds constraint {name} on public.{table} NOT VALID (new and updated"
                            " rows are checked from now on)")
    plan.actions.append("column privileges on public.chat_sessions: only pgchat writes"
                        " message_count, total_tokens, last_model, last_message_preview,"
                        " last_message_timestamp")


def _plan_0006(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    checks = _integrity_checks()
    for table in dict.fromkeys(t for t, _, _ in checks):
        if not _exists(conn, f"public.{table}"):
            continue
        mine = [(name, expr) for t, name, expr in checks if t == table]
        # One scan of the table counts the rows that break each of its constraints.
        counts = ", ".join(f"count(*) FILTER (WHERE NOT ({expr}))" for _, expr in mine)
        row = conn.execute(f"SELECT {counts} FROM public.{table}").fetchone()
        assert row is not None
        for (name, _), bad in zip(mine, row, strict=True):
            if bad:
                plan.actions.append(f"leaves {name} NOT VALID: {bad} existing row(s) of"
                                    f" public.{table} break it (named in a warning; fix them,"
                                    " then run SELECT pgchat.validate_integrity())")
            else:
                plan.actions.append(f"validates {name} (SHARE UPDATE EXCLUSIVE: the app keeps"
                                    " writing)")


_PLANNERS = {"0001_supabase_standin": _plan_0001, "0002_baseline": _plan_0002,
             "0002a_session_latest_index": _plan_0002a,
             "0002b_usage_active_seconds": _plan_0002b, "0003_usage_ledger": _plan_0003,
             "0003a_adopt_existing_rows": _plan_0003a, "0004_sync_and_exchange": _plan_0004,
             "0005_integrity": _plan_0005, "0006_integrity_validate": _plan_0006}


def plan(dsn: str, ids: list[str]) -> list[MigrationPlan]:
    """The plan of each of `ids` (pending migrations, in order) against `dsn`, read-only.

    Each migration is planned against the database as it is now: a later migration's plan does
    not see what an earlier pending one would change (0002's new tables, say).
    """
    plans = []
    with connect(dsn) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        # Names print schema-qualified, as in the migration's own notices.
        conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
        for mid in ids:
            item = MigrationPlan(mid)
            planner = _PLANNERS.get(mid)
            if planner is None:
                item.actions.append("(no plan available for this migration)")
            else:
                planner(conn, item)
            plans.append(item)
        conn.rollback()
    return plans
