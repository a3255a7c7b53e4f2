"""Throwaway PostgreSQL servers for the tests, the benchmarks and the schema dumper.

A throwaway server lives in a temporary folder, runs with durability off (it is deleted
afterwards) and is removed when its context closes. It runs the embedded binaries (PostgreSQL 18,
the `pgchat[embedded]` extra) or another installation's (for example Debian's PostgreSQL 15
under /usr/lib/postgresql/15/bin), so the same tests prove both. PostgreSQL refuses to run as
root: as root, servers run as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgchat import server
from pgchat.errors import UsageError

_SERVICE_USER = "pgchat_pg"


@dataclass(frozen=True)
class Throwaway:
    """A running throwaway server: connect over its Unix socket as `postgres`."""

    socket_dir: str
    port: int
    version: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"


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
    pg = server.embedded_module().get_server(base / "data", cleanup_mode="delete")
    try:
        info = pg.get_postmaster_info()
        url = pg.get_uri(database="postgres")
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for name, value in _FAST_SETTINGS.items():
                conn.execute(f"alter system set {name} = '{value}'")
            conn.execute("select pg_reload_conf()")
            version = int(conn.info.server_version) // 10000
        yield Throwaway(str(info.socket_dir), int(info.port), version)
    finally:
        pg.cleanup()
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
