"""Appliers queueing on the module's lock: polling ``pg_try_advisory_xact_lock`` (issue 20) against waiting in
``pg_advisory_xact_lock`` (before it), side by side.

    python -m bench.lockwait [--reps 5] [--appliers 4] [--files 20]

Each repetition: a fresh database; ``--appliers`` threads, each with its own connection, apply the same
``--files`` transactional files (``CREATE TABLE tN (id int); SELECT pg_sleep(0.01)``) at once; the wall time until
all are done. The two ways of waiting take turns in every repetition (the machine is shared: its load moves), and
the result is the ratio of their medians. "Before" is the blocking wait that ``HistoryStore.begin_locked`` had,
patched in for its turn.

Writes bench/lockwait-results.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from llmemory_db.migrate.connection import rollback
from llmemory_db.migrate.history import HistoryStore
from llmemory_db.migrate.settings import duration as ms
from tests import db as dbs
from tools.pgserver import Server

ROOT = Path(__file__).resolve().parent.parent


def blocking_begin_locked(self: HistoryStore) -> None:
    """HistoryStore.begin_locked before issue 20: BEGIN, then wait inside pg_advisory_xact_lock."""
    conn = self.conn
    try:
        conn.execute(sql.SQL("BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = 0; "
                             "SELECT pg_advisory_xact_lock({}); SET LOCAL statement_timeout = DEFAULT").format(
            sql.Literal(ms(self.settings.lock_wait_timeout)), self.lock_key()))
    except BaseException:
        rollback(conn)
        raise


def run_once(server: Server, appliers: int, files: int, folder: Path) -> float:
    database = dbs.create(server, prefix="bench")
    try:
        with migrate.connect(database.dsn) as conn:  # the history table exists: the appliers only queue
            migrate.apply(conn, Settings(Path(tempfile.mkdtemp()), ))
        barrier = threading.Barrier(appliers + 1)
        errors = []

        def applier():
            try:
                with migrate.connect(database.dsn) as conn:
                    barrier.wait()
                    migrate.apply(conn, Settings(folder))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=applier) for _ in range(appliers)]
        [t.start() for t in threads]
        barrier.wait()
        started = time.perf_counter()
        [t.join() for t in threads]
        took = time.perf_counter() - started
        if errors:
            raise errors[0]
        with psycopg.connect(database.dsn) as conn:
            assert conn.execute("SELECT count(DISTINCT filename), count(*) FROM schema_migrations").fetchone() == \
                (files, files)
        return took
    finally:
        database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--appliers", type=int, default=4)
    parser.add_argument("--files", type=int, default=20)
    args = parser.parse_args()
    server = Server((ROOT / ".state" / "pg-test").resolve()).start()
    folder = Path(tempfile.mkdtemp())
    for i in range(1, args.files + 1):
        (folder / f"{i:03d}_t{i}.sql").write_text(f"CREATE TABLE t{i} (id int);\nSELECT pg_sleep(0.01);\n")
    polling_begin_locked = HistoryStore.begin_locked
    times = {"polling": [], "blocking": []}
    for rep in range(args.reps):
        for name in (("polling", "blocking") if rep % 2 == 0 else ("blocking", "polling")):
            HistoryStore.begin_locked = blocking_begin_locked if name == "blocking" else polling_begin_locked
            times[name].append(run_once(server, args.appliers, args.files, folder))
            print(f"rep {rep + 1} {name}: {times[name][-1]:.2f}s", flush=True)
    HistoryStore.begin_locked = polling_begin_locked
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {"appliers": args.appliers, "files": args.files, "reps": args.reps, "seconds": times,
              "median_s": medians, "ratio_polling_to_blocking": medians["polling"] / medians["blocking"]}
    (ROOT / "bench" / "lockwait-results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))


if __name__ == "__main__":
    main()
