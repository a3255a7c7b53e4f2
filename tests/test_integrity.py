"""The tables enforce what the functions check (migrations 0005/0006), on every path.

Direct writes as `authenticated` (PostgREST gives every user its own rows under RLS) and as
`service_role`; counters that reach their bound; adoption of a legacy database whose old rows
violate a new constraint.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import psycopg
import pytest
from psycopg import sql

import pgchat.chat as chat
from pgchat import migrate
from pgchat.errors import LimitReached, ValidationError, from_database
from tests.helpers import make_user, message, session_drift, usage_days, usage_drift, usage_state
from tests.test_sync_hostile import noise

DAY = "2025-07-21"


@contextmanager
def acting_as(conn: psycopg.Connection, role: str,
              user_id: uuid.UUID | None = None) -> Iterator[psycopg.Connection]:
    """One transaction as `role` with the JWT claims PostgREST would set; rolled back after."""
    conn.rollback()
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    claims = {"role": role} | ({"sub": str(user_id)} if user_id else {})
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
    try:
        yield conn
    finally:
        conn.rollback()


@pytest.fixture
def alice(db: psycopg.Connection) -> uuid.UUID:
    """A user with a conversation "c" of one exchange (5 + 7 tokens)."""
    user = make_user(db)
    chat.write_chat_exchange(db, user, "c", message("u1", input_tokens=5),
                             message("a1", "assistant", output_tokens=7, user_message_id="u1"))
    db.commit()
    return user


def session_stats(conn: psycopg.Connection) -> tuple[object, ...]:
    row = conn.execute("select message_count, total_tokens, last_message_preview"
                       " from public.chat_sessions where id = 'c'").fetchone()
    assert row is not None
    return tuple(row)


# --- token and time columns: non-negative, bounded, on every path ------------------------------

BAD_MESSAGE_COLUMNS = [
    ("input_tokens", "-500", "chat_messages_counts_range"),
    ("input_tokens", "2000000000", "chat_messages_counts_range"),
    ("output_tokens", "-1", "chat_messages_counts_range"),
    ("total_tokens", "10000001", "chat_messages_counts_range"),
    ("elapsed_time", "-3", "chat_messages_counts_range"),
    ("message_timestamp", "'1000-01-01Z'", "chat_messages_timestamp_window"),
    ("message_timestamp", "'9999-12-31Z'", "chat_messages_timestamp_window"),
]


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
@pytest.mark.parametrize(("column", "value", "constraint"), BAD_MESSAGE_COLUMNS)
def test_a_direct_insert_of_a_bad_message_is_refused_by_its_named_constraint(
        db: psycopg.Connection, alice: uuid.UUID, role: str, column: str, value: str,
        constraint: str) -> None:
    before = (session_stats(db), usage_state(db, alice))
    with acting_as(db, role, alice), pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute(f"insert into public.chat_messages (id, session_id, role, content, {column})"
                   f" values ('bad', 'c', 'user', 'x', {value})")
    assert caught.value.diag.constraint_name == constraint
    mapped = from_database(caught.value)
    assert isinstance(mapped, ValidationError)
    assert str(mapped).startswith((
        "input_tokens, output_tokens, total_tokens and elapsed_time must be from 0 to 10000000",
        "timestamp is outside the accepted window"))
    assert (session_stats(db), usage_state(db, alice)) == before


def test_a_direct_update_cannot_make_a_message_negative(db: psycopg.Connection,
                                                        alice: uuid.UUID) -> None:
    with acting_as(db, "authenticated", alice), pytest.raises(psycopg.errors.CheckViolation):
        db.execute("update public.chat_messages set total_tokens = -100000 where id = 'u1'")
    assert session_stats(db)[1] == 12 and session_drift(db) == []


def test_the_function_bound_and_the_table_bound_agree(db: psycopg.Connection,
                                                      alice: uuid.UUID) -> None:
    # 10,000,000 is accepted by both; 10,000,001 refused by both, with the same bound.
    chat.write_chat_exchange(db, alice, "c", message("u2", input_tokens=10_000_000))
    db.execute("insert into public.chat_messages (id, session_id, role, content, input_tokens)"
               " values ('u3', 'c', 'user', 'x', 10000000)")
    db.commit()
    with pytest.raises(ValidationError, match="input_tokens must be an integer from 0 to 10000000"):
        chat.write_chat_exchange(db, alice, "c", message("u4", input_tokens=10_000_001))
    db.rollback()
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute("insert into public.chat_messages (id, session_id, role, content, input_tokens)"
                   " values ('u5', 'c', 'user', 'x', 10000001)")
    assert str(from_database(caught.value)).startswith(
        "input_tokens, output_tokens, total_tokens and elapsed_time must be from 0 to 10000000")


# --- the statistics columns of chat_sessions are pgchat's --------------------------------------

STATISTICS = {
    "message_count": "999999", "total_tokens": "-5", "last_model": "'gpt-9'",
    "last_message_preview": "'forged'", "last_message_timestamp": "now()",
}


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
@pytest.mark.parametrize("column", STATISTICS)
def test_the_session_statistics_written_directly_are_neutralised(
        db: psycopg.Connection, alice: uuid.UUID, role: str, column: str) -> None:
    """The write goes through (the app's routes send statistics); pgchat's values stay."""
    before = session_stats(db)
    with acting_as(db, role, alice):
        db.execute(f"update public.chat_sessions set {column} = {STATISTICS[column]},"
                   " title = 'renamed' where id = 'c'")
        db.execute(f"insert into public.chat_sessions (id, user_id, {column})"
                   f" values ('forged', %s, {STATISTICS[column]})", (alice,))
        assert session_stats(db) == before and before[:2] == (2, 12)
        assert db.execute("select title from public.chat_sessions where id = 'c'").fetchone() \
            == ("renamed",)
        assert db.execute("select message_count, total_tokens, last_model, last_message_preview,"
                          " last_message_timestamp from public.chat_sessions where id = 'forged'"
                          ).fetchone() == (0, 0, None, None, None)
    assert session_drift(db) == []


@pytest.mark.parametrize("role", ["service_role", "postgres"])
def test_a_write_of_the_profile_totals_is_neutralised_and_the_rest_of_it_written(
        db: psycopg.Connection, alice: uuid.UUID, role: str) -> None:
    """usage_stats is pgchat's: a write that moves its totals leaves it as it was (the app's
    column beside it is written); a write of the app's own keys alone goes through."""
    before = db.execute("select usage_stats from public.profiles where id = %s",
                        (alice,)).fetchone()
    assert before is not None and before[0]["total_messages"] == 2
    with acting_as(db, role, alice):
        for forged in ("usage_stats || '{\"total_messages\": 999, \"logins\": 3}'", "null",
                       "'{\"logins\": 3}'"):
            db.execute(f"update public.profiles set full_name = 'Alice', usage_stats = {forged}"
                       " where id = %s", (alice,))
            assert db.execute("select usage_stats, full_name from public.profiles where id = %s",
                              (alice,)).fetchone() == (before[0], "Alice")
        db.execute("update public.profiles set usage_stats = usage_stats || '{\"logins\": 4}'"
                   " where id = %s", (alice,))
        assert db.execute("select usage_stats from public.profiles where id = %s",
                          (alice,)).fetchone() == ({**before[0], "logins": 4},)


