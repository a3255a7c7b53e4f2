"""`pgchat bench --sync-curve`: runs, prints conversations vs seconds, cleans up.

Timings are never asserted (a shared machine); the curve itself is in the README.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
from click.testing import CliRunner

from pgchat.cli import main
from pgchat_dev import bench
from tests.conftest import PgServer


def test_the_sync_curve_measures_each_size_on_an_existing_server(pg_server: PgServer) -> None:
    prefix = f"bench_c{os.getpid()}_"
    points = bench.sync_curve((20, 40), dsn=pg_server.url(pg_server.maintenance_db),
                              db_prefix=prefix)
    assert [(p.conversations, p.messages_inserted) for p in points] == [(20, 20), (40, 40)]
    assert all(p.seconds > 0 for p in points)
    # The same user's exchange, behind the largest sync (and alone before it).
    assert points[0].exchange_behind_ms is None and points[0].exchanges_behind is None
    last = points[-1]
    assert last.exchanges_behind is not None and last.exchanges_behind >= 1
    assert last.exchange_alone_ms is not None and last.exchange_alone_ms > 0
    assert last.exchange_behind_ms is not None and last.exchange_behind_p50_ms is not None
    assert 0 < last.exchange_behind_p50_ms <= last.exchange_behind_ms
    text = bench.render_sync_curve(points)
    assert text.splitlines()[1].split() == ["conversations", "seconds", "s", "per", "1,000",
                                            "messages", "inserted"]
    assert text.splitlines()[3].split()[0] == "20"
    assert "The same user's exchanges while the 40-conversation sync runs" in text
    with psycopg.connect(pg_server.url(pg_server.maintenance_db)) as conn:
        assert conn.execute("select datname from pg_database where datname like %s",
                            (prefix + "%",)).fetchall() == []


def test_the_cli_option_prints_the_curve_as_json_and_writes_it_out(
        pg_server: PgServer, tmp_path: Path) -> None:
    out = tmp_path / "curve.json"
    result = CliRunner().invoke(main, ["bench", "--sync-curve", "--quick", "--json",
                                       "--out", str(out),
                                       "--dsn", pg_server.url(pg_server.maintenance_db)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["conversations"] for p in data] == list(bench.SYNC_CURVE_QUICK)
    assert [p["messages_inserted"] for p in data] == list(bench.SYNC_CURVE_QUICK)
    assert json.loads(out.read_text()) == data
