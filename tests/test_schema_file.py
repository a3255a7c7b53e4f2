"""sql/schema.sql is what the migrations build: regenerate it with `make schema`.

The test server's migrated database is dumped by its own pg_dump and compared with the file:
object by object and in order on the major version the file was generated with (18), and as a
set of objects on another (15), where a view's columns print qualified and spaces differ.
"""

from __future__ import annotations

import difflib

from pgchat_dev import schema
from tests.conftest import PgServer


def test_schema_file_matches_the_migrations(db_dsn: str, pg_server: PgServer) -> None:
    text = schema.path().read_text()
    generated_on = schema.generated_by(text)
    assert generated_on is not None, "sql/schema.sql has no header: run `make schema`"
    major = int(pg_server.version.split(".")[0])
    dumped = schema.normalize(schema.dump(pg_server.bin_dir / "pg_dump", db_dsn), major)
    across = major != generated_on
    want = schema.objects(dumped, across_versions=across)
    have = schema.objects(text, across_versions=across)
    diff = "\n".join(list(difflib.unified_diff(have, want, "sql/schema.sql", "migrations",
                                               lineterm="", n=0))[:40])
    assert have == want, f"sql/schema.sql disagrees with the migrations: run `make schema`\n{diff}"
    if not across:
        assert text == dumped.replace(f"of PostgreSQL {major}", f"of PostgreSQL {generated_on}")


def test_every_function_of_pgchat_is_in_the_file() -> None:
    """A reader finds each function's current definition there."""
    text = schema.path().read_text()
    for name in ("public.sync_user_conversations(", "public.write_chat_exchange(",
                 "public.update_session_title(", "public.track_user_usage(",
                 "pgchat.usage_drift(", "pgchat.rebuild_usage("):
        assert f"CREATE FUNCTION {name}" in text, name


def test_the_comparison_sees_a_change() -> None:
    """A changed function body, or a missing object, makes the objects differ."""
    text = schema.path().read_text()
    for across in (False, True):
        objects = schema.objects(text, across_versions=across)
        changed = schema.objects(text.replace("LANGUAGE plpgsql", "LANGUAGE sql", 1),
                                 across_versions=across)
        assert objects != changed
        cut = text[: text.rindex("--\n-- Name: ")]
        assert schema.objects(cut, across_versions=across) != objects