def test_the_apps_own_session_writes_still_work(db: psycopg.Connection,
                                                alice: uuid.UUID) -> None:
    with acting_as(db, "authenticated", alice):
        db.execute("insert into public.chat_sessions (id, user_id, title, created_at, updated_at,"
                   " last_activity, is_active) values ('mine', %s, 'new', now(), now(), now(),"
                   " true)", (alice,))
        db.execute("update public.chat_sessions set title = 'renamed', is_active = false,"
                   " updated_at = now() where id = 'c'")
        # pgchat's trigger still maintains what the user may not write.
        db.execute("insert into public.chat_messages (id, session_id, role, content, input_tokens,"
                   " total_tokens) values ('m-direct', 'mine', 'user', 'hi', 3, 3)")
        row = db.execute("select message_count, total_tokens, last_message_preview"
                         " from public.chat_sessions where id = 'mine'").fetchone()
        assert row == (1, 3, "hi")


# --- counters that reach their bound: a clear error, never 22003 -------------------------------


def big_exchange(k: int) -> tuple[dict[str, object], dict[str, object]]:
    return (message(f"big-u{k}", input_tokens=10_000_000),
            message(f"big-a{k}", "assistant", output_tokens=10_000_000,
                    user_message_id=f"big-u{k}"))


def test_the_108th_exchange_of_10m_plus_10m_tokens_is_refused_clearly(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    for k in range(107):
        chat.write_chat_exchange(db, user, "big", *big_exchange(k))
        db.commit()
    full = db.execute("select total_tokens from public.chat_sessions where id = 'big'").fetchone()
    assert full == (2_140_000_000,)
    before = usage_state(db, user)
    with pytest.raises(LimitReached, match=r"total_tokens of conversation big would pass"
                                           r" 2147483647.*nothing was written"):
        chat.write_chat_exchange(db, user, "big", *big_exchange(107))
    db.rollback()
    assert usage_state(db, user) == before
    assert db.execute("select total_tokens from public.chat_sessions where id = 'big'"
                      ).fetchone() == (2_140_000_000,)
    assert usage_drift(db) == [] and session_drift(db) == []
    # The raw SQL error is program_limit_exceeded with the same words, not 22003.
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="would pass 2147483647"):
        db.execute("select public.write_chat_exchange(%s, 'big', %s::jsonb)",
                   (user, json.dumps(big_exchange(107)[0])))
    db.rollback()


