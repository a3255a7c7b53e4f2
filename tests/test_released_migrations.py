"""The migrations of a released version are never edited again (CHANGELOG.md).

A database records the checksum of each migration it applied; `pgchat status` reports a file
that changed since. This test makes the same promise before anyone applies anything: each
migration released in 0.1.0 still has the checksum it was released with (its apply and
rollback files). A change goes into a new migration instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pgchat import migrate

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

RELEASED_0_1_0 = {
    "0001_supabase_standin":
        "9b70a6578a78b257e33d27a0ca690c8ec5bddd47dc8871bde159c47b3415c303",
    "0002_baseline":
        "f9103417d2ec9360516eb50b56aec65eaa9d0d8e70a694b3e4751c76d93d7923",
    "0002a_session_latest_index":
        "f5fbe1ea5f9f408de247b6975d498b597e5dd7101233cb63407807798f485b6c",
    "0002b_usage_active_seconds":
        "76f01043f4af77c79eaff3c3317df95bef2684dce4d985f436ba014e2b871cf6",
    "0003_usage_ledger":
        "65c685037e0ad396573011161f199c021adaef8fba1866822b6b65da29e5efea",
    "0003a_adopt_existing_rows":
        "bb2f02eda9f5f60871daf15ba56e3a2a0a5acf6d01f9b36be7ca8792f4104eb0",
    "0004_sync_and_exchange":
        "f1af345671739fe5d4395aad573c2303d123f8c1826f80b7ed186205c912abed",
    "0005_integrity":
        "e8929a4519b219bf2589e46d4b3927f1c342827a560a73f319d26c4e1b2d1351",
    "0006_integrity_validate":
        "7e1a61ad90ac1f2dd6bb8ddfa393a5aa719166d4d26b129e18c26b0df042f87a",
}


@pytest.mark.parametrize("migration_id", sorted(RELEASED_0_1_0))
def test_a_released_migration_is_never_edited(migration_id: str) -> None:
    assert migrate.checksum(migration_id, MIGRATIONS) == RELEASED_0_1_0[migration_id], (
        f"{migration_id} was released in 0.1.0 and is immutable: revert the edit and write a "
        "new migration instead")
