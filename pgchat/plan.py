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
PGCHAT_POLICIES = {"chat_sessions": ["sessions_owner_all"], "chat_messages": ["messages_owner_all"],
                   "user_usage_daily": ["usage_owner_select", "usage_owner_insert",
                                        "usage_owner_update"]}
# What 0002 takes from PUBLIC and the API roles on an adopted owned table (the app's other grants
# stay as they are).
REVOKED = ("TRUNCATE", "REFERENCES", "TRIGGER")
# The counters of user_usage_daily pgchat maintains where the table has them, and what feeds the
# message's duration (0002's pgchat_migrations.feature(); the same rules, read here).
REQUIRED_COUNTERS = ("messages_sent", "messages_received", "input_tokens", "output_tokens",
                     "total_tokens")
OPTIONAL_COUNTERS = ("models_used", "sessions_created", "active_minutes", "generation_ms")


@dataclass
class MigrationPlan:
    """One pending migration: what it does here, as lines a DBA reads, and what blocks it."""

    id: str
    actions: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)


def _migration_text(migration_id: str) -> str:
    return (migrations_dir() / f"{migration_id}.sql").read_text()


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a"
        " WHERE a.attrelid = pg_catalog.to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum", (f"public.{table}",)).fetchall()]


def features(conn: psycopg.Connection) -> dict[str, bool]:
    """The template features of this database (see pgchat_migrations.feature in 0002)."""
    daily = set(_columns(conn, "user_usage_daily"))
    messages = set(_columns(conn, "chat_messages"))
    return {
        "models_used": "models_used" in daily, "sessions_created": "sessions_created" in daily,
        "active_minutes": "active_minutes" in daily, "generation_ms": "generation_ms" in daily,
        "daily_updated_at": "updated_at" in daily,
        "elapsed_ms": "elapsed_ms" in messages,
        "elapsed_time": "elapsed_time" in messages and "elapsed_ms" not in messages,
        "no_elapsed": not ({"elapsed_ms", "elapsed_time"} & messages),
    }


def render(text: str, feature: dict[str, bool]) -> str:
    """A migration template as pgchat_migrations.render (0002) makes it for `feature`."""
    lines = []
    for line in text.split("\n"):
        tag = re.search(r"--@(!?)([a-z_]+)\s*$", line)
        if tag is None:
            lines.append(line)
        elif feature[tag.group(2)] == (tag.group(1) == ""):
            lines.append(line[:tag.start()].rstrip())
    return "\n".join(lines)


def counters(conn: psycopg.Connection) -> tuple[list[str], list[str]]:
    """(what pgchat maintains, what it leaves to the app) among user_usage_daily's columns."""
    daily = _columns(conn, "user_usage_daily")
    feature = features(conn)
    source = ("elapsed_ms" if feature["elapsed_ms"] else
              "elapsed_time" if feature["elapsed_time"] else None)
    mine = [c for c in REQUIRED_COUNTERS if c in daily]
    for name in OPTIONAL_COUNTERS:
        if name not in daily:
            continue
        if name == "active_minutes":
            mine.append(f"active_minutes (and active_seconds, from {source or 'no duration'})")
        elif name == "generation_ms":
            mine.append(f"generation_ms (from {source or 'no duration'})")
        else:
            mine.append(name)
    skip = {*REQUIRED_COUNTERS, *OPTIONAL_COUNTERS, "active_seconds", "id", "user_id",
            "usage_date", "created_at", "updated_at"}
    return mine, [c for c in daily if c not in skip]


def counters_of(dsn: str) -> tuple[list[str], list[str]] | None:
    """`counters` of the database at `dsn`, read-only; None where it has no user_usage_daily."""
    with connect(dsn) as conn:
        if not _exists(conn, "public.user_usage_daily"):
            return None
        return counters(conn)


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
            for policy in PGCHAT_POLICIES[table]:
                plan.actions.append(f"creates policy {policy} on public.{table}")
            continue
        names = conn.execute(
            "SELECT policyname FROM pg_catalog.pg_policies WHERE schemaname = 'public'"
            " AND tablename = %s ORDER BY 1", (table,)).fetchall()
        for (name,) in names:
            plan.actions.append(f'drops policy "{name}" on public.{table} (saved for rollback)')
        for policy in PGCHAT_POLICIES[table]:
            plan.actions.append(f"creates policy {policy} on public.{table}")
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
    if _exists(conn, "public.user_usage_daily"):
        mine, theirs = counters(conn)
        plan.actions.append(f"counters pgchat maintains in user_usage_daily: {', '.join(mine)}")
        plan.actions.append("left to the app in user_usage_daily: "
                            + (", ".join(theirs) if theirs else "(no other column)"))
    plan.actions.append("also maintains profiles.usage_stats (total_messages, total_tokens,"
                        " sessions_created; its other keys are the app's) and the statistics of"
                        " chat_sessions (message_count, total_tokens, last_model,"
                        " last_message_preview, last_message_timestamp)")


