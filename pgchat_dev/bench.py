"""`pgchat bench`: the legacy per-row triggers, pgchat, and no triggers at all, side by side.

Three databases on one server, written the same way, measured the same way:
- `legacy`: Supabase's auth stand-in (migration 0001, executed raw) plus sql/legacy/schema.sql,
  written the way the app wrote (sync route: upsert session + one multi-row upsert of messages;
  chat route: one single-row upsert per message);
- `pgchat`: every migration applied (`sync_user_conversations`, `write_chat_exchange`);
- `floor`: the baseline (0002), which has no chat triggers (IF EXISTS: older 0002s had two,
  dropped here): the same tables and indexes, plain INSERTs, nothing maintained. What
  any implementation costs at least.

The sections (medians of several runs, and the ratios pgchat/floor and legacy/pgchat):
- bulk: one conversation of N messages uploaded in one call, timed from the call to the commit;
- re-sync: the same 60-message upload again, nothing new: tuples written per table (read from
  pg_stat_xact_user_tables inside the transaction, so exact) and WAL bytes (the insert LSN
  before the call and after the commit; background WAL of the server counts too);
- exchange: one user + assistant message into a session that already holds N messages, p50/p95;
- writers: W threads, one connection each, writing exchanges for the same user and the same day
  into a session each, for S seconds; nothing is retried. Throughput, errors, deadlocks, and
  whether the usage counters equal what was written.

Before measuring, each database gets some history (10 conversations of 50 messages, written by
its own path) and fresh statistics, and ANALYZE runs again before each bulk size, each exchange
session and each concurrency run, as autovacuum would in production. (A connection whose first
statements ran on empty tables may keep their plans: the legacy trigger then sorts the whole
session for every row and is 2-3x slower than it really is.)

Timings include the client's work (building the JSON payload), as an application sees them.
Timings on a shared machine are noisy: the report prints the load average before and after.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import os
import platform
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from pgchat import migrate
from pgchat import usage as usage_api
from pgchat.connect import connect, one_line
from pgchat.errors import PgchatError, UsageError
from pgchat.paths import migrations_dir, sql_dir
from pgchat_dev import scenario, servers

SYSTEMS = ("legacy", "pgchat", "floor")
Progress = Callable[[str], None]
Conversations = list[dict[str, Any]]
Message = dict[str, Any]

_DEADLOCK = "40P01"
_DAY = datetime(2025, 8, 1, 9, 0, tzinfo=UTC)  # the writers' day (usage is booked per day)


@dataclass(frozen=True)
class Config:
    """What to measure. The defaults are the full run; `QUICK` exercises every path fast."""

    bulk_sizes: tuple[int, ...] = (500, 2000, 8000)
    exchange_sizes: tuple[int, ...] = (250, 4000, 16000)
    runs: int = 5
    slow_runs: int = 3  # legacy bulk at N >= slow_size takes 10-30 s a run: fewer runs there
    slow_size: int = 8000
    exchanges: int = 200  # timed exchanges per system and session size
    warmup: int = 10  # untimed exchanges first (plans, caches)
    resync_runs: int = 2
    writers: int = 8
    seconds: float = 20.0
    quick: bool = False

    def with_options(self, *, runs: int | None = None, exchanges: int | None = None,
                     writers: int | None = None, seconds: float | None = None) -> Config:
        """This configuration with the options that were given (None: keep)."""
        return replace(self, runs=self.runs if runs is None else runs,
                       exchanges=self.exchanges if exchanges is None else exchanges,
                       writers=self.writers if writers is None else writers,
                       seconds=self.seconds if seconds is None else seconds)

    def runs_for(self, system: str, n: int) -> int:
        if system == "legacy" and n >= self.slow_size:
            return min(self.runs, self.slow_runs)
        return self.runs


QUICK = Config(bulk_sizes=(100, 400), exchange_sizes=(50, 400), runs=2, slow_runs=2,
               exchanges=30, warmup=3, resync_runs=2, writers=8, seconds=2.0, quick=True)


# --- results ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return _median(values)
    return statistics.quantiles(values, n=20, method="inclusive")[18]


@dataclass
class BulkResult:
    system: str
    n: int
    runs_ms: list[float]
    median_ms: float = 0.0

    def __post_init__(self) -> None:
        self.median_ms = _median(self.runs_ms)


@dataclass
class ResyncResult:
    system: str
    messages: int
    rows_written: dict[str, int]  # table -> inserted + updated + deleted tuples (last run)
    rows_total: list[int]  # per run
    wal_bytes: list[int]  # per run
    wal_bytes_median: float = 0.0

    def __post_init__(self) -> None:
        self.wal_bytes_median = _median([float(b) for b in self.wal_bytes])


@dataclass
class ExchangeResult:
    system: str
    n: int
    samples_ms: list[float]
    p50_ms: float = 0.0
    p95_ms: float = 0.0

    def __post_init__(self) -> None:
        self.p50_ms = _median(self.samples_ms)
        self.p95_ms = _p95(self.samples_ms)


@dataclass
class CounterCheck:
    """The usage counters after the writers, against what they committed."""

    expected: dict[str, int]
    recorded: dict[str, int]
    models_expected: dict[str, int]
    models_recorded: dict[str, int]
    missing: int  # increments lost: messages sent/received and model uses under the truth
    excess: int  # increments counted twice
    models_used_lost_pct: float
    exact: bool
    ledger_drift: int | None  # pgchat only: counters that disagree with the usage ledger


@dataclass
class ConcurrencyResult:
    system: str
    writers: int
    seconds: float  # measured wall time
    exchanges: int
    errors: int
    deadlocks: int
    throughput: float  # exchanges per second
    error_samples: list[str]
    counters: CounterCheck | None


@dataclass(frozen=True)
class Target:
    name: str
    passed: bool
    detail: str


@dataclass
class Report:
    machine: dict[str, Any]
    server: dict[str, Any]
    config: dict[str, Any]
    bulk: list[BulkResult] = field(default_factory=list)
    resync: list[ResyncResult] = field(default_factory=list)
    exchange: list[ExchangeResult] = field(default_factory=list)
    concurrency: list[ConcurrencyResult] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def bulk_of(self, system: str, n: int) -> BulkResult | None:
        return next((b for b in self.bulk if b.system == system and b.n == n), None)

    def resync_of(self, system: str) -> ResyncResult | None:
        return next((r for r in self.resync if r.system == system), None)

    def exchange_of(self, system: str, n: int) -> ExchangeResult | None:
        return next((e for e in self.exchange if e.system == system and e.n == n), None)

    def concurrency_of(self, system: str) -> ConcurrencyResult | None:
        return next((c for c in self.concurrency if c.system == system), None)


# --- the three databases ----------------------------------------------------------------------


def _dsn_for(server_dsn: str, dbname: str) -> str:
    return make_conninfo(server_dsn, dbname=dbname)


def _create_database(server_dsn: str, name: str) -> None:
    with connect(server_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise UsageError(f"database {name} exists already (a previous bench run?): "
                             "drop it first, nothing was changed")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_database(server_dsn: str, name: str) -> None:
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _install_legacy(dsn: str) -> None:
    with connect(dsn) as conn:
        conn.execute((migrations_dir() / "0001_supabase_standin.sql").read_text())
        conn.execute((sql_dir() / "legacy" / "schema.sql").read_text())
        conn.commit()


def _install_pgchat(dsn: str) -> None:
    migrate.migrate(dsn)


def _install_floor(dsn: str) -> None:
    migrate.migrate(dsn, to="0002_baseline")
    with connect(dsn) as conn:
        conn.execute("DROP TRIGGER IF EXISTS on_message_change ON public.chat_messages")
        conn.execute("DROP TRIGGER IF EXISTS on_session_updated ON public.chat_sessions")
        conn.commit()


_INSTALL: dict[str, Callable[[str], None]] = {
    "legacy": _install_legacy, "pgchat": _install_pgchat, "floor": _install_floor,
}


@contextlib.contextmanager
def _databases(server_dsn: str, names: dict[str, str], *, drop: bool) -> Iterator[dict[str, str]]:
    """Create and install the three databases; yield system -> DSN; drop them if `drop`."""
    created: list[str] = []
    try:
        for system in SYSTEMS:
            _create_database(server_dsn, names[system])
            created.append(names[system])
            dsn = _dsn_for(server_dsn, names[system])
            _INSTALL[system](dsn)
            _seed(system, dsn)
        yield {s: _dsn_for(server_dsn, names[s]) for s in SYSTEMS}
    finally:
        if drop:
            for name in created:
                with contextlib.suppress(PgchatError, psycopg.Error):
                    _drop_database(server_dsn, name)


SEED_CONVERSATIONS, SEED_MESSAGES = 10, 50


def _seed(system: str, dsn: str) -> None:
    """Some history (10 conversations of 50 messages, by each system's own write path), then
    ANALYZE: plans cached by a connection that first ran on EMPTY tables can stay bad for the
    connection's life (the legacy trigger then sorts the whole session for each row, 2-3x
    slower); no production database is empty."""
    with connect(dsn) as conn:
        user_id = scenario.create_user(conn, "bench-seed@example.com")
        convs = scenario.story("seed", conversations=SEED_CONVERSATIONS,
                               messages_per_conversation=SEED_MESSAGES, failed=0)
        _UPLOAD[system](conn, user_id, convs)
        conn.commit()
    _analyze(dsn)


def _analyze(dsn: str) -> None:
    """Fresh statistics (what autovacuum keeps up in production); it also makes every
    connection re-plan its cached statements against them."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def _new_user(dsn: str, tag: str) -> uuid.UUID:
    with connect(dsn) as conn:
        user_id = scenario.create_user(conn, f"bench-{tag}@example.com")
        conn.commit()
    return user_id


