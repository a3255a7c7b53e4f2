"""The `pgchat` command line.

Exit codes: 0 ok, 1 a check failed (drift, a failed conversation, usage drift),
2 usage or connection error. Expected failures print one line on stderr, never a traceback;
with --json, one JSON object on stdout instead (`{"error", "code", "exit"}`, plus `sqlstate`,
`constraint`, `detail`, `db_message` when the database said so; docs/errors.md). Long steps
show progress on stderr when stderr is a terminal, and nothing otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import click
import psycopg

from pgchat import chat as chat_api
from pgchat import connect as connection
from pgchat import migrate as migrations
from pgchat import plan as plan_api
from pgchat import risks as risks_api
from pgchat import server
from pgchat import usage as usage_api
from pgchat._db import as_pgchat
from pgchat.errors import PgchatError, UsageError


def _fail(ctx: click.Context, error: dict[str, Any]) -> None:
    """One line on stderr; with --json, the error as one JSON object on stdout."""
    if ctx.meta.get("pgchat.json"):
        click.echo(json.dumps(error, default=str))
    else:
        click.echo(f"pgchat: error: {error['error']}", err=True)
    ctx.exit(error["exit"])


class _Cli(click.Group):
    """Turns pgchat's expected failures into one line on stderr (a JSON object on stdout with
    --json) and a meaningful exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgchatError as exc:
            _fail(ctx, exc.as_dict())
        except psycopg.Error as exc:  # pgchat's own calls translate; this catches the rest
            _fail(ctx, as_pgchat(exc).as_dict())
        except OSError as exc:  # a file or folder given on the command line
            where = f": {exc.filename}" if exc.filename else ""
            _fail(ctx, {"error": f"{exc.strerror or exc}{where}", "code": "FileError",
                        "exit": 2})


def _embedded_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    ctx.meta["pgchat.embedded"] = value or ctx.meta.get("pgchat.embedded", False)


def dsn_option(command: Any) -> Any:
    """--dsn, and --embedded for the local server: a command that talks to a database never
    falls back to one silently."""
    command = click.option(
        "--embedded", is_flag=True, expose_value=False, callback=_embedded_flag,
        help="Use the local embedded PostgreSQL (./.pgchat or $PGCHAT_HOME), started if needed.",
    )(command)
    return click.option(
        "--dsn",
        metavar="DSN",
        help="libpq URI or key=value string. Default: $PGCHAT_DSN, then $DATABASE_URL; "
        "without any, give --embedded.",
    )(command)


def _json_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["pgchat.json"] = True  # errors too: see _Cli
    return value


json_option = click.option("--json", "as_json", is_flag=True, callback=_json_flag,
                           help="Print JSON for machines (errors too, on stdout).")


def tty_progress(line: str) -> None:
    """A progress line on stderr, only when stderr is a terminal."""
    if sys.stderr.isatty():
        click.echo(line, err=True)


def embedded_asked() -> bool:
    return bool(click.get_current_context().meta.get("pgchat.embedded", False))


def target(dsn: str | None, *, quiet: bool = False) -> str:
    """Resolve the database (--dsn, $PGCHAT_DSN, $DATABASE_URL or --embedded; nothing is a usage
    error) and say on stderr which one is used."""
    resolved = connection.resolve(dsn, embedded=embedded_asked())
    if not quiet:
        source = resolved.source
        if source == connection.EMBEDDED:
            source = f"--embedded, data in {server.embedded_data_dir()}"
        click.echo(f"database: {connection.describe(resolved.dsn)} ({source})", err=True)
    return resolved.dsn


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned table for people."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pgchat")
def main() -> None:
    """Exactly-once chat analytics for PostgreSQL and Supabase.

    Start with `pgchat demo`; apply the migrations with `pgchat migrate`.
    """


# --- the embedded default --------------------------------------------------------------------


@main.group()
def db() -> None:
    """Manage the embedded default database (PostgreSQL 18 under ./.pgchat)."""


@db.command("start")
@json_option
def db_start(as_json: bool) -> None:
    """Start the embedded default (or reuse it) and print its URL."""
    url = server.start_embedded()
    if as_json:
        emit_json({"url": url, "data_dir": str(server.embedded_data_dir())})
    else:
        click.echo(f"embedded PostgreSQL running, data in {server.embedded_data_dir()}")
        click.echo(url)


