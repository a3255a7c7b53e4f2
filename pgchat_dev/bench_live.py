"""`pgchat bench --live`: the live path (one exchange per reply) against legacy and the floor.

The path every chat message takes, measured on the server it runs on:
- exchange: one user + assistant message into a session that already holds N messages, four
  ways, interleaved call by call (so that background noise hits all alike), p50 of many calls:
  legacy's plain 2-row upsert through its per-row triggers, pgchat's write_chat_exchange,
  a plain 2-row INSERT through pgchat's triggers, and the same INSERT with no trigger at all
  (the floor); then the exchange and the floor alone, interleaved the same way without the
  legacy calls: legacy's calls leave the cores busy and their caches cold, which slows the
  floor (mostly round trips) more than the exchange, so the ratio to the floor is given both
  ways; on a throwaway server (it runs on this machine) also each backend's own CPU time per
  call, from /proc/PID/schedstat: issue 12 asks for an exchange that costs the server no more
  than legacy's, and CPU time is steadier here than wall time;
- writers: W threads, each writing exchanges for a user of its own (W different users), for S
  seconds, legacy then pgchat: the throughput ratio, and afterwards pgchat's usage counters
  against the ledger (`pgchat usage verify`) and the session statistics against a
  recomputation (pgchat.session_stats_drift);
- plans: how often the server plans a statement during one call of each pgchat path, once the
  connection is warm. Counted from the server itself, on any PostgreSQL 15+: with
  log_planner_stats on, every planning of a statement (top-level or inside a function) sends a
  "PLANNER STATISTICS" message, which names the function and line it planned for;
- storage and rows: pgchat's own bytes per message, the growth of its own relations while the
  sync writes M messages (U users, each one sync of C conversations of K messages), between
  two VACUUM ANALYZEs, next to the growth of the chat tables themselves; and the rows one
  exchange writes, per table and way of writing it (pg_stat_xact_user_tables read inside the
  transaction, before its COMMIT, so exact). pgchat's own relations are discovered, never
  named: the tables of the schemas, and the tables and indexes of schema public, that the
  pgchat database holds and the legacy database (the app's schema before pgchat) does not.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgchat import usage as usage_api
from pgchat.connect import connect
from pgchat_dev import bench, scenario, servers

Progress = Callable[[str], None]
Message = dict[str, Any]

VARIANTS = ("legacy", "pgchat", "pgchat_insert", "floor")
QUIET = ("pgchat", "floor")  # the second loop, without legacy's calls
DATABASE_OF = {"legacy": "legacy", "pgchat": "pgchat", "pgchat_insert": "pgchat", "floor": "floor"}
LABELS = {"legacy": "legacy 2-row upsert", "pgchat": "pgchat write_chat_exchange",
          "pgchat_insert": "pgchat 2-row INSERT", "floor": "floor 2-row INSERT"}


@dataclass(frozen=True)
class LiveConfig:
    sizes: tuple[int, ...] = (250, 16000)
    calls: int = 300  # timed calls per variant and size
    warmup: int = 20
    writers: int = 8
    seconds: float = 10.0
    # storage: each of storage_users syncs storage_conversations conversations of
    # storage_messages messages, in one call (defaults: 100,000 messages)
    storage_users: int = 20
    storage_conversations: int = 100
    storage_messages: int = 50

    @property
    def storage_total(self) -> int:
        return self.storage_users * self.storage_conversations * self.storage_messages


LIVE_QUICK = LiveConfig(sizes=(50, 400), calls=30, warmup=10, writers=8, seconds=2.0,
                        storage_users=2, storage_conversations=10, storage_messages=50)


@dataclass
class WritersResult:
    system: str
    writers: int
    exchanges: int
    errors: int
    deadlocks: int
    throughput: float
    error_samples: list[str]
    usage_drift: int | None = None  # pgchat: rows of `pgchat usage verify`
    session_drift: int | None = None  # pgchat: rows of pgchat.session_stats_drift()


@dataclass
class RelationGrowth:
    name: str  # schema.relation
    kind: str  # "table" (with its indexes and TOAST) or "index"
    before: int  # bytes
    after: int
    growth: int = 0
    heap: int = 0  # tables: growth of the table alone (main fork, with FSM and VM) ...
    indexes: int = 0  # ... and of its indexes (TOAST: growth - heap - indexes)

    def __post_init__(self) -> None:
        self.growth = self.after - self.before


@dataclass
class StorageResult:
    """What M messages written by the sync add to the pgchat database, in bytes."""

    messages: int
    users: int
    conversations: int  # per user
    per_conversation: int  # messages
    sync_seconds: float  # the syncs, commits included
    own: list[RelationGrowth]  # pgchat's own relations
    chat: list[RelationGrowth]  # public.chat_messages and public.chat_sessions, for scale
    own_bytes: int = 0
    chat_bytes: int = 0
    own_per_message: float = 0.0
    chat_per_message: float = 0.0

    def __post_init__(self) -> None:
        self.own_bytes = sum(r.growth for r in self.own)
        self.chat_bytes = sum(r.growth for r in self.chat)
        self.own_per_message = self.own_bytes / self.messages
        self.chat_per_message = self.chat_bytes / self.messages


@dataclass
class LiveReport:
    machine: dict[str, Any]
    server: dict[str, Any]
    config: dict[str, Any]
    exchange: list[bench.ExchangeResult] = field(default_factory=list)
    quiet: list[bench.ExchangeResult] = field(default_factory=list)  # QUIET only, no legacy
    cpu_us: dict[str, float] = field(default_factory=dict)  # "variant@N" -> backend CPU per call
    writers: list[WritersResult] = field(default_factory=list)
    plans: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> where -> per call
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # variant -> table -> rows
    storage: StorageResult | None = None

    def p50(self, variant: str, n: int, *, quiet: bool = False) -> float:
        results = self.quiet if quiet else self.exchange
        return next(e.p50_ms for e in results if e.system == variant and e.n == n)

    def writers_of(self, system: str) -> WritersResult:
        return next(w for w in self.writers if w.system == system)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the four ways of writing one exchange ------------------------------------------------------


def _plain_insert(conn: psycopg.Connection, user_id: uuid.UUID, session_id: str,
                  user: Message, assistant: Message) -> None:
    """One 2-row INSERT of the exchange (what the floor does; through pgchat's triggers)."""
    scenario.floor_insert(conn, user_id, [{"id": session_id, "messages": [user, assistant]}],
                          create_sessions=False)


def _legacy_upsert(conn: psycopg.Connection, user_id: uuid.UUID, session_id: str,
                   user: Message, assistant: Message) -> None:
    """Legacy's plain 2-row upsert, its per-row triggers doing the analytics."""
    scenario.legacy_write_messages(conn, session_id, [user, assistant])


def _write_exchange(conn: psycopg.Connection, user_id: uuid.UUID, session_id: str,
                    user: Message, assistant: Message) -> None:
    conn.execute("SELECT public.write_chat_exchange(%s, %s, %s, %s)",
                 (str(user_id), session_id, Jsonb(user), Jsonb(assistant)))


WRITE: dict[str, bench.WriteExchange] = {
    "legacy": _legacy_upsert, "pgchat": _write_exchange, "pgchat_insert": _plain_insert,
    "floor": _plain_insert,
}


# --- exchange, interleaved --------------------------------------------------------------------


def _cpu_ns(pid: int) -> int:
    """The CPU time a local process has run, in nanoseconds (Linux schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _interleave(variants: tuple[str, ...], rounds: range, cfg: LiveConfig,
                conns: dict[str, psycopg.Connection], users: dict[str, uuid.UUID],
                sessions: dict[str, str], lasts: dict[str, datetime],
                cpu_us: dict[str, float] | None = None) -> dict[str, list[float]]:
    """One exchange of each variant per round; the first cfg.warmup rounds are not kept.
    With `cpu_us`, each variant's backend CPU time per kept call is stored there."""
    samples: dict[str, list[float]] = {v: [] for v in variants}
    pids = {v: conns[v].info.backend_pid for v in variants}
    start: dict[str, int] = {}
    for i, k in enumerate(rounds):
        if i == cfg.warmup and cpu_us is not None:
            with contextlib.suppress(OSError):  # no schedstat on this kernel: no CPU figures
                start = {v: _cpu_ns(pids[v]) for v in variants}
        for variant in variants:
            user, assistant = bench._exchange(f"{sessions[variant]}-x", k,
                                              lasts[variant] + timedelta(seconds=k + 1))
            ms = bench._timed(conns[variant], WRITE[variant], users[variant],
                              sessions[variant], user, assistant)
            if i >= cfg.warmup:
                samples[variant].append(ms)
    if cpu_us is not None and start:
        for v in variants:
            cpu_us[v] = (_cpu_ns(pids[v]) - start[v]) / 1000 / len(samples[v])
    return samples


def bench_exchange(dsns: dict[str, str], cfg: LiveConfig, tag: str, progress: Progress,
                   *, cpu_us: dict[str, float] | None = None,
                   ) -> tuple[list[bench.ExchangeResult], list[bench.ExchangeResult]]:
    """Both loops at every size; with `cpu_us` (a local server), the first loop's backend CPU
    per call is stored there as "variant@N"."""
    results, quiet_results = [], []
    for n in cfg.sizes:
        with contextlib.ExitStack() as stack:
            conns, users, sessions, lasts = {}, {}, {}, {}
            for variant in VARIANTS:
                dsn = dsns[DATABASE_OF[variant]]
                users[variant] = bench._new_user(dsn, f"{tag}-{variant}-{n}")
                convs = scenario.story(f"{tag}-{variant}-{n}", conversations=1,
                                       messages_per_conversation=n, failed=0)
                conn = stack.enter_context(connect(dsn))
                bench._prefill(DATABASE_OF[variant], conn, users[variant], convs)
                conns[variant], sessions[variant] = conn, convs[0]["id"]
                lasts[variant] = datetime.fromisoformat(convs[0]["messages"][-1]["timestamp"])
            rounds = cfg.warmup + cfg.calls
            cpu: dict[str, float] | None = {} if cpu_us is not None else None
            samples = _interleave(VARIANTS, range(rounds), cfg, conns, users, sessions, lasts,
                                  cpu)
            if cpu_us is not None and cpu:
                cpu_us.update({f"{v}@{n}": us for v, us in cpu.items()})
            quiet = _interleave(QUIET, range(rounds, 2 * rounds), cfg, conns, users, sessions,
                                lasts)
        results += [bench.ExchangeResult(v, n, samples[v]) for v in VARIANTS]
        quiet_results += [bench.ExchangeResult(v, n, quiet[v]) for v in QUIET]
        progress(f"exchange into N={n}: " + ", ".join(
            f"{v} p50 {statistics.median(samples[v]):.3f} ms" for v in VARIANTS)
            + "; without legacy in the loop: " + ", ".join(
            f"{v} p50 {statistics.median(quiet[v]):.3f} ms" for v in QUIET))
    return results, quiet_results


# --- writers of different users -----------------------------------------------------------------


def bench_writers(dsns: dict[str, str], cfg: LiveConfig, tag: str,
                  progress: Progress) -> list[WritersResult]:
    results = []
    for system in ("legacy", "pgchat"):
        dsn = dsns[system]
        bench._analyze(dsn)
        users = [bench._new_user(dsn, f"{tag}-w{i}-{system}") for i in range(cfg.writers)]
        sessions = [f"{tag}-w{i}" for i in range(cfg.writers)]
        with connect(dsn) as conn:
            for session_id, user_id in zip(sessions, users, strict=True):
                conn.execute("INSERT INTO public.chat_sessions (id, user_id, title, created_at,"
                             " updated_at) VALUES (%s, %s, 'bench', %s, %s)",
                             (session_id, user_id, bench._DAY, bench._DAY))
            conn.commit()
        tallies = [bench._Tally() for _ in users]
        start = threading.Barrier(cfg.writers + 1)
        with contextlib.ExitStack() as stack:
            conns = [stack.enter_context(connect(dsn)) for _ in users]
            threads = [threading.Thread(target=bench._writer, args=(
                c, WRITE[system], u, s, i, cfg.writers, cfg.seconds, start, t))
                for i, (c, u, s, t) in enumerate(zip(conns, users, sessions, tallies,
                                                     strict=True))]
            for thread in threads:
                thread.start()
            start.wait()
            began = time.monotonic()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - began
        exchanges = sum(t.exchanges for t in tallies)
        result = WritersResult(system, cfg.writers, exchanges, sum(t.errors for t in tallies),
                               sum(t.deadlocks for t in tallies), exchanges / elapsed,
                               [s for t in tallies for s in t.error_samples][:3])
        if system == "pgchat":
            with connect(dsn) as conn:
                result.usage_drift = len(usage_api.verify(conn))
                row = conn.execute("SELECT count(*) FROM pgchat.session_stats_drift()").fetchone()
                assert row is not None
                result.session_drift = int(row[0])
        progress(f"{cfg.writers} writers of {cfg.writers} users, {system}: "
                 f"{result.throughput:.0f} exchanges/s, {result.errors} errors, "
                 f"{result.deadlocks} deadlocks")
        results.append(result)
    return results


# --- plan counts ------------------------------------------------------------------------------

_WHERE = re.compile(r"PL/pgSQL function ([\w.]+)\([^)]*\) line (\d+)")


def _where(diag: psycopg.errors.Diagnostic) -> str:
    """The innermost function line a planning happened for, or the statement itself."""
    match = _WHERE.search(diag.context or "")
    if match:
        return f"{match.group(1)} line {match.group(2)}"
    context = (diag.context or "").splitlines()
    return context[0] if context else "the client's statement"


@dataclass
class _PlanCounter:
    """Counts the server's PLANNER STATISTICS messages while `on` is set."""

    on: bool = False
    seen: Counter[str] = field(default_factory=Counter)

    def __call__(self, diag: psycopg.errors.Diagnostic) -> None:
        if self.on and (diag.message_primary or "").startswith("PLANNER STATISTICS"):
            self.seen[_where(diag)] += 1


def count_plans(dsn: str, tag: str, calls: int = 20,
                warmup: int = 20) -> dict[str, dict[str, float]]:
    """Plannings per call of each pgchat live path, by where they happen, on a warm connection."""
    out: dict[str, dict[str, float]] = {}
    user_id = bench._new_user(dsn, f"{tag}-plans")
    for variant in ("pgchat", "pgchat_insert"):
        session_id = f"{tag}-plans-{variant}"
        counter = _PlanCounter()
        with connect(dsn) as conn:
            conn.execute("INSERT INTO public.chat_sessions (id, user_id, title, created_at,"
                         " updated_at) VALUES (%s, %s, 'plans', %s, %s)",
                         (session_id, user_id, bench._DAY, bench._DAY))
            conn.commit()
            conn.add_notice_handler(counter)
            conn.execute("SELECT set_config('client_min_messages', 'log', false),"
                         " set_config('log_planner_stats', 'on', false)")
            conn.commit()
            for k in range(warmup + calls):
                counter.on = k >= warmup
                user, assistant = bench._exchange(session_id, k,
                                                  bench._DAY + timedelta(seconds=k))
                WRITE[variant](conn, user_id, session_id, user, assistant)
                conn.commit()
            counter.on = False
        out[variant] = {where: n / calls for where, n in sorted(counter.seen.items())}
    return out


# --- rows one exchange writes -----------------------------------------------------------------


def count_rows(dsns: dict[str, str], tag: str) -> dict[str, dict[str, int]]:
    """Rows (tuples inserted + updated + deleted) one exchange writes, per table, per variant.

    Each variant gets a user and a session of its own and writes one exchange first (the day's
    counters then exist: what every later exchange of the day finds); the second exchange is
    counted, from pg_stat_xact_user_tables read in its transaction before and after the write,
    before its COMMIT (the difference of the two reads is exactly this transaction's writes)."""
    out: dict[str, dict[str, int]] = {}
    for variant in VARIANTS:
        dsn = dsns[DATABASE_OF[variant]]
        user_id = bench._new_user(dsn, f"{tag}-rows-{variant}")
        session_id = f"{tag}-rows-{variant}"
        with connect(dsn) as conn:
            conn.execute("INSERT INTO public.chat_sessions (id, user_id, title, created_at,"
                         " updated_at) VALUES (%s, %s, 'rows', %s, %s)",
                         (session_id, user_id, bench._DAY, bench._DAY))
            conn.commit()
            for k in range(2):
                user, assistant = bench._exchange(session_id, k,
                                                  bench._DAY + timedelta(seconds=k + 1))
                earlier = bench._written_tuples(conn)
                WRITE[variant](conn, user_id, session_id, user, assistant)
                after = bench._written_tuples(conn)
                conn.commit()
            out[variant] = {t: n - earlier.get(t, 0) for t, n in after.items()
                            if n != earlier.get(t, 0)}
    return out


# --- pgchat's own storage -------------------------------------------------------------------

# The non-system schemas of a database, its public tables and the indexes on them.
_SCHEMAS = ("SELECT nspname FROM pg_catalog.pg_namespace"
            " WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'")
_PUBLIC_RELATIONS = """
SELECT c.relname FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind::text = ANY(%s)
"""


def _names(dsn: str, query: str, params: tuple[Any, ...] = ()) -> set[str]:
    with connect(dsn, autocommit=True) as conn:
        return {str(row[0]) for row in conn.execute(query, params).fetchall()}


def own_relations(dsns: dict[str, str]) -> tuple[list[str], list[str]]:
    """pgchat's own relations in the pgchat database, by comparison with the legacy database
    (the app's schema before pgchat): the tables of the schemas only pgchat has, with the
    public tables only pgchat has (each counted with its indexes and TOAST); and the indexes
    on public tables that only pgchat has. Names are schema-qualified (quoted if need be)."""
    schemas = (_names(dsns["pgchat"], _SCHEMAS) - _names(dsns["legacy"], _SCHEMAS)) | {"public"}
    new_tables = (_names(dsns["pgchat"], _PUBLIC_RELATIONS, (["r", "p"],))
                  - _names(dsns["legacy"], _PUBLIC_RELATIONS, (["r", "p"],)))
    new_indexes = (_names(dsns["pgchat"], _PUBLIC_RELATIONS, (["i", "I"],))
                   - _names(dsns["legacy"], _PUBLIC_RELATIONS, (["i", "I"],)))
    with connect(dsns["pgchat"], autocommit=True) as conn:
        tables = [str(r[0]) for r in conn.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'm') AND n.nspname = ANY(%s)"
            " AND (n.nspname <> 'public' OR c.relname = ANY(%s)) ORDER BY 1",
            (sorted(schemas), sorted(new_tables))).fetchall()]
        indexes = [str(r[0]) for r in conn.execute(
            "SELECT format('%%I.%%I', 'public', i.relname) FROM pg_catalog.pg_index x"
            " JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_catalog.pg_class t ON t.oid = x.indrelid"
            " WHERE t.relnamespace = 'public'::regnamespace AND i.relname = ANY(%s)"
            " AND NOT t.relname = ANY(%s) ORDER BY 1",
            (sorted(new_indexes), sorted(new_tables))).fetchall()]
    return tables, indexes


