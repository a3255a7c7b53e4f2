"""Where the SQL that ships with pgchat lives, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(installed: str, checkout: str) -> Path:
    # A wheel carries the folders inside the package (hatch force-include);
    # an editable install or a checkout has them at the top level.
    for candidate in (_PACKAGE / installed, _PACKAGE.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pgchat is installed without its {checkout}/ folder")


def migrations_dir() -> Path:
    """The folder of versioned migrations (NNNN_name.sql plus NNNN_name.rollback.sql)."""
    return _data_dir("_migrations", "migrations")


def sql_dir() -> Path:
    """The folder of non-migration SQL: the current schema (schema.sql, in the wheel too) and,
    in a checkout only, the legacy fixture (legacy/)."""
    return _data_dir("_sql", "sql")
