"""Remedies by SQLSTATE class, from the real errors the server raises: an integrity violation at apply names the
violating key (the server's DETAIL) and says the data must change (with the query that lists the rows, for the
statements the preflight knows); a deadlock or a serialization failure is another session's doing."""
import threading
import time

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings, StatementError, diagnosis
from tests.helpers import write


def apply_fails(db, folder, files) -> StatementError:
    write(folder, files)
    with psycopg.connect(db.dsn, autocommit=True) as conn, pytest.raises(StatementError) as info:
        migrate.apply(conn, Settings(folder, schema="app"))
    return info.value


def test_unique_violation_inside_a_do_block_names_the_key_and_the_listing_query(db, live):  # noqa: F811
    error = apply_fails(db, live, {"002_unique.sql": (
        "DO $$\nBEGIN\n    ALTER TABLE {{tables.t}}\n    ADD CONSTRAINT t_a_key UNIQUE (a);\n"
        "EXCEPTION WHEN duplicate_object THEN\n    NULL;\nEND $$;\n")})
    assert error.sqlstate == "23505" and error.detail == "Key (a)=(x) is duplicated."
    assert error.remedy == (
        "rows the table holds violate what the statement needs (Key (a)=(x) is duplicated): the statement is not "
        "what must change, the data is: remove or merge the duplicate rows (the query lists them); list them with: "
        'SELECT "src"."a", count(*) AS rows FROM "app"."t" AS src WHERE "src"."a" IS NOT NULL GROUP BY "src"."a" '
        "HAVING count(*) > 1 ORDER BY count(*) DESC; then run again")
    assert "fix the statement" not in str(error)


@pytest.mark.parametrize("statement,sqlstate,remedy,query", [
    ("ALTER TABLE {{tables.t}} ALTER COLUMN a SET NOT NULL;", "23502", "fill the NULL values",
     'SELECT src.* FROM "app"."t" AS src WHERE "src"."a" IS NULL'),
    ("ALTER TABLE {{tables.t}} ADD CONSTRAINT t_b CHECK (b > 0);", "23514", "update or delete the rows that fail",
     'SELECT src.* FROM "app"."t" AS src WHERE NOT (b > 0)'),
    ("ALTER TABLE {{tables.t}} ADD FOREIGN KEY (c) REFERENCES {{tables.parent}} (id);", "23503",
     "insert the missing referenced rows",
     'SELECT src.* FROM "app"."t" AS src WHERE "src"."c" IS NOT NULL AND NOT EXISTS (SELECT FROM "app"."parent" AS '
     'ref WHERE "ref"."id" = "src"."c")'),
    ("ALTER TABLE {{tables.t}} ALTER COLUMN d TYPE int USING d::int;", "22P02", "fix the values the new type",
     'SELECT src.* FROM "app"."t" AS src WHERE "src"."d" IS NOT NULL AND NOT pg_input_is_valid("src"."d"::text, '
     "'integer')"),
])
def test_each_kind_of_violation_at_apply_says_the_data_must_change(db, live, statement, sqlstate, remedy,  # noqa: F811
                                                                    query):
    error = apply_fails(db, live, {"002_x.sql": f"SELECT 1;\n{statement}\n"})
    assert (error.sqlstate, error.line) == (sqlstate, 2)
    assert "the statement is not what must change, the data is: " + remedy in error.remedy
    assert f"list them with: {query}; then run again" in error.remedy
    with psycopg.connect(db.dsn) as conn:
        assert conn.execute(query).fetchall()  # the query lists the rows that made it fail


def test_a_duplicate_inserted_by_the_file_names_the_key_without_a_query(db, live):  # noqa: F811
    error = apply_fails(db, live, {"002_rows.sql": "INSERT INTO {{tables.parent}} VALUES (3), (1);\n"})
    assert error.sqlstate == "23505"
    assert error.remedy == ("rows the table holds violate what the statement needs (Key (id)=(1) already exists): "
                            "the statement is not what must change, the data is: change or remove the rows the "
                            "detail names (or the rows this statement writes that conflict with them); then run "
                            "again")


def test_a_deadlock_at_apply_is_another_sessions_doing(db, live):  # noqa: F811
    write(live, {"002_locks.sql": "LOCK TABLE {{tables.parent}};\nLOCK TABLE {{tables.t}};\n"})
    other = psycopg.connect(db.dsn)
    other.execute("SET deadlock_timeout = '10s'")  # this migration is the one PostgreSQL ends
    other.execute("LOCK TABLE app.t")
    outcome = {}

    def run():
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            try:
                migrate.apply(conn, Settings(live, schema="app", lock_timeout=5))
            except StatementError as exc:
                outcome["error"] = exc

    applier = threading.Thread(target=run)
    applier.start()
    with psycopg.connect(db.dsn, autocommit=True) as watch:
        deadline = time.monotonic() + 10
        while not watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'app.t'::regclass"
                                ).fetchone()[0]:
            assert time.monotonic() < deadline, "the migration never waited for app.t"
            time.sleep(0.05)

    def close_the_cycle():
        other.execute("LOCK TABLE app.parent")  # waits for the migration, which waits for this session
        other.commit()

    closer = threading.Thread(target=close_the_cycle)
    closer.start()
    applier.join(30)
    closer.join(30)
    other.close()
    error = outcome["error"]
    assert error.sqlstate == "40P01"
    assert error.remedy.startswith("another session: it and this migration each waited for a lock the other held, "
                                   "and PostgreSQL ended this one (deadlock). The statement is not at fault: run "
                                   "again. If it repeats, look for what takes locks on these tables")
    assert "fix the statement" not in str(error)
    assert db.history() == [("001_tables.sql", db.history()[0][1])]  # nothing of 002 recorded


def test_a_serialization_failure_is_another_sessions_doing(db, live):  # noqa: F811
    with psycopg.connect(db.dsn) as reader, psycopg.connect(db.dsn, autocommit=True) as writer:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT * FROM app.t").fetchall()
        writer.execute("UPDATE app.t SET b = b + 1 WHERE id = 1")
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            reader.execute("UPDATE app.t SET b = 0 WHERE id = 1")
    fail = diagnosis.failure(info.value)
    remedy = diagnosis.remedy_for(fail, Settings(live, schema="app"), "UPDATE app.t SET b = 0 WHERE id = 1")
    assert fail.sqlstate == "40001" and remedy.startswith(
        "another session: a concurrent transaction changed what this one read or wrote (serialization failure). "
        "The statement is not at fault: run again")


def test_other_errors_keep_their_remedies(db, live):  # noqa: F811
    error = apply_fails(db, live, {"002_x.sql": "SELECT * FROM {{tables.nowhere}};\n"})
    assert error.sqlstate == "42P01" and error.remedy == "fix the statement and run again"
    error = apply_fails(db, live, {"002_x.sql": "SELECT 1/0;\n"})  # class 22, not a statement the preflight knows
    assert error.sqlstate == "22012" and error.remedy == "fix the statement and run again"
