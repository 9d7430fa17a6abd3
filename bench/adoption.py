"""The cost of a baseline's proof (issue: adopt an existing database): the files applied to a scratch schema in a
transaction, fingerprinted and rolled back, compared with the live schema.

    python -m bench.adoption [--reps 5]     # writes bench/adoption-results.json

Targets: llmemory's migrations <= 1 s; 100 files <= 5 s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent

from bench.bench import make_migrations
from llmemory_db import migrate
from llmemory_db.migrate import Settings, load
from llmemory_db.migrate.adoption import prove
from tests.helpers import db as dbs
from tools.pgserver import Server

OUT = ROOT / "bench" / "adoption-results.json"


def log(message: str) -> None:
    print(f"[bench:adoption] {message}", file=sys.stderr, flush=True)


def measure(server: Server, settings: Settings, reps: int) -> dict:
    db = dbs.create(server, prefix="adopt", extensions=("vector", "pgcrypto"))
    try:
        if settings.schema:
            db.sql(f'CREATE SCHEMA "{settings.schema}"')
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            migrate.apply(conn, settings)  # the schema as the files make it
            files = load(settings.migrations_dir)
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                assert prove(conn, settings, files) == []
                times.append(time.perf_counter() - started)
        return {"files": len(files), "median": statistics.median(times), "min": min(times), "max": max(times),
                "n": reps}
    finally:
        db.drop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adoption")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    server = Server(ROOT / ".state" / "pg-bench").start()
    results = {}
    log("llmemory 0.5.0's migrations")
    results["llmemory"] = measure(server, Settings(migrations_package="llmemory", schema="llmemory",
                                                   extensions=("vector",)), args.reps)
    folder = make_migrations(ROOT / ".state" / "bench-adoption" / "m100", 100)
    log("100 generated files (one table and one index each)")
    results["files_100"] = measure(server, Settings(folder, schema="bench"), args.reps)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    for name, r in results.items():
        log(f"{name}: {r['files']} files, proof {r['median'] * 1000:.0f} ms ({r['min'] * 1000:.0f}–{r['max'] * 1000:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