def _extra_privileges(conn: psycopg.Connection,
                      created: list[str]) -> list[tuple[str, str, str]]:
    """(role, table, privilege) that 0002 revokes on the adopted owned tables (saved)."""
    tables = [t for t in OWNED if t not in created and _exists(conn, f"public.{t}")]
    rows = conn.execute(
        "SELECT r, t, p FROM unnest(%s::text[]) t"
        " CROSS JOIN unnest(ARRAY['PUBLIC', 'anon', 'authenticated', 'service_role']) r"
        " CROSS JOIN unnest(%s::text[]) p"
        " WHERE (r = 'PUBLIC' AND EXISTS (SELECT FROM pg_catalog.pg_class c,"
        "        aclexplode(c.relacl) a WHERE c.oid = ('public.' || t)::regclass"
        "        AND a.grantee = 0 AND a.privilege_type = p))"
        "    OR (r <> 'PUBLIC' AND pg_catalog.to_regrole(r) IS NOT NULL"
        "        AND has_table_privilege(r, 'public.' || t, p))"
        " ORDER BY t, r, p", (tables, list(REVOKED))).fetchall()
    return [(r, t, p) for r, t, p in rows]


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
                        " _100_keep_counted, _400_follow_move, _500_count_session_created on"
                        " chat_sessions; _000_skip_noop_update, _400_follow_rename,"
                        " _500_session_stats_insert/update/delete on chat_messages;"
                        " _900_forget_usage on profiles")
    if not _exists(conn, "public.chat_sessions"):
        return
    if features(conn)["active_minutes"]:
        minutes = _scalar(conn, "SELECT count(*) FROM public.user_usage_daily"
                                " WHERE active_minutes <> 0")
        plan.actions.append(f"converts active_minutes (legacy seconds) of {minutes}"
                            " user_usage_daily row(s) into active_seconds and minutes")
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
    columns = _columns(conn, "user_usage_daily")
    if "active_minutes" in columns and "active_seconds" not in columns:
        plan.actions.append("adds column public.user_usage_daily.active_seconds (active_minutes"
                            " cannot be kept exact without the seconds)")
    else:
        plan.actions.append("adds nothing (user_usage_daily has no active_minutes, or has"
                            " active_seconds already)")


def _plan_0003a(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    if not _exists(conn, "public.chat_sessions"):
        return
    sessions = _scalar(conn, "SELECT count(*) FROM public.chat_sessions")
    messages = _scalar(conn, "SELECT count(*) FROM public.chat_messages WHERE role IN"
                             " ('user', 'assistant') AND coalesce(error_message, '') = ''")
    plan.actions.append(f"takes the {messages} successful message(s) and {sessions} session(s)"
                        " stored as counted already (their rows are the record: nothing is"
                        " copied), then recomputes session statistics in committed batches")


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


def _integrity_checks(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    """(table, constraint, expression) of every CHECK that 0005 adds NOT VALID here."""
    checks = []
    text = render(_migration_text("0005_integrity"), features(conn))
    for block in text.split("ALTER TABLE public.")[1:]:
        table = block.split(None, 1)[0]
        body = block.split(";", 1)[0]
        for name, expr in re.findall(r"ADD CONSTRAINT (\w+)\s+CHECK \((.*?)\)\s*NOT VALID",
                                     body, flags=re.DOTALL):
            checks.append((table, name, " ".join(expr.split())))
    return checks


def _plan_0005(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    for table, name, _ in _integrity_checks(conn):
        plan.actions.append(f"adds constraint {name} on public.{table} NOT VALID (new and updated"
                            " rows are checked from now on)")
    plan.actions.append("guards pgchat's columns (session statistics, the counters of"
                        " user_usage_daily, profiles.usage_stats totals): what others write into"
                        " them is neutralised, the rest of their write goes through")


def _plan_0006(conn: psycopg.Connection, plan: MigrationPlan) -> None:
    checks = _integrity_checks(conn)
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
        refused = None
        for mid in ids:
            item = MigrationPlan(mid)
            planner = _PLANNERS.get(mid)
            if refused is not None:
                # What a refused migration would have created is not there to plan against.
                item.actions.append(f"(not planned: {refused} refuses this database)")
            elif planner is None:
                item.actions.append("(no plan available for this migration)")
            else:
                conn.execute("SAVEPOINT pgchat_plan")
                try:
                    planner(conn, item)
                except psycopg.Error as exc:
                    conn.execute("ROLLBACK TO SAVEPOINT pgchat_plan")
                    item.blocks.append(f"cannot plan it here: {one_line(exc)}")
            if item.blocks and refused is None:
                refused = mid
            plans.append(item)
        conn.rollback()
    return plans
