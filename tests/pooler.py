"""Debian's pgbouncer in transaction mode in front of the session's test server.

What Supabase's transaction pooler (Supavisor, port 6543) does to a client, reproduced: every
transaction may run on another server connection, and the pool (`default_pool_size`) is
smaller than the clients, so session state (prepared statements, advisory locks, SET) does
not follow the client. pgbouncer refuses to run as root: it runs as the user that owns the
server's socket (the unprivileged user the throwaway server runs as), listening on a loopback
TCP port, with its files in a temporary folder; it is stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests import supabase

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOL_SIZE = 3  # server connections per database and user: fewer than the clients of the tests


@dataclass(frozen=True)
class Pooler:
    host: str
    port: int
    pool_size: int
    log: Path

    def url(self, dbname: str, user: str = "postgres") -> str:
        return (f"postgresql://{quote(user, safe='')}@{self.host}:{self.port}/"
                f"{quote(dbname, safe='')}")


def available() -> bool:
    return Path(PGBOUNCER).is_file() and os.access(PGBOUNCER, os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as(server_host: str, server_port: int) -> str | None:
    """The user pgbouncer runs as when we are root: the owner of the server's socket."""
    if os.geteuid() != 0:
        return None
    sock = Path(server_host) / f".s.PGSQL.{server_port}"
    uid = sock.stat().st_uid if sock.exists() else pwd.getpwnam("nobody").pw_uid
    if uid == 0:
        raise RuntimeError(f"the test server's socket {sock} belongs to root")
    return pwd.getpwuid(uid).pw_name


@contextlib.contextmanager
def pgbouncer(server_host: str, server_port: int, pool_size: int = POOL_SIZE) -> Iterator[Pooler]:
    """Start pgbouncer (`pool_mode = transaction`) in front of the server; stop it on exit."""
    user = _run_as(server_host, server_port)
    base = Path(tempfile.mkdtemp(prefix="pgchat-pgbouncer-"))
    port = _free_port()
    users = base / "userlist.txt"
    users.write_text("".join(f'"{name}" ""\n' for name in ("postgres", supabase.MIGRATOR)))
    ini = base / "pgbouncer.ini"
    log = base / "pgbouncer.log"
    ini.write_text(f"""\
[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
server_round_robin = 0
ignore_startup_parameters = extra_float_digits
logfile = {log}
pidfile = {base / "pgbouncer.pid"}
""")
    if user:
        for path in (base, users, ini):
            shutil.chown(path, user)
    command = [PGBOUNCER, "-u", user, str(ini)] if user else [PGBOUNCER, str(ini)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                logged = log.read_text() if log.exists() else ""
                raise RuntimeError(f"pgbouncer exited with {proc.returncode}: {err}{logged}")
            try:
                with psycopg.connect(Pooler("127.0.0.1", port, pool_size, log).url("postgres"),
                                     connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Pooler("127.0.0.1", port, pool_size, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(base, ignore_errors=True)