def test_a_day_that_would_pass_the_integer_range_is_refused_clearly(
        db: psycopg.Connection) -> None:
    user = make_user(db)
    for k in range(107):  # one conversation each: only the day's counter fills up
        chat.write_chat_exchange(db, user, f"day-{k}", *big_exchange(k))
    db.commit()
    assert usage_days(db, user)[date(2025, 7, 21)]["total_tokens"] \
        == 2_140_000_000
    with pytest.raises(LimitReached, match=f"total_tokens of user {user} on {DAY} would pass"):
        chat.write_chat_exchange(db, user, "day-107", *big_exchange(107))
    db.rollback()
    assert usage_drift(db) == []
    # Another day still books.
    other = [dict(m, timestamp="2025-07-22T10:00:00Z") for m in big_exchange(108)]
    chat.write_chat_exchange(db, user, "day-108", *other)
    db.commit()
    assert usage_drift(db) == []


def test_track_user_usage_keeps_the_bound_of_one_message(db: psycopg.Connection) -> None:
    user = make_user(db)
    with acting_as(db, "service_role"), pytest.raises(psycopg.errors.CheckViolation,
                                                      match="at most 10000000"):
        db.execute("select public.track_user_usage(%s, 'k', %s, p_input_tokens => 2000000000)",
                   (user, DAY))


@pytest.mark.parametrize(("argument", "value", "reason"), [
    ("p_messages_sent", "2000000000", "of one event must be at most 10000000"),
    ("p_messages_received", "2000000000", "of one event must be at most 10000000"),
    ("p_usage_date", "'0001-01-01'", "p_usage_date 0001-01-01 is outside the accepted window"),
    ("p_usage_date", "'9999-12-31'", "p_usage_date 9999-12-31 is outside the accepted window"),
])
def test_track_user_usage_refuses_what_would_overflow_or_leave_the_window_by_name(
        db: psycopg.Connection, argument: str, value: str, reason: str) -> None:
    """Twice on one day (the second call is where a sum would pass the integer range): each
    refused with the reason, never 22003, and no counter moves."""
    user = make_user(db)
    db.commit()
    before = usage_state(db, user)
    date_arg = "" if argument == "p_usage_date" else f", p_usage_date => '{DAY}'"
    for key in ("k1", "k2"):
        with acting_as(db, "service_role"), pytest.raises(psycopg.errors.CheckViolation,
                                                          match=reason):
            db.execute(f"select public.track_user_usage(p_user_id => %s, p_event_key => '{key}'"
                       f"{date_arg}, {argument} => {value})", (user,))
    assert usage_state(db, user) == before