# --- the write paths, per system --------------------------------------------------------------


Upload = Callable[[psycopg.Connection, uuid.UUID, Conversations], Any]
WriteExchange = Callable[[psycopg.Connection, uuid.UUID, str, Message, Message], None]

_UPLOAD: dict[str, Upload] = {
    "legacy": scenario.legacy_upload,
    "pgchat": scenario.pgchat_upload,
    "floor": scenario.floor_insert,
}


def _exchange_legacy(conn: psycopg.Connection, user_id: uuid.UUID, session_id: str,
                     user: Message, assistant: Message) -> None:
    # The chat route's writes: one single-row upsert per message (legacy triggers per row).
    scenario.legacy_write_messages(conn, session_id, [user])
    scenario.legacy_write_messages(conn, session_id, [assistant])


def _exchange_pgchat(conn: psycopg.Connection, user_id: uuid.UUID, session_id: str,
                     user: Message, assistant: Message) -> None:
    # Straight SQL, not pgchat.chat: a deadlock must keep its SQLSTATE to be counted as one.
    conn.execute("SELECT public.write_chat_exchange(%s, %s, %s, %s)",
                 (str(user_id), session_id, Jsonb(user), Jsonb(assistant)))


def _exchange_floor(conn: psycopg.Connection, user_id: uuid.UUID, session_id: str,
                    user: Message, assistant: Message) -> None:
    for message in (user, assistant):  # two plain single-row INSERTs
        scenario.floor_insert(conn, user_id, [{"id": session_id, "messages": [message]}],
                              create_sessions=False)