CHAT_TABLES = ("public.chat_messages", "public.chat_sessions")


def _sizes(conn: psycopg.Connection, tables: list[str],
           indexes: list[str]) -> dict[str, tuple[int, int, int]]:
    """relation -> (bytes, heap bytes, index bytes): tables with their indexes and TOAST
    (pg_total_relation_size; heap: the main fork, FSM and VM), indexes alone
    (pg_relation_size)."""
    out: dict[str, tuple[int, int, int]] = {}
    for name in tables:
        row = conn.execute("SELECT pg_total_relation_size(r), pg_relation_size(r, 'main')"
                           " + pg_relation_size(r, 'fsm') + pg_relation_size(r, 'vm'),"
                           " pg_indexes_size(r) FROM CAST(%s AS regclass) r",
                           (name,)).fetchone()
        assert row is not None
        out[name] = (int(row[0]), int(row[1]), int(row[2]))
    for name in indexes:
        row = conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()
        assert row is not None
        out[name] = (int(row[0]), 0, int(row[0]))
    return out


def _vacuum_analyze(dsn: str) -> None:
    with connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def bench_storage(dsns: dict[str, str], cfg: LiveConfig, tag: str,
                  progress: Progress) -> StorageResult:
    """The growth of pgchat's own relations, and of the chat tables, while the sync writes
    cfg.storage_total messages: sizes after VACUUM ANALYZE, before and after."""
    dsn = dsns["pgchat"]
    tables, indexes = own_relations(dsns)
    users = [bench._new_user(dsn, f"{tag}-storage{u}") for u in range(cfg.storage_users)]
    _vacuum_analyze(dsn)
    with connect(dsn) as conn:
        before = _sizes(conn, [*tables, *CHAT_TABLES], indexes)
        conn.commit()
        began = time.perf_counter()
        for u, user_id in enumerate(users):
            convs = scenario.story(f"{tag}-st{u}", conversations=cfg.storage_conversations,
                                   messages_per_conversation=cfg.storage_messages, failed=0)
            scenario.pgchat_upload(conn, user_id, convs)
            conn.commit()
        seconds = time.perf_counter() - began
    _vacuum_analyze(dsn)
    with connect(dsn) as conn:
        after = _sizes(conn, [*tables, *CHAT_TABLES], indexes)
        conn.commit()

    def growth(name: str, kind: str) -> RelationGrowth:
        return RelationGrowth(name, kind, before[name][0], after[name][0],
                              heap=after[name][1] - before[name][1],
                              indexes=after[name][2] - before[name][2])

    result = StorageResult(
        cfg.storage_total, cfg.storage_users, cfg.storage_conversations, cfg.storage_messages,
        seconds,
        own=[growth(t, "table") for t in tables] + [growth(i, "index") for i in indexes],
        chat=[growth(t, "table") for t in CHAT_TABLES])
    progress(f"storage: {result.messages:,} messages synced in {seconds:.1f} s; pgchat's own "
             f"{result.own_per_message:.1f} bytes per message, the chat tables "
             f"{result.chat_per_message:.1f}")
    return result


