"""What an application's pgdbm start-up experiences when it starts during this engine's CREATE INDEX CONCURRENTLY.

    python -m bench.cic_waiters [--code DIR] [--rows 2000000] [--phase "building index"] [--delay 1]
                                [--pgdbm-lock-timeout-ms 5000|none]

One run: a fresh database with a table ``big`` of ``--rows`` rows and an application inserting every 20 ms; the
command line (``python -m llmemory_db.migrate apply``, run from ``--code``: this checkout, or an export of an
older commit to compare with) applies ``CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_big_t ON big (t)`` in a
no-transaction file; when the build reaches ``--phase``, plus ``--delay`` seconds, pgdbm 0.5 applies the same
folder (``AsyncMigrationManager``, ``DatabaseConfig`` defaults but ``lock_timeout_ms``: pgdbm's default is 5000).
Prints one JSON line: pgdbm's outcome, the engine's exit code, whether the lock was handed over, the history rows
and the index's validity.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from tests import db as dbs
from tools.pgserver import Server

ROOT = Path(__file__).resolve().parent.parent


async def pgdbm_apply(dsn: str, folder: Path, lock_timeout_ms):
    from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=dbs.url(dsn), min_connections=1, max_connections=2,
                                             lock_timeout_ms=lock_timeout_ms))
    await db.connect()
    try:
        return await AsyncMigrationManager(db, migrations_path=str(folder), module_name="aword_memory") \
            .apply_pending_migrations()
    finally:
        await db.disconnect()


def run(server: Server, code: Path, rows: int, phase: str, delay: float, lock_timeout_ms) -> dict:
    database = dbs.create(server, prefix="cicw")
    folder = Path(tempfile.mkdtemp())
    stop = threading.Event()
    try:
        dsn = database.dsn
        database.sql("CREATE TABLE big (id int, t text); CREATE TABLE app (id serial, v int)")
        database.sql(f"INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {rows}) g")
        (folder / "001_init.sql").write_text("SELECT 1;\n")
        command = [sys.executable, "-m", "llmemory_db.migrate", "apply", "--dir", str(folder), "--dsn", dsn]
        subprocess.run(command, check=True, capture_output=True, cwd=code)
        (folder / "002_cic.sql").write_text("-- pgdbm:no-transaction\n"
                                            "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_big_t ON big (t);\n")

        def application():
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute("INSERT INTO app (v) VALUES (1)")
                    time.sleep(0.02)

        threading.Thread(target=application, daemon=True).start()
        started = time.monotonic()
        engine = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=code)
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not conn.execute("SELECT 1 FROM pg_stat_progress_create_index WHERE phase LIKE %s",
                                   (phase + "%",)).fetchone():
                time.sleep(0.02)
        time.sleep(delay)
        out: dict = {}
        pgdbm_started = time.monotonic()
        try:
            result = asyncio.run(pgdbm_apply(dsn, folder, lock_timeout_ms))
            out["pgdbm"] = (f"ok after {time.monotonic() - pgdbm_started:.1f}s: {result.get('status')} "
                            f"{[a['filename'] for a in result.get('applied', [])]}")
        except Exception as exc:  # noqa: BLE001 - the outcome is the measurement
            message = getattr(exc, "sql_error", "") or str(exc)
            out["pgdbm"] = f"failed after {time.monotonic() - pgdbm_started:.1f}s: {message.splitlines()[0]}"
        _, err = engine.communicate()
        errors = [line for line in err.splitlines() if line.startswith("error")]
        out["engine"] = f"rc {engine.returncode} after {time.monotonic() - started:.1f}s" + \
            (f": {errors[0][:100]}" if errors else "")
        out["handoff"] = "lock-handoff" in err
        out["recorded"] = [r[0] for r in database.sql("SELECT filename FROM schema_migrations ORDER BY 1")]
        out["index"] = database.sql("SELECT indexrelid::regclass::text, indisvalid FROM pg_index "
                                    "WHERE indrelid = 'big'::regclass")
        return out
    finally:
        stop.set()
        database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose engine runs (default: this one)")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--phase", default="building index")
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--pgdbm-lock-timeout-ms", default="5000")
    args = parser.parse_args()
    timeout = None if args.pgdbm_lock_timeout_ms == "none" else int(args.pgdbm_lock_timeout_ms)
    server = Server((ROOT / ".state" / "pg-test").resolve()).start()
    print(json.dumps(run(server, Path(args.code), args.rows, args.phase, args.delay, timeout)))


if __name__ == "__main__":
    main()