_EXCHANGE: dict[str, WriteExchange] = {
    "legacy": _exchange_legacy, "pgchat": _exchange_pgchat, "floor": _exchange_floor,
}


def _exchange(tag: str, k: int, at: datetime) -> tuple[Message, Message]:
    """The k-th exchange of a session, in the frontend's ChatMessage shape."""
    user_id = f"{tag}-u{k}"
    input_tokens = 5 + k % 50
    output_tokens = 50 + (k * 7) % 400
    user = {"id": user_id, "role": "user", "content": f"question {k}",
            "timestamp": at.isoformat(), "input_tokens": input_tokens}
    assistant = {
        "id": f"{tag}-a{k}", "role": "assistant", "content": f"answer {k} " * 12,
        "timestamp": (at + timedelta(microseconds=500)).isoformat(),
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens, "elapsed_time": 1 + k % 9,
        "model": scenario.MODELS[k % len(scenario.MODELS)], "user_message_id": user_id,
        "contentType": "markdown", "completion_id": f"gen-{tag}-{k}",
    }
    return user, assistant


def _timed(conn: psycopg.Connection, action: Callable[..., object], *args: Any) -> float:
    """Milliseconds from `action(conn, *args)` to the end of the commit."""
    start = time.perf_counter()
    action(conn, *args)
    conn.commit()
    return (time.perf_counter() - start) * 1000.0


# --- bulk sync of one conversation ------------------------------------------------------------


def bench_bulk(dsns: dict[str, str], cfg: Config, tag: str, progress: Progress) -> list[BulkResult]:
    """Runs interleave the systems, so that background noise hits all three alike."""
    samples: dict[tuple[str, int], list[float]] = {(s, n): [] for s in SYSTEMS
                                                   for n in cfg.bulk_sizes}
    conns = {s: connect(dsns[s]) for s in SYSTEMS}
    try:
        users = {s: _new_user(dsns[s], f"{tag}-bulk") for s in SYSTEMS}
        for n in cfg.bulk_sizes:
            for system in SYSTEMS:
                _analyze(dsns[system])
            for run in range(cfg.runs):
                line = []
                for system in SYSTEMS:
                    if run >= cfg.runs_for(system, n):
                        continue
                    convs = scenario.story(f"{tag}-b{n}r{run}", conversations=1,
                                           messages_per_conversation=n, failed=0)
                    ms = _timed(conns[system], _UPLOAD[system], users[system], convs)
                    samples[(system, n)].append(ms)
                    line.append(f"{system} {ms:.1f} ms")
                progress(f"bulk N={n} run {run + 1}/{cfg.runs}: " + ", ".join(line))
    finally:
        for conn in conns.values():
            conn.close()
    return [BulkResult(s, n, samples[(s, n)]) for n in cfg.bulk_sizes for s in SYSTEMS]


# --- unchanged re-sync ------------------------------------------------------------------------


def _written_tuples(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del"
        " FROM pg_stat_xact_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY 1"
    ).fetchall()
    return {str(name): int(count) for name, count in rows}


def _measure_resync(conn: psycopg.Connection, upload: Upload, user_id: uuid.UUID,
                    convs: Conversations) -> tuple[dict[str, int], int]:
    row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    before = row[0]
    # pg_stat_xact_* also hold the counts of this backend's earlier transactions that are not
    # yet flushed to the shared statistics (PostgreSQL 15+), and nothing is flushed inside a
    # transaction: the difference of two reads in the same transaction is exactly its writes.
    earlier = _written_tuples(conn)
    upload(conn, user_id, convs)
    after = _written_tuples(conn)
    conn.commit()
    written = {t: n - earlier.get(t, 0) for t, n in after.items() if n != earlier.get(t, 0)}
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)",
                       (before,)).fetchone()
    conn.commit()
    assert row is not None
    return written, int(row[0])


def bench_resync(dsns: dict[str, str], cfg: Config, tag: str,
                 progress: Progress) -> list[ResyncResult]:
    results = []
    for system in ("legacy", "pgchat"):  # the floor has no notion of a re-sync
        user_id = _new_user(dsns[system], f"{tag}-resync")
        convs = scenario.story(f"{tag}-rs")  # 3 conversations x 20 messages, 2 failed
        with connect(dsns[system]) as conn:
            _UPLOAD[system](conn, user_id, convs)
            conn.commit()
            totals: list[int] = []
            wal: list[int] = []
            written: dict[str, int] = {}
            for _ in range(cfg.resync_runs):
                written, wal_bytes = _measure_resync(conn, _UPLOAD[system], user_id, convs)
                totals.append(sum(written.values()))
                wal.append(wal_bytes)
        messages = sum(len(c["messages"]) for c in convs)
        results.append(ResyncResult(system, messages, written, totals, wal))
        progress(f"re-sync of {messages} messages, {system}: rows written {totals}, "
                 f"WAL bytes {wal}")
    return results


# --- one exchange into a session of N messages ------------------------------------------------


def _prefill(system: str, conn: psycopg.Connection, user_id: uuid.UUID,
             convs: Conversations) -> None:
    """Fill the session quickly: set-based for pgchat; triggers off for legacy (and floor).
    Then VACUUM ANALYZE: fresh statistics, and the rows just written are vacuumed before the
    timed calls, not by autovacuum on the same cores during them."""
    if system == "pgchat":
        scenario.pgchat_upload(conn, user_id, convs)
    else:
        conn.execute("ALTER TABLE public.chat_messages DISABLE TRIGGER USER")
        _UPLOAD[system](conn, user_id, convs)
        conn.execute("ALTER TABLE public.chat_messages ENABLE TRIGGER USER")
    conn.commit()
    conn.autocommit = True
    try:
        conn.execute("VACUUM ANALYZE")
    finally:
        conn.autocommit = False