# --- run and render ---------------------------------------------------------------------------


def run(cfg: LiveConfig, *, dsn: str | None = None, bin_dir: Path | None = None,
        db_prefix: str = "bench_live_", progress: Progress | None = None,
        local: bool | None = None) -> LiveReport:
    """`local`: the server's backends are processes of this machine, so their CPU time can be
    read (default: only for the throwaway server)."""
    say: Progress = progress or (lambda _line: None)
    read_cpu = dsn is None if local is None else local
    machine = bench.machine_info()
    with contextlib.ExitStack() as stack:
        if dsn is not None:
            server_dsn, origin, drop = dsn, "existing server (--dsn)", True
            names = {s: f"{db_prefix}{s}" for s in bench.SYSTEMS}
        else:
            srv = stack.enter_context(servers.throwaway(bin_dir))
            server_dsn, drop = srv.url("postgres"), False
            origin = f"throwaway, binaries from {bin_dir}" if bin_dir else "throwaway, embedded"
            names = {s: s for s in bench.SYSTEMS}
        info = bench.server_info(server_dsn, origin)
        say(f"PostgreSQL {info['version']} ({origin}); creating {', '.join(names.values())}")
        dsns = stack.enter_context(bench._databases(server_dsn, names, drop=drop))
        report = LiveReport(machine, info, {**asdict(cfg), "databases": names})
        tag = uuid.uuid4().hex[:6]
        report.exchange, report.quiet = bench_exchange(
            dsns, cfg, tag, say, cpu_us=report.cpu_us if read_cpu else None)
        report.writers = bench_writers(dsns, cfg, tag, say)
        report.plans = count_plans(dsns["pgchat"], tag)
        report.rows = count_rows(dsns, tag)
        say("rows one exchange writes: " + ", ".join(
            f"{v} {sum(t.values())}" for v, t in report.rows.items()))
        report.storage = bench_storage(dsns, cfg, tag, say)
        report.machine["load_after"] = bench._load()
    return report


