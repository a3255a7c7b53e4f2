"""`pgchat bench --adoption`: every code path at a tiny size (the figures mean nothing)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from pgchat.cli import main


def test_bench_adoption_runs_and_reports_a_clean_adoption(db_dsn: str) -> None:
    server_dsn = make_conninfo(db_dsn, dbname="postgres")  # the bench creates its database
    result = CliRunner().invoke(main, ["bench", "--adoption", "--messages", "1000",
                                       "--dsn", server_dsn, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["messages"] == 1000 and report["deadlocks"] == 0
    assert report["reader_errors"] == [] and report["drift_after"] == 0
    assert [p["name"] for p in report["phases"]] == ["migrate", "usage rebuild --yes"]
    assert all(p["write_errors"] == [] for p in report["phases"])
    assert report["rows_after"]["chat_messages"] == 1000 + report["written"]
    assert report["ledger_bytes"] > 0 and report["index_bytes"] > 0


def test_messages_without_adoption_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["bench", "--messages", "1000"])
    assert result.exit_code == 2
    assert "--messages is the size of --adoption" in result.output
