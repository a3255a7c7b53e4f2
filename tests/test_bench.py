"""`pgchat bench`: every code path once (quick sizes), asserting structure and invariants only.

Timings are never asserted: they depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgchat.cli import main
from pgchat.errors import UsageError
from pgchat_dev import bench
from tests.conftest import PgServer


@pytest.fixture(scope="module")
def report(pg_server: PgServer) -> bench.Report:
    cfg = dataclasses.replace(bench.QUICK, exchanges=10, warmup=2, seconds=1.0)
    prefix = f"bench_t{os.getpid()}_"
    result = bench.run(cfg, dsn=pg_server.url(pg_server.maintenance_db), db_prefix=prefix)
    with psycopg.connect(pg_server.url(pg_server.maintenance_db)) as conn:
        left = conn.execute("select datname from pg_database where datname like %s",
                            (prefix + "%",)).fetchall()
    assert left == [], "the bench databases must be dropped afterwards"
    return result


def test_every_section_has_every_system_and_size(report: bench.Report) -> None:
    cfg = bench.Config(**{k: v for k, v in report.config.items()
                          if k in bench.Config.__dataclass_fields__})
    assert {(b.system, b.n) for b in report.bulk} == {
        (s, n) for s in bench.SYSTEMS for n in cfg.bulk_sizes}
    for b in report.bulk:
        assert len(b.runs_ms) == cfg.runs_for(b.system, b.n)
        assert all(ms > 0 for ms in b.runs_ms)
    assert {(e.system, e.n) for e in report.exchange} == {
        (s, n) for s in bench.SYSTEMS for n in cfg.exchange_sizes}
    assert all(len(e.samples_ms) == cfg.exchanges for e in report.exchange)
    assert {r.system for r in report.resync} == {"legacy", "pgchat"}
    assert [c.system for c in report.concurrency] == list(bench.SYSTEMS)
    assert all(c.writers == cfg.writers and c.exchanges > 0 for c in report.concurrency)
    assert len(report.targets) == 10
    assert report.server["version"] and report.machine["cores"]


def test_an_unchanged_resync_writes_nothing_in_pgchat(report: bench.Report) -> None:
    pgchat = report.resync_of("pgchat")
    legacy = report.resync_of("legacy")
    assert pgchat is not None and legacy is not None
    assert pgchat.messages == legacy.messages == 60
    assert pgchat.rows_total == [0] * len(pgchat.rows_total)
    assert pgchat.rows_written == {}
    # The legacy upsert rewrites every message, its session and the counters, every time.
    assert legacy.rows_written["public.chat_messages"] == 60
    assert min(legacy.rows_total) > 200


def test_pgchat_counters_are_exact_after_concurrent_writers(report: bench.Report) -> None:
    pgchat = report.concurrency_of("pgchat")
    assert pgchat is not None and pgchat.counters is not None
    c = pgchat.counters
    assert (pgchat.errors, pgchat.deadlocks) == (0, 0), pgchat.error_samples
    assert c.exact and c.missing == 0 and c.excess == 0 and c.ledger_drift == 0
    assert c.recorded == c.expected
    assert c.expected["messages_sent"] == c.expected["messages_received"] == pgchat.exchanges
    assert sum(c.models_recorded.values()) == pgchat.exchanges
    floor = report.concurrency_of("floor")
    assert floor is not None and floor.counters is None  # the floor keeps no counters
    legacy = report.concurrency_of("legacy")
    assert legacy is not None and legacy.counters is not None
    # Legacy messages are atomic increments; its models_used is read-then-write (lossy).
    assert legacy.counters.recorded["messages_sent"] == legacy.exchanges


def test_the_invariant_targets_pass(report: bench.Report) -> None:
    by_name = {t.name: t for t in report.targets}
    for name in ("unchanged re-sync: 0 rows written", "8 writers: 0 deadlocks",
                 "8 writers: 0 errors", "8 writers: 0 lost increments, counters exact"):
        assert by_name[name].passed, by_name[name].detail


def test_render_and_json(report: bench.Report) -> None:
    text = bench.render(report)
    for heading in ("Bulk sync of one conversation", "Unchanged re-sync", "One exchange",
                    "concurrent writers", "Targets (pgchat) [quick mode"):
        assert heading in text
    assert text.count("PASS") + text.count("MISS") == len(report.targets)
    data: dict[str, Any] = json.loads(json.dumps(report.to_json()))
    assert set(data) == {"machine", "server", "config", "bulk", "resync", "exchange",
                         "concurrency", "targets"}
    assert {"system", "n", "runs_ms", "median_ms"} <= set(data["bulk"][0])


def test_plot_without_matplotlib_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench.importlib.import_module

    def no_matplotlib(name: str, package: str | None = None) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(bench.importlib, "import_module", no_matplotlib)
    with pytest.raises(UsageError, match=r"pip install 'pgchat\[plot\]'"):
        bench.pyplot()
    result = CliRunner().invoke(main, ["bench", "--quick", "--plot", "x.png"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "pgchat: error: --plot needs matplotlib: pip install 'pgchat[plot]'")


def test_pg_bin_and_dsn_exclude_each_other(tmp_path: Any) -> None:
    result = CliRunner().invoke(main, ["bench", "--pg-bin", str(tmp_path), "--dsn", "x"])
    assert result.exit_code == 2
    assert "give one of them" in result.stderr
