"""`pgchat bench --live`: every code path once (tiny sizes), asserting structure and invariants.

Timings are never asserted. The plan counts are: they are the server's own count of plannings,
and on a warm connection the live path must plan nothing.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from click.testing import CliRunner

from pgchat.cli import main
from pgchat_dev import bench_live
from tests.conftest import PgServer


@pytest.fixture(scope="module")
def report(pg_server: PgServer) -> bench_live.LiveReport:
    cfg = bench_live.LiveConfig(sizes=(20, 60), calls=5, warmup=3, writers=3, seconds=0.5)
    prefix = f"bench_live_t{os.getpid()}_"
    # The test server runs on this machine: its backends' CPU time can be read.
    result = bench_live.run(cfg, dsn=pg_server.url(pg_server.maintenance_db), db_prefix=prefix,
                            local=True)
    with psycopg.connect(pg_server.url(pg_server.maintenance_db)) as conn:
        left = conn.execute("select datname from pg_database where datname like %s",
                            (prefix + "%",)).fetchall()
    assert left == [], "the bench databases must be dropped afterwards"
    return result


def test_every_variant_is_measured_at_every_size(report: bench_live.LiveReport) -> None:
    assert {(e.system, e.n) for e in report.exchange} == {
        (v, n) for v in bench_live.VARIANTS for n in (20, 60)}
    assert all(len(e.samples_ms) == 5 and min(e.samples_ms) > 0 for e in report.exchange)


def test_the_exchange_and_the_floor_are_measured_again_without_legacy(
        report: bench_live.LiveReport) -> None:
    assert {(e.system, e.n) for e in report.quiet} == {
        (v, n) for v in ("pgchat", "floor") for n in (20, 60)}
    assert all(len(e.samples_ms) == 5 and min(e.samples_ms) > 0 for e in report.quiet)
    text = bench_live.render(report)
    assert "without legacy's calls in the loop" in text


def test_each_backend_s_cpu_per_call_is_read_at_every_size(
        report: bench_live.LiveReport) -> None:
    assert set(report.cpu_us) == {f"{v}@{n}" for v in bench_live.VARIANTS for n in (20, 60)}
    assert all(us > 0 for us in report.cpu_us.values())
    assert "Server CPU per call" in bench_live.render(report)


def test_a_server_elsewhere_gets_no_cpu_figures(pg_server: PgServer) -> None:
    cfg = bench_live.LiveConfig(sizes=(5,), calls=2, warmup=1, writers=1, seconds=0.5)
    result = bench_live.run(cfg, dsn=pg_server.url(pg_server.maintenance_db),
                            db_prefix=f"bench_live_r{os.getpid()}_")
    assert result.cpu_us == {} and "Server CPU per call" not in bench_live.render(result)


def test_the_writers_of_different_users_leave_no_drift(report: bench_live.LiveReport) -> None:
    pgchat = report.writers_of("pgchat")
    assert (pgchat.errors, pgchat.deadlocks) == (0, 0), pgchat.error_samples
    assert pgchat.exchanges > 0 and report.writers_of("legacy").exchanges > 0
    assert (pgchat.usage_drift, pgchat.session_drift) == (0, 0)


def test_a_warm_connection_plans_nothing_on_the_live_path(report: bench_live.LiveReport) -> None:
    assert report.plans == {"pgchat": {}, "pgchat_insert": {}}


def test_render_names_the_ratios(report: bench_live.LiveReport) -> None:
    text = bench_live.render(report)
    for part in ("exchange/legacy", "exchange/floor", "insert/legacy",
                 "writers of 3 different users", "Plannings per call",
                 "usage verify 0 differences, session statistics drift 0"):
        assert part in text


def test_the_cli_offers_the_live_bench() -> None:
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0 and "--live" in result.output