@db.command("stop")
@json_option
def db_stop(as_json: bool) -> None:
    """Stop the embedded default."""
    stopped = server.stop_embedded()
    if as_json:
        emit_json({"stopped": stopped, "data_dir": str(server.embedded_data_dir())})
    else:
        click.echo("stopped" if stopped else "not running")


@db.command("status")
@json_option
def db_status(as_json: bool) -> None:
    """Whether the embedded default exists and runs (exit 1 if it does not run)."""
    st = server.embedded_status()
    if as_json:
        emit_json({"data_dir": str(st.data_dir), "initialised": st.initialised,
                   "running": st.running, "pid": st.pid, "url": st.url})
    elif st.running:
        click.echo(f"running (pid {st.pid}), data in {st.data_dir}\n{st.url}")
    else:
        state = "stopped" if st.initialised else "not created yet"
        click.echo(f"{state}, data in {st.data_dir}")
    sys.exit(0 if st.running else 1)


@db.command("url")
@json_option
def db_url(as_json: bool) -> None:
    """Print the embedded default's URL (starting it if needed), e.g. for psql."""
    url = server.start_embedded()
    if as_json:
        emit_json({"url": url, "data_dir": str(server.embedded_data_dir())})
    else:
        click.echo(url)


# --- migrations ------------------------------------------------------------------------------