# --- ids of bounded length ---------------------------------------------------------------------


@pytest.mark.parametrize(("statement", "constraint", "reason"), [
    ("insert into public.chat_sessions (id, user_id) values (%(long)s, %(u)s)",
     "chat_sessions_id_length", "conversation id is longer than 255 characters"),
    ("insert into public.chat_messages (id, session_id, role, content)"
      " values (%(long)s, 'c', 'user', 'x')", "chat_messages_id_length",
     "message id and user_message_id must have at most 255 characters"),
    ("insert into public.chat_messages (id, session_id, role, content, user_message_id)"
      " values ('m', 'c', 'assistant', 'x', %(long)s)", "chat_messages_id_length",
     "message id and user_message_id must have at most 255 characters"),
])
def test_a_too_long_id_is_refused_by_name_not_by_the_btree(
        db: psycopg.Connection, alice: uuid.UUID, statement: str, constraint: str,
        reason: str) -> None:
    with acting_as(db, "authenticated", alice), \
            pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute(statement, {"u": alice, "long": noise(8000)})
    assert caught.value.diag.constraint_name == constraint
    assert str(from_database(caught.value)).startswith(reason)


def test_an_exchange_with_a_too_long_conversation_id_is_refused_clearly(
        db: psycopg.Connection, alice: uuid.UUID) -> None:
    with pytest.raises(ValidationError, match="conversation id is longer than 255 characters"):
        chat.write_chat_exchange(db, alice, noise(3000), message("long-u"))
    db.rollback()
    with pytest.raises(ValidationError, match="message id is longer than 255 characters"):
        chat.write_chat_exchange(db, alice, "c", message(noise(8000)))


# --- the time window ---------------------------------------------------------------------------


@pytest.mark.parametrize("timestamp", ["1000-06-01T00:00:00Z", "9999-12-31T00:00:00Z",
                                       "1970-01-01T00:00:00Z"])
def test_an_exchange_outside_the_time_window_is_refused_and_pins_nothing(
        db: psycopg.Connection, alice: uuid.UUID, timestamp: str) -> None:
    before = db.execute("select updated_at from public.chat_sessions where id = 'c'").fetchone()
    with pytest.raises(ValidationError, match="outside the accepted window"):
        chat.write_chat_exchange(db, alice, "c", message("late-u", timestamp=timestamp))
    db.rollback()
    assert db.execute("select updated_at from public.chat_sessions where id = 'c'"
                      ).fetchone() == before
    assert db.execute("select count(*) from public.user_usage_daily where usage_date > '3000-01-01'"
                      " or usage_date < '2000-01-01'").fetchone() == (0,)


def test_a_session_cannot_be_pinned_in_the_future_directly(db: psycopg.Connection,
                                                           alice: uuid.UUID) -> None:
    with acting_as(db, "authenticated", alice), pytest.raises(psycopg.errors.CheckViolation) as c:
        db.execute("update public.chat_sessions set updated_at = '9999-12-31' where id = 'c'")
    assert c.value.diag.constraint_name == "chat_sessions_timestamp_window"


# --- migrations: online, and adoption of rows that violate a new constraint --------------------


def test_every_new_constraint_is_validated_on_a_clean_database(db: psycopg.Connection) -> None:
    assert db.execute("select * from pgchat.unvalidated_constraints").fetchall() == []
    names = {r[0] for r in db.execute(
        "select conname from pg_constraint where conrelid in"
        " ('public.chat_messages'::regclass, 'public.chat_sessions'::regclass)"
        " and contype = 'c' and (conname like '%\\_range' or conname like '%\\_length'"
        " or conname like '%\\_window')").fetchall()}
    assert len(names) == 6