def bench_exchange(dsns: dict[str, str], cfg: Config, tag: str,
                   progress: Progress) -> list[ExchangeResult]:
    results = []
    for n in cfg.exchange_sizes:
        for system in SYSTEMS:
            user_id = _new_user(dsns[system], f"{tag}-x{n}")
            convs = scenario.story(f"{tag}-x{n}", conversations=1, messages_per_conversation=n,
                                   failed=0)
            session_id = convs[0]["id"]
            last = datetime.fromisoformat(convs[0]["messages"][-1]["timestamp"])
            samples = []
            with connect(dsns[system]) as conn:
                _prefill(system, conn, user_id, convs)
                for k in range(cfg.warmup + cfg.exchanges):
                    user, assistant = _exchange(f"{session_id}-x", k,
                                                last + timedelta(seconds=k + 1))
                    ms = _timed(conn, _EXCHANGE[system], user_id, session_id, user, assistant)
                    if k >= cfg.warmup:
                        samples.append(ms)
            result = ExchangeResult(system, n, samples)
            results.append(result)
            progress(f"exchange into N={n}, {system}: p50 {result.p50_ms:.2f} ms, "
                     f"p95 {result.p95_ms:.2f} ms")
    return results


# --- concurrent writers -----------------------------------------------------------------------


@dataclass
class _Tally:
    exchanges: int = 0
    errors: int = 0
    deadlocks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    models: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    finished: float = 0.0


def _writer(conn: psycopg.Connection, write: WriteExchange, user_id: uuid.UUID,
            session_id: str, index: int, writers: int, seconds: float,
            start: threading.Barrier, tally: _Tally) -> None:
    """Writer `index` of `writers`: exchanges until `seconds` have passed, tallied."""
    start.wait()
    deadline = time.monotonic() + seconds
    k = 0
    try:
        while time.monotonic() < deadline:
            at = _DAY + timedelta(milliseconds=k * writers + index)
            user, assistant = _exchange(session_id, k, at)
            k += 1
            try:
                write(conn, user_id, session_id, user, assistant)
                conn.commit()
            except psycopg.Error as exc:
                conn.rollback()
                if exc.sqlstate == _DEADLOCK:
                    tally.deadlocks += 1
                else:
                    tally.errors += 1
                if len(tally.error_samples) < 3:
                    tally.error_samples.append(one_line(exc))
                continue
            tally.exchanges += 1
            tally.input_tokens += user["input_tokens"]
            tally.output_tokens += assistant["output_tokens"]
            tally.models[assistant["model"]] += 1
    except Exception as exc:  # a broken connection: this writer stops, the others go on
        tally.errors += 1
        tally.error_samples.append(f"writer {index} stopped: {one_line(exc)}")
    finally:
        tally.finished = time.monotonic()


def _check_counters(conn: psycopg.Connection, system: str, user_id: uuid.UUID,
                    tally: _Tally) -> CounterCheck:
    row = conn.execute(
        "SELECT coalesce(sum(messages_sent), 0), coalesce(sum(messages_received), 0),"
        " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
        " FROM public.user_usage_daily WHERE user_id = %s", (user_id,)).fetchone()
    assert row is not None
    names = ("messages_sent", "messages_received", "input_tokens", "output_tokens")
    recorded = {k: int(v) for k, v in zip(names, row, strict=True)}
    expected = {"messages_sent": tally.exchanges, "messages_received": tally.exchanges,
                "input_tokens": tally.input_tokens, "output_tokens": tally.output_tokens}
    models_recorded = {str(m): int(c) for m, c in conn.execute(
        "SELECT m.key, sum(m.value::bigint) FROM public.user_usage_daily u,"
        " jsonb_each_text(u.models_used) m WHERE u.user_id = %s GROUP BY m.key ORDER BY 1",
        (user_id,)).fetchall()}
    models_expected = dict(sorted(tally.models.items()))
    counted = ("messages_sent", "messages_received")
    missing = sum(max(0, expected[k] - recorded[k]) for k in counted)
    excess = sum(max(0, recorded[k] - expected[k]) for k in counted)
    for model in set(models_expected) | set(models_recorded):
        diff = models_expected.get(model, 0) - models_recorded.get(model, 0)
        missing += max(0, diff)
        excess += max(0, -diff)
    uses = sum(models_recorded.values())
    lost_pct = 100.0 * (1 - uses / tally.exchanges) if tally.exchanges else 0.0
    drift = len(usage_api.verify(conn, user_id)) if system == "pgchat" else None
    exact = recorded == expected and models_recorded == models_expected and not drift
    conn.commit()
    return CounterCheck(expected, recorded, models_expected, models_recorded, missing, excess,
                        lost_pct, exact, drift)