def _lock_timeout(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return migrations.lock_timeout_setting(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--lock-timeout {value!r}: ")) from None


lock_timeout_option = click.option(
    "--lock-timeout", default=migrations.DEFAULT_LOCK_TIMEOUT, show_default=True,
    callback=_lock_timeout, metavar="DURATION",
    help="Give up on a migration that waits this long for a table lock, or for another "
    "migrate/rollback to finish (5s, 500ms, 1min).",
)


@main.command()
@dsn_option
@click.option("--to", "to", metavar="ID", help="Apply up to and including this migration.")
@click.option("--dry-run", is_flag=True,
              help="Show what each pending migration would do to this database; change nothing.")
@lock_timeout_option
@json_option
def migrate(dsn: str | None, to: str | None, dry_run: bool, lock_timeout: str,
            as_json: bool) -> None:
    """Apply pending migrations, each in one transaction."""
    dsn = target(dsn, quiet=as_json)
    progress = None if as_json else click.echo
    ids = migrations.migrate(dsn, to=to, dry_run=dry_run, lock_timeout=lock_timeout,
                             lock_wait=None, progress=progress, started=tty_progress)
    if dry_run:
        _print_plan(ids, plan_api.plan(dsn, ids), as_json)
    elif as_json:
        emit_json({"dry_run": dry_run, "migrations": ids,
                   "app_risks": [r.as_dict() for r in _app_risks(dsn)]})
    else:
        click.echo("nothing to apply: the database is up to date" if not ids
                   else f"applied {len(ids)} migration(s)")
        _echo_risk_summary(dsn)


def _app_risks(dsn: str) -> list[risks_api.Risk]:
    """The app functions (not pgchat's) that put chat, usage or profile data at risk."""
    with connection.connect(dsn) as conn:
        return risks_api.risk_findings(conn)


def _echo_risk_summary(dsn: str) -> None:
    """After migrate and in status: what pgchat does not own but puts the data at risk."""
    click.echo("")
    for line in risks_api.summary(_app_risks(dsn)):
        click.echo(line)


def _print_plan(ids: list[str], plans: list[plan_api.MigrationPlan], as_json: bool) -> None:
    """The dry run's report; exit 1 when something blocks adoption."""
    blocked = any(p.blocks for p in plans)
    if as_json:
        emit_json({"dry_run": True, "migrations": ids, "blocked": blocked,
                   "plan": [{"id": p.id, "actions": p.actions, "blocks": p.blocks}
                            for p in plans]})
    elif not ids:
        click.echo("nothing to apply: the database is up to date")
    else:
        click.echo("would apply: " + ", ".join(ids))
        for p in plans:
            click.echo(f"\n{p.id}:")
            for line in p.blocks:
                click.echo(f"  BLOCKS: {line}")
            for line in p.actions:
                click.echo(f"  - {line}")
        click.echo("\ndry run: nothing was changed"
                   + ("; pgchat migrate would refuse (see BLOCKS)" if blocked else ""))
    if blocked:
        sys.exit(1)


@main.command()
@dsn_option
@click.option("--to", "to", metavar="ID", help="Roll back everything after ID ('base': all).")
@click.option("--steps", type=click.IntRange(min=1), help="Roll back the newest N migrations.")
@click.option("--all", "everything", is_flag=True, help="Roll back every migration.")
@click.option("--dry-run", is_flag=True, help="List what would be rolled back; change nothing.")
@lock_timeout_option
@json_option
def rollback(dsn: str | None, to: str | None, steps: int | None, everything: bool, dry_run: bool,
             lock_timeout: str, as_json: bool) -> None:
    """Roll back applied migrations (default: the newest one).

    A rollback never drops a table that holds rows: it refuses and changes nothing.
    """
    if everything:
        if to or steps:
            raise click.UsageError("--all cannot be combined with --to or --steps")
        to = "base"
    dsn = target(dsn, quiet=as_json)
    ids = migrations.rollback(dsn, to=to, steps=steps, dry_run=dry_run,
                              lock_timeout=lock_timeout, lock_wait=None,
                              progress=None if as_json else click.echo)
    if as_json:
        emit_json({"dry_run": dry_run, "migrations": ids})
    elif not ids:
        click.echo("nothing to roll back")
    elif dry_run:
        click.echo("would roll back: " + ", ".join(ids))
    else:
        click.echo(f"rolled back {len(ids)} migration(s)")


@main.command()
@dsn_option
@json_option
def status(dsn: str | None, as_json: bool) -> None:
    """Applied and pending migrations; exit 1 if an applied file changed (drift) or is missing."""
    dsn = target(dsn, quiet=as_json)
    states = migrations.status(dsn)
    bad = [s for s in states if s.drifted or not s.on_disk]
    from pgchat.plan import counters_of  # reads the catalog only
    counted = counters_of(dsn)
    if as_json:
        found = _app_risks(dsn)
        pending = sum(not s.applied for s in states)
        emit_json({"migrations": [{"id": s.id, "applied": s.applied,
                                   "applied_at": s.applied_at, "drifted": s.drifted,
                                   "on_disk": s.on_disk} for s in states],
                   "applied": len(states) - pending, "pending": pending, "problems": len(bad),
                   "app_risks": [r.as_dict() for r in found],
                   "risk_summary": risks_api.summary(found),
                   "counters": None if counted is None else
                   {"maintained": counted[0], "left_to_app": counted[1]}})
    else:
        rows = []
        for s in states:
            state = "applied" if s.applied else "pending"
            note = "CHANGED since applied" if s.drifted else ("" if s.on_disk else "file missing")
            rows.append([s.id, state, s.applied_at or "", note])
        table(["migration", "state", "applied at (UTC)", "check"], rows)
        pending = sum(not s.applied for s in states)
        click.echo(f"\n{len(states) - pending} applied, {pending} pending, {len(bad)} problem(s)")
        if counted is not None:
            click.echo(f"counters pgchat maintains in user_usage_daily: {', '.join(counted[0])}")
            click.echo("left to the app in user_usage_daily: "
                       + (", ".join(counted[1]) or "(no other column)"))
        _echo_risk_summary(dsn)
    sys.exit(1 if bad else 0)


@main.command()
@dsn_option
@click.option("--all", "everything", is_flag=True,
              help="Every migration, without asking a database what is pending.")
@click.option("--supabase", "supabase_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write Supabase CLI migration files into this folder instead.")
@lock_timeout_option
@json_option
def sql(dsn: str | None, everything: bool, supabase_dir: Path | None, lock_timeout: str,
        as_json: bool) -> None:
    """Print the pending migrations as one reviewable script (for the Supabase SQL editor).

    The script runs in one transaction and records what it applied, so `pgchat status`
    knows about it afterwards; it stops before changing anything on a database where one of
    its migrations is already applied. With --supabase, one file per migration, named after
    the newest file in the folder.
    """
    ids = migrations.pending_ids(None if everything else target(dsn, quiet=as_json))
    if supabase_dir is not None:
        files = migrations.write_supabase(supabase_dir, ids, lock_timeout)
        if as_json:
            emit_json({"migrations": ids, "written": [str(p) for p in files.written],
                       "already_there": [str(p) for p in files.already_there],
                       "online": [str(p) for p in files.online]})
            return
        for path in files.written:
            click.echo(str(path))
        for path in files.online:
            click.echo(f"online form, for psql outside a transaction (see its header): {path}",
                       err=True)
        for path in files.already_there:
            click.echo(f"already there, left as it is: {path}")
        if not ids:
            click.echo(f"nothing pending: no file written to {supabase_dir}")
        return
    script = migrations.render_script(ids, lock_timeout)
    if as_json:
        emit_json({"migrations": ids, "script": script})
        return
    if not ids:
        click.echo("pgchat: nothing pending: the script does nothing", err=True)
    click.echo(script, nl=False)


# --- usage counters --------------------------------------------------------------------------


@main.group()
def usage() -> None:
    """Verify, repair and show the usage counters (what was counted is the truth)."""


def _drift_rows(drift: list[usage_api.Drift]) -> list[list[Any]]:
    return [[d.user_id, d.usage_date or "(profile total)", d.field, d.recorded, d.expected]
            for d in drift]


def _drift_json(drift: list[usage_api.Drift]) -> list[dict[str, Any]]:
    return [{"user_id": d.user_id, "usage_date": d.usage_date, "field": d.field,
             "recorded": d.recorded, "expected": d.expected} for d in drift]


@usage.command("verify")
@dsn_option
@click.option("--user", "user_id", type=click.UUID, help="Only this user.")
@json_option
def usage_verify(dsn: str | None, user_id: UUID | None, as_json: bool) -> None:
    """Recount what was counted (stored rows and ledger); exit 1 if any counter drifted."""
    with connection.connect(target(dsn, quiet=as_json)) as conn:
        tty_progress("recounting every counter from what was counted ..." if user_id is None
                     else f"recounting the counters of {user_id} ...")
        drift = usage_api.verify(conn, user_id)
    if as_json:
        emit_json({"ok": not drift, "drift": _drift_json(drift)})
    elif drift:
        table(["user", "date", "field", "recorded", "counted"], _drift_rows(drift))
        users = len({d.user_id for d in drift})
        click.echo(f"\n{len(drift)} counter(s) drifted for {users} user(s); "
                   "`pgchat usage rebuild` repairs them")
    else:
        click.echo("ok: every counter matches what was counted")
    sys.exit(1 if drift else 0)


@usage.command("rebuild")
@dsn_option
@click.option("--user", "user_id", type=click.UUID, help="Only this user.")
@click.option("--dry-run", is_flag=True, help="Show the difference; write nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before writing.")
@json_option
def usage_rebuild(dsn: str | None, user_id: UUID | None, dry_run: bool, yes: bool,
                  as_json: bool) -> None:
    """Rewrite user_usage_daily and profiles.usage_stats from what was counted.

    The one-time repair after adopting an inflated database. Shows before/after first and asks
    for confirmation unless --yes (or --dry-run, which writes nothing).
    """
    with connection.connect(target(dsn, quiet=as_json)) as conn:
        tty_progress("comparing every counter with what was counted ...")
        planned = usage_api.rebuild(conn, user_id, dry_run=True)
        if not as_json and planned:
            table(["user", "date", "field", "before", "after"], _drift_rows(planned))
        if dry_run or not planned:
            done: list[usage_api.Drift] = []
        else:
            if not yes and not click.confirm(f"rewrite {len(planned)} counter(s)?", err=True):
                raise click.Abort()
            total = 1 if user_id is not None else usage_api.user_count(conn)
            conn.commit()  # rebuild refuses an open transaction
            with click.progressbar(length=total, label="rebuilding", file=sys.stderr,
                                   hidden=not sys.stderr.isatty()) as bar:
                done = usage_api.rebuild(conn, user_id, progress=bar.update)
    if as_json:
        emit_json({"dry_run": dry_run, "changes": _drift_json(done if done else planned),
                   "written": len(done)})
    elif not planned:
        click.echo("nothing to do: every counter matches what was counted")
    elif dry_run:
        click.echo(f"\ndry run: {len(planned)} counter(s) would change; nothing written")
    else:
        click.echo(f"\nrewrote {len(done)} counter(s) from what was counted")


@usage.command("show")
@click.argument("user_id", type=click.UUID)
@dsn_option
@click.option("--from", "date_from", type=click.DateTime(["%Y-%m-%d"]), help="First day.")
@click.option("--to", "date_to", type=click.DateTime(["%Y-%m-%d"]), help="Last day.")
@json_option
def usage_show(user_id: UUID, dsn: str | None, date_from: datetime | None,
               date_to: datetime | None, as_json: bool) -> None:
    """A user's daily usage counters."""
    with connection.connect(target(dsn, quiet=as_json)) as conn:
        days = usage_api.show(conn, user_id, date_from and date_from.date(),
                              date_to and date_to.date())
    if as_json:
        emit_json([vars(d) for d in days])
        return
    table(["date", "sent", "received", "input tok", "output tok", "total tok", "sessions",
           "active min", "models"],
          [[d.usage_date, d.messages_sent, d.messages_received, d.input_tokens, d.output_tokens,
            d.total_tokens, d.sessions_created, d.active_minutes,
            ", ".join(f"{m}: {n}" for m, n in sorted(d.models_used.items()))] for d in days])
    if not days:
        click.echo("(no usage recorded in that range)")


# --- sync -------------------------------------------------------------------------------------


def _read_payload(source: IO[bytes]) -> list[Any]:
    raw = source.read()
    name = getattr(source, "name", "-")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                         f"{exc.start}); export the conversations as UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("conversations"), list):
        data = data["conversations"]
    if not isinstance(data, list):
        raise UsageError(f"{name}: expected an array of conversations "
                         'or {"conversations": [...]}')
    return data


@main.command("sync")
@click.option("--user", "user_id", type=click.UUID, required=True, help="Whose conversations.")
@click.argument("source", type=click.File("rb"), metavar="FILE")
@dsn_option
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Conversations per call (each batch commits on its own; re-running is safe).")
@json_option
def sync_command(user_id: UUID, source: IO[bytes], dsn: str | None, batch_size: int,
                 as_json: bool) -> None:
    """Upload a JSON export of browser conversations as the frontend would (FILE or - for stdin).

    Insert-only: nothing already stored changes. Exit 1 if any conversation was rejected.
    """
    conversations = _read_payload(source)
    report = chat_api.SyncReport()
    with connection.connect(target(dsn, quiet=as_json)) as conn:
        batches = [conversations[i:i + batch_size]
                   for i in range(0, len(conversations), batch_size)]
        with click.progressbar(length=len(conversations), label="syncing", file=sys.stderr,
                               hidden=as_json or len(batches) < 2) as bar:
            for batch in batches:
                report.add(chat_api.sync_user_conversations(conn, user_id, batch))
                conn.commit()
                bar.update(len(batch))
    if as_json:
        emit_json(report.to_json())
    else:
        table(["", "inserted", "already there", "skipped (failed)"], [
            ["conversations", report.sessions_inserted, report.sessions_existing, ""],
            ["messages", report.messages_inserted, report.messages_existing,
             report.messages_skipped_failed],
        ])
        if report.errors:
            click.echo(f"\n{report.conversations_failed} conversation(s) rejected, "
                       "nothing of them was written:")
            table(["conversation", "message", "reason"],
                  [[e.conversation_id or "-", e.message_id or "-", e.reason]
                   for e in report.errors])
    sys.exit(0 if report.ok else 1)


# --- demo -------------------------------------------------------------------------------------


def _checkout_only(name: str) -> Any:
    """The demo and the bench are development tools (pgchat_dev): in a checkout, not the wheel."""
    import importlib

    try:
        return importlib.import_module(f"pgchat_dev.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("pgchat_dev", f"pgchat_dev.{name}"):
            raise
        command = name.split("_")[0]
        raise UsageError(f"`pgchat {command}` is a development tool: it runs from a checkout of "
                         f"pgchat's repository (make {command}), not from an installed "
                         "pgchat") from None


@main.command("demo")
@dsn_option
@json_option
@click.option("--yes", is_flag=True,
              help="Allow a database with a real Supabase auth schema (writes a demo auth user).")
def demo_command(dsn: str | None, as_json: bool, yes: bool) -> None:
    """Replay the seeds' story on the legacy schema and on pgchat, side by side, with the truth.

    Migrates the database (the embedded default unless --dsn, $PGCHAT_DSN or $DATABASE_URL name
    one), writes a new demo user and its conversations there (they stay, for `pgchat usage`),
    and rebuilds the legacy side in a database of its own next to it, `<database>_legacy_demo`.
    Exit 1 if pgchat misses the true value anywhere.
    """
    demo_api = _checkout_only("demo")
    resolved, note = demo_api.resolve_target(dsn, embedded_asked())
    progress = None if as_json else click.echo
    if progress and note:
        progress(note)
    result = demo_api.run(resolved.dsn, source=resolved.source, progress=progress,
                          allow_real_auth=yes)
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(demo_api.render(result))
    sys.exit(0 if result.ok else 1)


# --- bench ------------------------------------------------------------------------------------


@main.command("bench")
@click.option("--pg-bin", "pg_bin", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Run the throwaway server from these binaries "
              "(e.g. /usr/lib/postgresql/15/bin). Default: the embedded PostgreSQL 18.")
@click.option("--dsn", metavar="DSN",
              help="Bench on this existing server instead of a throwaway one: databases "
              "bench_legacy, bench_pgchat and bench_floor are created there and dropped "
              "afterwards (the Supabase stand-in roles anon/authenticated/service_role stay).")
@click.option("--runs", type=click.IntRange(min=1), help="Runs per bulk size (default 5; "
              "legacy at N=8,000 takes at most 3).")
@click.option("--exchanges", type=click.IntRange(min=1),
              help="Timed exchanges per system and session size (default 200).")
@click.option("--writers", type=click.IntRange(min=1), help="Concurrent writers (default 8).")
@click.option("--seconds", type=click.FloatRange(min=0.5),
              help="How long the concurrent writers write (default 20).")
@click.option("--quick", is_flag=True,
              help="Small sizes (N=100/400, sessions of 50/400), 2 runs, 2 s of concurrency: "
              "every code path in well under a minute; the figures mean little.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the raw figures as JSON on stdout instead of the tables.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the raw figures as JSON to this file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png", help="Draw the scaling curves (needs pip install "
              "'pgchat[plot]').")
@click.option("--strict", is_flag=True, help="Exit 1 if pgchat misses a target.")
@click.option("--sync-curve", "sync_curve", is_flag=True,
              help="Only the sync scaling curve: one sync of N = 1,000 to 100,000 conversations "
              "of one message (--quick: 250 to 1,000); prints conversations vs seconds.")
@click.option("--adoption", is_flag=True,
              help="Only the online adoption: build a legacy database of --messages messages, "
              "run migrate and usage rebuild --yes while a writer and a reader work; prints "
              "the longest write wait, times, errors, size growth, rows kept, verify.")
@click.option("--messages", type=click.IntRange(min=500),
              help="Size of the --adoption database (default 1,000,000: under a minute here).")
@click.option("--live", is_flag=True,
              help="Only the live path: one exchange into sessions of 250 and 16,000 messages "
              "(legacy, write_chat_exchange, a plain INSERT through pgchat's triggers, the floor; "
              "interleaved), 8 writers of 8 different users, plannings per call, pgchat's own "
              "bytes per message (100,000 messages synced) and the rows one exchange writes per "
              "table; prints the ratios.")
def bench_command(pg_bin: Path | None, dsn: str | None, runs: int | None,
                  exchanges: int | None, writers: int | None, seconds: float | None,
                  quick: bool, as_json: bool, out: Path | None, plot_path: Path | None,
                  strict: bool, sync_curve: bool, adoption: bool,
                  messages: int | None, live: bool) -> None:
    """Measure the legacy schema, pgchat and the same writes with no triggers (the floor).

    On a throwaway server (three databases: legacy, pgchat, floor): bulk sync of one
    conversation of N = 500, 2,000, 8,000 messages; an unchanged re-sync (rows and WAL written);
    one exchange into a session of N = 250, 4,000, 16,000 messages (p50/p95); 8 concurrent
    writers for 20 s (throughput, errors, deadlocks, exact counters). Prints the tables and
    the targets (PASS/MISS); progress goes to stderr. Takes about 5 minutes.
    """
    bench_api = _checkout_only("bench")
    if pg_bin is not None and dsn is not None:
        raise click.UsageError("--pg-bin starts a throwaway server; --dsn uses an existing one: "
                               "give one of them")
    if messages is not None and not adoption:
        raise click.UsageError("--messages is the size of --adoption: give --adoption too")
    if adoption:
        adoption_api = _checkout_only("bench_adoption")
        result = adoption_api.run(messages or adoption_api.DEFAULT_MESSAGES, dsn=dsn,
                                  bin_dir=pg_bin, progress=lambda line: click.echo(line, err=True))
        _write_out(out, result.to_json())
        if as_json:
            emit_json(result.to_json())
        else:
            click.echo(adoption_api.render(result), nl=False)
        sys.exit(0)
    if sync_curve:
        sizes = bench_api.SYNC_CURVE_QUICK if quick else bench_api.SYNC_CURVE_SIZES
        points = bench_api.sync_curve(sizes, dsn=dsn, bin_dir=pg_bin,
                                      progress=lambda line: click.echo(line, err=True))
        _write_out(out, bench_api.sync_curve_json(points))
        if as_json:
            emit_json(bench_api.sync_curve_json(points))
        else:
            click.echo(bench_api.render_sync_curve(points), nl=False)
        sys.exit(0)
    if live:
        live_api = _checkout_only("bench_live")
        live_cfg = live_api.LIVE_QUICK if quick else live_api.LiveConfig()
        live_cfg = dataclasses.replace(
            live_cfg, calls=exchanges or live_cfg.calls, writers=writers or live_cfg.writers,
            seconds=seconds or live_cfg.seconds)
        live_report = live_api.run(live_cfg, dsn=dsn, bin_dir=pg_bin,
                                   progress=lambda line: click.echo(line, err=True))
        _write_out(out, live_report.to_json())
        if as_json:
            emit_json(live_report.to_json())
        else:
            click.echo(live_api.render(live_report), nl=False)
        sys.exit(0)
    if plot_path is not None:
        bench_api.pyplot()  # fail now, not after minutes of measuring
    cfg = (bench_api.QUICK if quick else bench_api.Config()).with_options(
        runs=runs, exchanges=exchanges, writers=writers, seconds=seconds)
    report = bench_api.run(cfg, dsn=dsn, bin_dir=pg_bin,
                           progress=lambda line: click.echo(line, err=True))
    _write_out(out, report.to_json())
    if plot_path is not None:
        bench_api.plot(report, plot_path)
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(bench_api.render(report), nl=False)
    sys.exit(1 if strict and not all(t.passed for t in report.targets) else 0)


def _write_out(out: Path | None, figures: object) -> None:
    """--out: the raw figures as JSON in a file, whichever part of the bench ran."""
    if out is not None:
        out.write_text(json.dumps(figures, indent=2, default=str) + "\n")


# --- risks -----------------------------------------------------------------------------------


@main.command("risks")
@dsn_option
@json_option
@click.option("--fix", is_flag=True,
              help="Revoke EXECUTE from anon and PUBLIC and pin the search_path of each function "
                   "found (authenticated keeps what it has); then report what remains.")
def risks_command(dsn: str | None, as_json: bool, fix: bool) -> None:
    """App functions (not pgchat's) that expose chat, usage or profile data.

    Lists each function that touches chat_sessions, chat_messages, user_usage_daily, profiles,
    usage_stats or auth.users and is SECURITY DEFINER and executable by anon, authenticated or
    PUBLIC through the API, or has a mutable search_path: the risk and the fix. Changes
    nothing unless --fix. Exit 0: none found; 1: some found (with --fix: some remain).
    """
    with connection.connect(target(dsn, quiet=as_json)) as conn:
        found = risks_api.risk_findings(conn)
        fixed = risks_api.fix_risks(conn, found) if fix else []
        remaining = risks_api.risk_findings(conn) if fixed else found
    if as_json:
        emit_json({"ok": not remaining, "risks": [r.as_dict() for r in remaining],
                   "fixed": [{"function": f.function, "statements": list(f.statements),
                              "error": f.error} for f in fixed]})
        sys.exit(1 if remaining else 0)
    for f in fixed:
        if f.error:
            click.echo(f"not fixed: {f.function}: {f.error}")
        else:
            click.echo(f"fixed: {f.function}: " + "; ".join(f.statements))
    if fixed:
        click.echo("")
    if not remaining:
        click.echo("ok: no app function exposes chat, usage or profile data")
        sys.exit(0)
    rows = []
    for r in remaining:
        rows.append([r.function, "DEFINER" if r.security_definer else "invoker",
                     ", ".join(r.executable_by) or "-",
                     r.search_path if r.search_path is not None else "MUTABLE",
                     ", ".join(r.touches)])
    table(["function", "security", "executable by", "search_path", "touches"], rows)
    for r in remaining:
        click.echo(f"\n{r.function}")
        for risk in r.risks:
            click.echo(f"  risk: {risk}")
        for fix_text in r.fixes:
            click.echo(f"  fix:  {fix_text}")
    changed = ("only what is listed as fixed above" if fixed else
               "none of them (`pgchat risks --fix` revokes anon/PUBLIC, pins search_path)")
    click.echo(f"\n{len(remaining)} function(s) at risk; pgchat changed {changed}")
    sys.exit(1)
