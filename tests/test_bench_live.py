"""`pgchat bench --live`: every code path once (tiny sizes), asserting structure and invariants.

Timings are never asserted. The plan counts are: they are the server's own count of plannings,
and on a warm connection the live path must plan nothing. Nor are sizes, beyond being there and
positive; the rows an exchange writes are, where every version of the migrations agrees.
"""

from __future__ import annotations

import json
import os

import psycopg
import pytest
from click.testing import CliRunner

from pgchat.cli import main
from pgchat_dev import bench_live
from tests.conftest import PgServer


@pytest.fixture(scope="module")
def report(pg_server: PgServer) -> bench_live.LiveReport:
    cfg = bench_live.LiveConfig(sizes=(20, 60), calls=5, warmup=3, writers=3, seconds=0.5,
                                storage_users=2, storage_conversations=10, storage_messages=50)
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
    cfg = bench_live.LiveConfig(sizes=(5,), calls=2, warmup=1, writers=1, seconds=0.5,
                                storage_users=1, storage_conversations=2, storage_messages=10)
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


def test_the_storage_of_the_synced_messages_is_measured(report: bench_live.LiveReport) -> None:
    st = report.storage
    assert st is not None and st.messages == 2 * 10 * 50 and st.sync_seconds > 0
    # pgchat's own relations were discovered: its schemas' tables, and what it added to public
    assert st.own and all(r.kind in ("table", "index") for r in st.own)
    assert any(r.kind == "table" and not r.name.startswith("public.") for r in st.own)
    names = {r.name for r in st.own}
    assert not names & set(bench_live.CHAT_TABLES), "the chat tables are not pgchat's own"
    assert [r.name for r in st.chat] == list(bench_live.CHAT_TABLES)
    assert all(r.growth >= 0 and r.before > 0 for r in [*st.own, *st.chat] if r.kind == "table")
    assert st.own_bytes == sum(r.growth for r in st.own) and st.own_per_message > 0
    assert st.chat_bytes > 0 and st.chat_per_message == st.chat_bytes / st.messages


def test_the_rows_one_exchange_writes_are_counted_per_table(
        report: bench_live.LiveReport) -> None:
    assert set(report.rows) == set(bench_live.VARIANTS)
    for variant, written in report.rows.items():
        assert written["public.chat_messages"] == 2, variant
        assert sum(written.values()) >= 2 and min(written.values()) > 0, variant
    assert report.rows["floor"] == {"public.chat_messages": 2}
    # pgchat's exchange maintains the session and the counters: more than the floor's 2 rows
    for variant in ("pgchat", "pgchat_insert"):
        assert report.rows[variant].get("public.chat_sessions") == 1, variant
        assert sum(report.rows[variant].values()) > 2, variant


def test_the_storage_and_rows_are_rendered_and_in_the_json(
        report: bench_live.LiveReport) -> None:
    text = bench_live.render(report)
    for part in ("Storage and rows", "pgchat's own, total", "chat tables, total (for scale)",
                 "public.chat_messages (table, indexes, TOAST)", "Rows one exchange writes",
                 "1,000 messages"):
        assert part in text
    data = json.loads(json.dumps(report.to_json(), default=str))
    assert data["storage"]["own_per_message"] > 0 and data["storage"]["chat_per_message"] > 0
    assert data["rows"]["pgchat"]["public.chat_messages"] == 2


def test_the_storage_is_100_000_messages_and_far_fewer_in_quick() -> None:
    assert bench_live.LiveConfig().storage_total == 100_000
    assert bench_live.LIVE_QUICK.storage_total <= 2_000


def test_the_cli_offers_the_live_bench() -> None:
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0 and "--live" in result.output