def _concurrency(dsn: str, system: str, cfg: Config, tag: str) -> ConcurrencyResult:
    _analyze(dsn)
    user_id = _new_user(dsn, f"{tag}-w-{system}")
    sessions = [f"{tag}-w{i}" for i in range(cfg.writers)]
    with connect(dsn) as conn:
        for session_id in sessions:
            conn.execute("INSERT INTO public.chat_sessions (id, user_id, title, created_at,"
                         " updated_at) VALUES (%s, %s, 'bench', %s, %s)",
                         (session_id, user_id, _DAY, _DAY))
        conn.commit()
    tallies = [_Tally() for _ in sessions]
    start = threading.Barrier(cfg.writers + 1)
    with contextlib.ExitStack() as stack:
        # Connected before the start, so that the clock measures writing, not connecting.
        conns = [stack.enter_context(connect(dsn)) for _ in sessions]
        threads = [threading.Thread(target=_writer, args=(conn, _EXCHANGE[system], user_id,
                                                          session_id, i, cfg.writers,
                                                          cfg.seconds, start, tally))
                   for i, (conn, session_id, tally)
                   in enumerate(zip(conns, sessions, tallies, strict=True))]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.monotonic()
        for thread in threads:
            thread.join()
    elapsed = max(t.finished for t in tallies) - began
    total = _Tally()
    for tally in tallies:
        total.exchanges += tally.exchanges
        total.errors += tally.errors
        total.deadlocks += tally.deadlocks
        total.input_tokens += tally.input_tokens
        total.output_tokens += tally.output_tokens
        total.models.update(tally.models)
        total.error_samples.extend(tally.error_samples)
    counters = None
    if system != "floor":
        with connect(dsn) as conn:
            counters = _check_counters(conn, system, user_id, total)
    return ConcurrencyResult(system, cfg.writers, elapsed, total.exchanges, total.errors,
                             total.deadlocks, total.exchanges / elapsed if elapsed > 0 else 0.0,
                             total.error_samples[:5], counters)


def bench_concurrency(dsns: dict[str, str], cfg: Config, tag: str,
                      progress: Progress) -> list[ConcurrencyResult]:
    results = []
    for system in SYSTEMS:
        progress(f"{cfg.writers} writers for {cfg.seconds:g} s, {system} ...")
        result = _concurrency(dsns[system], system, cfg, tag)
        exact = "n/a" if result.counters is None else str(result.counters.exact).lower()
        progress(f"  {result.throughput:.0f} exchanges/s, {result.errors} errors, "
                 f"{result.deadlocks} deadlocks, counters exact: {exact}")
        results.append(result)
    return results


# --- targets ----------------------------------------------------------------------------------


def _ref_size(sizes: tuple[int, ...], wanted: int) -> int:
    return wanted if wanted in sizes else sizes[-1]


def _bulk_targets(report: Report, cfg: Config) -> list[Target]:
    n = _ref_size(cfg.bulk_sizes, 2000)
    legacy, pgchat, floor = (report.bulk_of(s, n) for s in SYSTEMS)
    assert legacy and pgchat and floor
    speedup = legacy.median_ms / pgchat.median_ms
    over_floor = pgchat.median_ms / floor.median_ms
    targets = [
        Target(f"bulk N={n}: pgchat at least 15x faster than legacy", speedup >= 15,
               f"legacy {legacy.median_ms:.1f} ms / pgchat {pgchat.median_ms:.1f} ms"
               f" = {speedup:.1f}x"),
        Target(f"bulk N={n}: pgchat at most 2.5x the floor", over_floor <= 2.5,
               f"pgchat {pgchat.median_ms:.1f} ms / floor {floor.median_ms:.1f} ms"
               f" = {over_floor:.2f}x"),
    ]
    if len(cfg.bulk_sizes) >= 2:
        lo, hi = cfg.bulk_sizes[-2], cfg.bulk_sizes[-1]
        a, b = report.bulk_of("pgchat", lo), report.bulk_of("pgchat", hi)
        assert a and b
        growth = (b.median_ms / a.median_ms) / (hi / lo)
        targets.append(Target(
            f"bulk linear up to N={hi}: per-message time at N={hi} at most 1.25x that at N={lo}",
            growth <= 1.25,
            f"{a.median_ms / lo * 1000:.1f} us/message at N={lo}, "
            f"{b.median_ms / hi * 1000:.1f} us/message at N={hi} ({growth:.2f}x)"))
    return targets


def _resync_targets(report: Report) -> list[Target]:
    r = report.resync_of("pgchat")
    assert r is not None
    return [
        Target("unchanged re-sync: 0 rows written", max(r.rows_total) == 0,
               f"{max(r.rows_total)} rows (runs: {r.rows_total})"),
        Target("unchanged re-sync: under 1 KB of WAL", r.wal_bytes_median < 1024,
               f"{r.wal_bytes_median:.0f} bytes (runs: {r.wal_bytes})"),
    ]


def _exchange_targets(report: Report, cfg: Config) -> list[Target]:
    lo, hi = cfg.exchange_sizes[0], cfg.exchange_sizes[-1]
    a, b = report.exchange_of("pgchat", lo), report.exchange_of("pgchat", hi)
    assert a and b
    ratio = b.p50_ms / a.p50_ms
    return [Target(f"exchange p50 at N={hi} within 1.5x of N={lo}", ratio <= 1.5,
                   f"{b.p50_ms:.2f} ms vs {a.p50_ms:.2f} ms = {ratio:.2f}x")]


def _concurrency_targets(report: Report, cfg: Config) -> list[Target]:
    p, legacy = report.concurrency_of("pgchat"), report.concurrency_of("legacy")
    assert p and legacy and p.counters
    c = p.counters
    return [
        Target(f"{cfg.writers} writers: 0 lost increments, counters exact",
               c.exact and c.missing == 0,
               f"missing {c.missing}, excess {c.excess}, ledger drift {c.ledger_drift}, "
               f"{p.exchanges} exchanges"),
        Target(f"{cfg.writers} writers: 0 deadlocks", p.deadlocks == 0, f"{p.deadlocks}"),
        Target(f"{cfg.writers} writers: 0 errors", p.errors == 0,
               f"{p.errors}" + (f" ({p.error_samples[0]})" if p.error_samples else "")),
        Target(f"{cfg.writers} writers: throughput at least legacy's",
               p.throughput >= legacy.throughput,
               f"pgchat {p.throughput:.0f}/s vs legacy {legacy.throughput:.0f}/s"),
    ]