def test_the_constraints_are_added_not_valid_then_validated_separately() -> None:
    from pgchat.paths import migrations_dir

    add = (migrations_dir() / "0005_integrity.sql").read_text()
    validate = (migrations_dir() / "0006_integrity_validate.sql").read_text()
    clauses = re.findall(r"ADD CONSTRAINT (\w+).*?(?=ADD CONSTRAINT|;)", add, re.S)
    assert len(clauses) == 6
    for clause in re.findall(r"ADD CONSTRAINT .*?(?=ADD CONSTRAINT|;)", add, re.S):
        clause = clause.rstrip().removesuffix("$tmpl$)").rstrip()  # the last one closes render()
        assert clause.rstrip(",").endswith("NOT VALID"), clause
    assert "VALIDATE" not in add.split("CREATE FUNCTION")[0]
    assert "validate_integrity" in validate


def test_adopting_rows_that_violate_a_constraint_leaves_it_not_valid_and_names_them(
        legacy_db: psycopg.Connection, legacy_dsn: str) -> None:
    session = legacy_db.execute("select id from public.chat_sessions order by id limit 1"
                                ).fetchone()
    assert session is not None
    legacy_db.execute("insert into public.chat_messages (id, session_id, role, content,"
                      " input_tokens, message_timestamp) values ('neg-1', %s, 'user', 'x', -5,"
                      " '2025-01-01'), ('epoch-1', %s, 'user', 'y', 1, '1970-01-01')",
                      (session[0], session[0]))
    legacy_db.commit()
    migrate.migrate(legacy_dsn)  # succeeds: nothing half-way
    left = sorted(legacy_db.execute("select * from pgchat.unvalidated_constraints").fetchall())
    assert left == [("chat_messages_counts_range", "chat_messages"),
                    ("chat_messages_timestamp_window", "chat_messages")]
    # The rest are validated; the NOT VALID ones still check every new write.
    with pytest.raises(psycopg.errors.CheckViolation):
        legacy_db.execute("insert into public.chat_messages (id, session_id, role, content,"
                          " input_tokens) values ('neg-2', %s, 'user', 'x', -1)", (session[0],))
    legacy_db.rollback()
    report = legacy_db.execute("select * from pgchat.validate_integrity()").fetchall()
    assert [(r[0], r[2], r[3]) for r in report] == [
        ("chat_messages_counts_range", 1, ["neg-1"]),
        ("chat_messages_timestamp_window", 1, ["epoch-1"])]
    assert "correct or delete these rows" in report[0][4]
    legacy_db.rollback()
    # The remedy works: repair the rows, validate again.
    legacy_db.execute("delete from public.chat_messages where id in ('neg-1', 'epoch-1')")
    legacy_db.commit()
    assert legacy_db.execute("select * from pgchat.validate_integrity()").fetchall() == []
    legacy_db.commit()
    assert legacy_db.execute("select * from pgchat.unvalidated_constraints").fetchall() == []


def test_the_integrity_migrations_roll_back_and_apply_again(db_dsn: str,
                                                            db: psycopg.Connection) -> None:
    db.commit()
    assert migrate.rollback(db_dsn, to="0004_sync_and_exchange") == [
        "0006_integrity_validate", "0005_integrity"]
    guards = ("select count(*) from pg_trigger where tgname like '\\_000\\_guard\\_%'"
              " and not tgisinternal")
    assert db.execute(guards).fetchone() == (0,)
    db.commit()
    assert migrate.migrate(db_dsn) == ["0005_integrity", "0006_integrity_validate"]
    assert db.execute(guards).fetchone() == (6,)
    assert db.execute("select has_table_privilege('authenticated', 'public.chat_sessions',"
                      " 'UPDATE')").fetchone() == (True,)