def _ratio_row(n: int, us: dict[str, float]) -> list[str]:
    """N, each variant's figure, then exchange/legacy, exchange/floor and insert/legacy."""
    return [f"{n:,}", *[f"{us[v]:,.0f}" for v in VARIANTS], f"{us['pgchat'] / us['legacy']:.2f}x",
            f"{us['pgchat'] / us['floor']:.2f}x", f"{us['pgchat_insert'] / us['legacy']:.2f}x"]


def render(report: LiveReport) -> str:
    cfg = LiveConfig(**{k: v for k, v in report.config.items()
                        if k in LiveConfig.__dataclass_fields__})
    s, m = report.server, report.machine
    out = [f"pgchat bench --live: PostgreSQL {s['version']} ({s['origin']}); {m['cores']} cores, "
           f"load before {m['load_before']}, after {m.get('load_after')}", ""]
    header = ["N", *[LABELS[v] for v in VARIANTS], "exchange/legacy", "exchange/floor",
              "insert/legacy"]
    out.append("One exchange into a session of N messages: "
               f"p50 us of {cfg.calls} interleaved calls")
    out += bench._grid(header, [_ratio_row(n, {v: report.p50(v, n) * 1000 for v in VARIANTS})
                                for n in cfg.sizes])
    if report.cpu_us:
        out += ["", "Server CPU per call, the same calls (each backend's own time, "
                "/proc/PID/schedstat): us"]
        out += bench._grid(header, [_ratio_row(n, {v: report.cpu_us[f"{v}@{n}"]
                                                   for v in VARIANTS}) for n in cfg.sizes])
    if report.quiet:
        quiet_rows = []
        for n in cfg.sizes:
            q = {v: report.p50(v, n, quiet=True) for v in QUIET}
            quiet_rows.append([f"{n:,}", *[f"{q[v] * 1000:,.0f}" for v in QUIET],
                               f"{q['pgchat'] / q['floor']:.2f}x"])
        out += ["", "The same, without legacy's calls in the loop (they leave the cores busy and"
                " their caches cold, which slows the floor most): p50 us"]
        out += bench._grid(["N", *[LABELS[v] for v in QUIET], "exchange/floor"], quiet_rows)
    out += render_storage(report)
    legacy, pgchat = report.writers_of("legacy"), report.writers_of("pgchat")
    out += ["", f"{cfg.writers} writers of {cfg.writers} different users for {cfg.seconds:g} s: "
            f"legacy {legacy.throughput:,.0f}/s, pgchat {pgchat.throughput:,.0f}/s "
            f"= {pgchat.throughput / legacy.throughput:.2f}x legacy; pgchat errors "
            f"{pgchat.errors}, deadlocks {pgchat.deadlocks}; after the run: usage verify "
            f"{pgchat.usage_drift} differences, session statistics drift {pgchat.session_drift}"]
    for w in (legacy, pgchat):
        if w.error_samples:
            out.append(f"  {w.system} errors, e.g.: {w.error_samples[0]}")
    out += ["", "Plannings per call on a warm connection (log_planner_stats), by where:"]
    for variant, where in report.plans.items():
        total = sum(where.values())
        detail = ", ".join(f"{w}: {n:g}" for w, n in where.items()) or "none"
        out.append(f"  {LABELS[variant]}: {total:g} ({detail})")
    return "\n".join(out) + "\n"