def evaluate(report: Report, cfg: Config) -> list[Target]:
    return (_bulk_targets(report, cfg) + _resync_targets(report)
            + _exchange_targets(report, cfg) + _concurrency_targets(report, cfg))


# --- the machine and the server ---------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    return {
        "host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count(),
        "memory_gb": _memory_gb(), "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "psycopg": psycopg.__version__,
        "load_before": _load(),
    }


def server_info(dsn: str, origin: str) -> dict[str, Any]:
    settings = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers",
                "data_checksums")
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        values = {}
        for name in settings:
            setting = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            values[name] = str(setting[0]) if setting else "?"
    return {"origin": origin, "version": str(row[0]) if row else "?", "settings": values}


# --- running it all ---------------------------------------------------------------------------


def _measure(dsns: dict[str, str], cfg: Config, report: Report, progress: Progress) -> None:
    tag = uuid.uuid4().hex[:6]
    report.bulk = bench_bulk(dsns, cfg, tag, progress)
    report.resync = bench_resync(dsns, cfg, tag, progress)
    report.exchange = bench_exchange(dsns, cfg, tag, progress)
    report.concurrency = bench_concurrency(dsns, cfg, tag, progress)
    report.machine["load_after"] = _load()
    report.targets = evaluate(report, cfg)


def run(cfg: Config, *, dsn: str | None = None, bin_dir: Path | None = None,
        db_prefix: str = "bench_", progress: Progress | None = None) -> Report:
    """Measure everything; on a throwaway server, or on the server of `dsn` (databases
    `<db_prefix>legacy`, `..pgchat`, `..floor` are created there and dropped afterwards)."""
    say: Progress = progress or (lambda _line: None)
    machine = machine_info()
    with contextlib.ExitStack() as stack:
        if dsn is not None:
            server_dsn, origin, drop = dsn, "existing server (--dsn)", True
            names = {s: f"{db_prefix}{s}" for s in SYSTEMS}
        else:
            srv = stack.enter_context(servers.throwaway(bin_dir))
            server_dsn, drop = srv.url("postgres"), False
            origin = f"throwaway, binaries from {bin_dir}" if bin_dir else "throwaway, embedded"
            names = {s: s for s in SYSTEMS}
        info = server_info(server_dsn, origin)
        say(f"PostgreSQL {info['version']} ({origin}); creating {', '.join(names.values())}")
        dsns = stack.enter_context(_databases(server_dsn, names, drop=drop))
        report = Report(machine, info, {**asdict(cfg), "databases": names})
        _measure(dsns, cfg, report, say)
    return report


# --- output -----------------------------------------------------------------------------------


def _grid(headers: list[str], rows: list[list[str]]) -> list[str]:
    """An aligned table: first column left, the others right."""
    cells = [headers, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        return "  ".join(parts).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *[line(r) for r in rows]]


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _render_bulk(report: Report, cfg: Config) -> list[str]:
    rows = []
    for n in cfg.bulk_sizes:
        legacy, pgchat, floor = (report.bulk_of(s, n) for s in SYSTEMS)
        med = [b.median_ms if b else None for b in (legacy, pgchat, floor)]
        rows.append([f"{n:,}", *[_ms(m) for m in med], _ratio(med[1], med[2]),
                     _ratio(med[0], med[1])])
    slow = [n for n in cfg.bulk_sizes if cfg.runs_for("legacy", n) < cfg.runs]
    note = (f" (legacy at N={', '.join(map(str, slow))}: {cfg.slow_runs} runs)" if slow else "")
    return [f"Bulk sync of one conversation of N messages: median ms of {cfg.runs} runs{note}",
            *_grid(["N", "legacy", "pgchat", "floor", "pgchat/floor", "legacy/pgchat"], rows)]


def _render_resync(report: Report) -> list[str]:
    legacy, pgchat = report.resync_of("legacy"), report.resync_of("pgchat")
    assert legacy and pgchat
    rows = [
        ["rows written", str(legacy.rows_total[-1]), str(pgchat.rows_total[-1]), "n/a"],
        ["WAL bytes (median)", f"{legacy.wal_bytes_median:,.0f}",
         f"{pgchat.wal_bytes_median:,.0f}", "n/a"],
    ]
    out = [f"Unchanged re-sync of {pgchat.messages} messages (3 conversations, nothing new), "
           f"{len(pgchat.rows_total)} runs",
           *_grid(["", "legacy", "pgchat", "floor"], rows)]
    for r in (legacy, pgchat):
        detail = ", ".join(f"{t} {c}" for t, c in r.rows_written.items()) or "nothing"
        out.append(f"  {r.system} rows by table: {detail}")
    return out


def _render_exchange(report: Report, cfg: Config) -> list[str]:
    rows = []
    for n in cfg.exchange_sizes:
        res = [report.exchange_of(s, n) for s in SYSTEMS]
        p50 = [r.p50_ms if r else None for r in res]
        p95 = [r.p95_ms if r else None for r in res]
        rows.append([f"{n:,}", *[f"{_ms(a)} / {_ms(b)}" for a, b in zip(p50, p95, strict=True)],
                     _ratio(p50[1], p50[2]), _ratio(p50[0], p50[1])])
    return [f"One exchange (user + assistant) into a session of N messages: "
            f"p50 / p95 ms of {cfg.exchanges}",
            *_grid(["N", "legacy", "pgchat", "floor", "pgchat/floor p50",
                    "legacy/pgchat p50"], rows)]


