"""The fleet's fingerprint at K tenants: digested in Python (``inspect_fleet``) against digested in the database
(``fleet_prints.digests``), side by side in one run.

    python -m bench.fleet_prints [--k 1000] [--reps 5]

One fresh database of the bench's embedded server (.state/pg-bench) with K tenants of the fleet benchmark's 10
files (one table + one index each: 110 catalog objects per tenant), built by the fleet executor; then the two
ways take turns, ``--reps`` times each, on one connection; the results must be equal (every tenant's fingerprint).
Prints median (min-max) seconds, the rows each way sends to the client and the CPU-seconds of the server's backend
and of this client; with ``--out`` also as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from bench.apply_profile import backend_cpu
from bench.bench import Bench, make_migrations
from llmemory_db import migrate
from llmemory_db.migrate import Settings, fleet_prints
from llmemory_db.migrate.fleet import apply_fleet
from llmemory_db.migrate.fleet_settings import FleetSettings, Tenant
from llmemory_db.migrate.fleet_state import inspect_fleet
from llmemory_db.migrate.objects import ManagedObjects
from tools.pgserver import Server


def log(message: str) -> None:
    print(f"[fleet-prints] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_prints")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pg-dir", type=Path, default=ROOT / ".state" / "pg-bench")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    server = Server(args.pg_dir.resolve()).start()
    with tempfile.TemporaryDirectory(prefix="llmemory-prints-") as tmp:
        bench = Bench(server, Path(tmp))
        db = bench.fresh_db()
        try:
            folder = make_migrations(Path(tmp) / "m", 10)
            fleet = FleetSettings(Settings(folder, module_name="tenant", extensions=()), max_parallel=4)
            tenants = [Tenant(f"t{i:04d}") for i in range(args.k)]
            started = time.perf_counter()
            result = apply_fleet(fleet, tenants, lambda _key: migrate.connect(bench.url(db)))
            log(f"{result.summary()} in {time.perf_counter() - started:.1f}s")
            times = {"python": [], "database": []}
            cpu = {"python": [], "database": []}
            rows = {}
            with migrate.connect(bench.url(db)) as conn:
                pid = conn.info.backend_pid
                rows["python"] = conn.execute(
                    "SELECT count(*) FROM (" + migrate.drift.OBJECTS_QUERY + ") x",
                    fleet_prints._params(fleet, [t.schema for t in tenants])).fetchone()[0]
                rows["database"] = args.k
                for rep in range(args.reps):
                    for way in (("python", "database") if rep % 2 == 0 else ("database", "python")):
                        started, server, client = time.perf_counter(), backend_cpu(pid), time.process_time()
                        if way == "python":
                            prints = inspect_fleet(conn, fleet, tenants, ManagedObjects()).prints
                        else:
                            prints = fleet_prints.digests(conn, fleet, tenants)
                        times[way].append(time.perf_counter() - started)
                        cpu[way].append((backend_cpu(pid) - server, time.process_time() - client))
                        if rep == 0:
                            rows[way + "_prints"] = prints
                same = rows.pop("python_prints") == rows.pop("database_prints")
        finally:
            bench.drop_db(db)
    out = {way: {"median": round(statistics.median(t), 3), "min": round(min(t), 3), "max": round(max(t), 3),
                 "n": len(t), "rows_to_client": rows[way],
                 "server_cpu_s": round(statistics.median(c[0] for c in cpu[way]), 2),
                 "client_cpu_s": round(statistics.median(c[1] for c in cpu[way]), 2)} for way, t in times.items()}
    out["equal"] = same
    out["k"] = args.k
    for way in ("python", "database"):
        o = out[way]
        print(f"{way:9} {o['median']:.3f} s ({o['min']:.3f}-{o['max']:.3f}), {o['rows_to_client']:,} rows to the "
              f"client, server CPU {o['server_cpu_s']:.2f} s, client CPU {o['client_cpu_s']:.2f} s, n={o['n']}")
    print(f"same fingerprints for all {args.k} tenants: {same}; ratio python/database "
          f"{out['python']['median'] / out['database']['median']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