def _growth_line(r: RelationGrowth, messages: int) -> list[str]:
    what = "table, indexes, TOAST" if r.kind == "table" else "index"
    return [f"  {r.name} ({what})", f"{r.growth:,}", f"{r.growth / messages:,.1f}",
            f"{r.heap / messages:,.1f}" if r.kind == "table" else "",
            f"{r.indexes / messages:,.1f}"]


def render_storage(report: LiveReport) -> list[str]:
    """The section "Storage and rows" (nothing when the report has neither)."""
    if report.storage is None and not report.rows:
        return []
    out = ["", "Storage and rows"]
    st = report.storage
    if st is not None:
        out += ["", f"pgchat's own storage: growth while the sync writes {st.messages:,} messages "
                f"({st.users:,} users x {st.conversations:,} conversations x "
                f"{st.per_conversation:,} messages, one sync per user, "
                f"{st.sync_seconds:.1f} s), after VACUUM ANALYZE"]
        grew = [r for r in st.own if r.growth]
        still = sorted({r.name.split(".")[0] for r in st.own if not r.growth})
        rest = ([[f"  {len(st.own) - len(grew)} more in {', '.join(still)} (did not grow)",
                  "0", "0.0", "", ""]] if still else [])
        rows = [["pgchat's own, total", f"{st.own_bytes:,}", f"{st.own_per_message:,.1f}",
                 "", ""], *[_growth_line(r, st.messages) for r in grew], *rest,
                ["chat tables, total (for scale)", f"{st.chat_bytes:,}",
                 f"{st.chat_per_message:,.1f}", "", ""],
                *[_growth_line(r, st.messages) for r in st.chat]]
        out += bench._grid(["relation", "bytes", "per message", "heap/msg", "indexes/msg"],
                           rows)
    if report.rows:
        tables = sorted({t for written in report.rows.values() for t in written})
        variants = [v for v in VARIANTS if v in report.rows]
        grid = [[t, *[f"{report.rows[v].get(t, 0):,}" for v in variants]] for t in tables]
        grid.append(["total", *[f"{sum(report.rows[v].values()):,}" for v in variants]])
        out += ["", "Rows one exchange writes, per table (inserted + updated + deleted, "
                "pg_stat_xact_user_tables before COMMIT; the day's second exchange)"]
        out += bench._grid(["table", *[LABELS[v] for v in variants]], grid)
    return out