def _render_concurrency(report: Report, cfg: Config) -> list[str]:
    res = [report.concurrency_of(s) for s in SYSTEMS]

    def cells(value: Callable[[ConcurrencyResult], str]) -> list[str]:
        return [value(r) if r else "n/a" for r in res]

    def counter(value: Callable[[CounterCheck], str]) -> Callable[[ConcurrencyResult], str]:
        return lambda r: value(r.counters) if r.counters else "n/a"

    thr = [r.throughput if r else None for r in res]
    rows = [
        ["exchanges/s", *cells(lambda r: f"{r.throughput:,.0f}"), _ratio(thr[1], thr[2]),
         _ratio(thr[0], thr[1])],
        ["exchanges", *cells(lambda r: f"{r.exchanges:,}"), "", ""],
        ["errors", *cells(lambda r: str(r.errors)), "", ""],
        ["deadlocks", *cells(lambda r: str(r.deadlocks)), "", ""],
        ["counters exact", *cells(counter(lambda c: "yes" if c.exact else "NO")), "", ""],
        ["lost increments", *cells(counter(lambda c: f"{c.missing:,}")), "", ""],
        ["models_used lost", *cells(counter(lambda c: f"{c.models_used_lost_pct:.1f}%")), "",
         ""],
    ]
    out = [f"{cfg.writers} concurrent writers for {cfg.seconds:g} s "
           "(same user, same day, a session each; no retries)",
           *_grid(["", "legacy", "pgchat", "floor", "pgchat/floor", "legacy/pgchat"], rows)]
    for r in res:
        if r and r.error_samples:
            out.append(f"  {r.system} errors, e.g.: {r.error_samples[0]}")
    return out


def render(report: Report) -> str:
    cfg = Config(**{k: v for k, v in report.config.items() if k in Config.__dataclass_fields__})
    m, s = report.machine, report.server
    header = [
        f"pgchat bench{' --quick' if cfg.quick else ''}: "
        f"PostgreSQL {s['version']} ({s['origin']})",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}, psycopg {m['psycopg']}",
        "server settings: " + ", ".join(f"{k}={v}" for k, v in s["settings"].items()),
        f"load average (1/5/15 min) before {m['load_before']}, after {m.get('load_after')}",
    ]
    sections = [header, _render_bulk(report, cfg), _render_resync(report),
                _render_exchange(report, cfg), _render_concurrency(report, cfg)]
    width = max(len(t.name) for t in report.targets) if report.targets else 0
    targets = ["Targets (pgchat)" + (" [quick mode: indicative only]" if cfg.quick else "")]
    targets += [f"  {'PASS' if t.passed else 'MISS'}  {t.name.ljust(width)}  {t.detail}"
                for t in report.targets]
    sections.append(targets)
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


# --- plot (optional: pip install 'pgchat[plot]') ----------------------------------------------


def pyplot() -> Any:
    """matplotlib.pyplot with a file backend; UsageError if matplotlib is not installed."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'pgchat[plot]'") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(report: Report, path: Path) -> None:
    """The scaling curves: bulk sync time and exchange p50 against N, one line per system."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for system in SYSTEMS:
        bulk = sorted((b.n, b.median_ms) for b in report.bulk if b.system == system)
        exch = sorted((e.n, e.p50_ms) for e in report.exchange if e.system == system)
        left.plot(*zip(*bulk, strict=True), marker="o", label=system)
        right.plot(*zip(*exch, strict=True), marker="o", label=system)
    left.set(xscale="log", yscale="log", xlabel="messages in the conversation (N)",
             ylabel="median ms", title="Bulk sync of one conversation")
    right.set(xscale="log", yscale="log", xlabel="messages already in the session (N)",
              ylabel="p50 ms", title="One exchange (user + assistant)")
    ticker = importlib.import_module("matplotlib.ticker")
    for ax, sizes in ((left, [b.n for b in report.bulk]), (right, [e.n for e in report.exchange])):
        ax.set_xticks(sorted(set(sizes)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(  # 2 and 5 of each decade
            lambda v, _pos: f"{v:g}" if f"{v:e}"[0] in "25" else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"pgchat bench, PostgreSQL {report.server['version']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- sync scaling curve (`pgchat bench --sync-curve`) -----------------------------------------

SYNC_CURVE_SIZES = (1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000)
SYNC_CURVE_QUICK = (250, 500, 1_000)
BEHIND_SIZE = 20_000  # the sync a same-user exchange is measured behind (--quick: the largest)


@dataclass(frozen=True)
class SyncPoint:
    """One sync call of `conversations` conversations of one message each. At one size, the
    same user writes live exchanges into another conversation, one after another, from the
    moment the sync's statement is running until it has committed (`exchanges_behind` of them,
    each timed from its call to its commit: the median and the longest), and one alone before."""

    conversations: int
    seconds: float
    messages_inserted: int
    exchange_alone_ms: float | None = None
    exchange_behind_ms: float | None = None  # the longest exchange while the sync ran
    exchange_behind_p50_ms: float | None = None
    exchanges_behind: int | None = None


def _curve_payload(tag: str, n: int) -> Conversations:
    """N conversations of one short message (no tokens), compact enough that 100,000 stay
    within the 16 MB of jsonb one upload may hold (about 157 of its 168 bytes a conversation;
    the sync refuses conversations past it)."""
    start = _DAY - timedelta(days=1)
    return [{"id": f"{tag}-{k}", "messages": [
        {"id": f"{tag}-{k}m", "role": "user", "content": f"q{k}",
         "timestamp": (start + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ")}]}
        for k in range(n)]


def _timed_exchange(db: str, user_id: uuid.UUID, session_id: str, tag: str, k: int) -> float:
    """One write_chat_exchange of the user into its session, to the commit: milliseconds."""
    user, assistant = _exchange(tag, k, _DAY)
    with connect(db) as conn:
        began = time.perf_counter()
        _exchange_pgchat(conn, user_id, session_id, user, assistant)
        conn.commit()
        return (time.perf_counter() - began) * 1000


def _exchanges_during(db: str, marker: str, done: threading.Event,
                      exchange: Callable[[int], float]) -> list[float]:
    """`exchange(k)` for k = 1, 2, ... one after another, from the moment a statement
    containing `marker` runs on the server until `done` is set: their milliseconds."""
    with connect(db) as watcher:
        watcher.autocommit = True
        for _ in range(2000):
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",)).fetchone()
            if row and row[0]:
                break
            time.sleep(0.005)
    times = [exchange(1)]  # at least one, even if a tiny sync ended before it was seen
    while not done.is_set():
        times.append(exchange(len(times) + 1))
    return times


def _sync_point(db: str, n: int, behind: bool) -> SyncPoint:
    tag = uuid.uuid4().hex[:6]
    user_id = _new_user(db, tag)
    payload = _curve_payload(tag, n)
    alone: float | None = None
    during: concurrent.futures.Future[list[float]] | None = None
    done = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        if behind:  # the user's open conversation, and its exchange alone, first
            with connect(db) as conn:
                first = {"id": f"{tag}-live-m", "role": "user", "content": "hello",
                         "timestamp": _DAY.isoformat(), "input_tokens": 1}
                scenario.pgchat_upload(conn, user_id, [{"id": f"{tag}-live", "title": "live",
                                                        "messages": [first]}])
                conn.commit()
            alone = _timed_exchange(db, user_id, f"{tag}-live", tag, 0)
            during = pool.submit(_exchanges_during, db, "sync_user_conversations", done,
                                 lambda k: _timed_exchange(db, user_id, f"{tag}-live", tag, k))
        try:
            with connect(db) as conn:
                began = time.perf_counter()
                result = scenario.pgchat_upload(conn, user_id, payload)
                conn.commit()
                seconds = time.perf_counter() - began
        finally:
            done.set()
        times = during.result(timeout=3600) if during is not None else []
    finally:
        pool.shutdown(wait=True)
    inserted = int(result["messages_inserted"])
    if inserted != n:  # a curve point that silently wrote less would flatter the curve
        raise RuntimeError(f"the sync of {n:,} conversations wrote {inserted:,} messages:"
                           f" {result.get('errors', [])[:1]}")
    if not behind:
        return SyncPoint(n, seconds, inserted)
    return SyncPoint(n, seconds, inserted, alone, max(times, default=None),
                     _median(times) if times else None, len(times))


def sync_curve(sizes: tuple[int, ...] = SYNC_CURVE_SIZES, *, dsn: str | None = None,
               bin_dir: Path | None = None, db_prefix: str = "bench_",
               progress: Progress | None = None,
               behind_size: int | None = BEHIND_SIZE) -> list[SyncPoint]:
    """pgchat only: one sync_user_conversations call per size, each of N new conversations of
    one message for a fresh user, timed from the call to the commit (the client's JSON work
    included). Linear means the seconds per 1,000 conversations stay flat as N grows. At
    `behind_size` (default 20,000; None: the largest size) the same user's live exchange is
    also written while the sync runs: how long a user waits behind their own big sync."""
    say: Progress = progress or (lambda _line: None)
    behind_at = behind_size if behind_size in sizes else max(sizes)
    points: list[SyncPoint] = []
    with contextlib.ExitStack() as stack:
        if dsn is not None:
            server_dsn, drop = dsn, True
        else:
            srv = stack.enter_context(servers.throwaway(bin_dir))
            server_dsn, drop = srv.url("postgres"), False
        name = f"{db_prefix}sync_curve"
        _create_database(server_dsn, name)
        if drop:
            stack.callback(_drop_database, server_dsn, name)
        db = _dsn_for(server_dsn, name)
        _install_pgchat(db)
        _seed("pgchat", db)
        for n in sizes:
            point = _sync_point(db, n, behind=n == behind_at)
            points.append(point)
            say(f"sync of {n:,} conversations: {point.seconds:.2f} s")
            _analyze(db)
    return points


def render_sync_curve(points: list[SyncPoint]) -> str:
    rows = [[f"{p.conversations:,}", f"{p.seconds:.2f}",
             f"{p.seconds * 1000 / p.conversations:.3f}", f"{p.messages_inserted:,}"]
            for p in points]
    lines = ["Sync scaling (pgchat): one call of N conversations of one message each",
             *_grid(["conversations", "seconds", "s per 1,000", "messages inserted"], rows)]
    for p in points:
        if p.exchanges_behind is not None and p.exchange_alone_ms is not None:
            lines.append(
                f"The same user's exchanges while the {p.conversations:,}-conversation sync"
                f" runs ({p.seconds * 1000:,.0f} ms): {p.exchanges_behind:,} one after another,"
                f" median {_ms(p.exchange_behind_p50_ms)} ms, longest"
                f" {_ms(p.exchange_behind_ms)} ms (one alone before it:"
                f" {_ms(p.exchange_alone_ms)} ms)")
    return "\n".join(lines) + "\n"


def sync_curve_json(points: list[SyncPoint]) -> list[dict[str, Any]]:
    return [asdict(p) for p in points]
