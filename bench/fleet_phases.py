"""Where a fleet's `up` spends its time, phase by phase, in process (no Pulumi): K tenants of the fleet benchmark's
10 files on a fresh database of the bench's server, then one new file, each phase timed (wall) with the
server's and this client's CPU-seconds.

    python -m bench.fleet_phases [--k 1000]

Phases, as the provider runs them: the executor from empty (``apply_fleet``), the fingerprints recorded after it
(``after_apply``); then for one new file: the executor's read of every history alone, one fingerprint pass alone,
the executor with the drift check in its read (``DriftCheck``), the fingerprints after it; last, a 12th file
without the drift check (what the one-file transactions cost by themselves).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from bench.bench import make_migrations
from bench.cpu import server_cpu
from bench.fleet import FILES, Fleet, tenant_names
from llmemory_db import migrate
from llmemory_db.migrate import Settings, fleet_ops, fleet_prints
from llmemory_db.migrate.fleet import apply_fleet
from llmemory_db.migrate.fleet_settings import FleetSettings, Tenant
from llmemory_db.migrate.fleet_state import read_fleet
from tools.pgserver import Server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_phases")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--pg-dir", type=Path, default=ROOT / ".state" / "pg-bench")
    args = parser.parse_args(argv)
    server = Server(args.pg_dir.resolve()).start()

    def phase(name, fn):
        cpu, client, started = server_cpu(server), time.process_time(), time.perf_counter()
        out = fn()
        print(f"{name:52} wall {time.perf_counter() - started:6.2f} s   server CPU {server_cpu(server) - cpu:6.2f} s"
              f"   client CPU {time.process_time() - client:5.2f} s", flush=True)
        return out

    with tempfile.TemporaryDirectory(prefix="llmemory-phases-") as tmp:
        bench = Fleet(server, Path(tmp))
        folder = make_migrations(Path(tmp) / "m", FILES)
        db = bench.fresh_db()
        bench.databases.append(db)
        try:
            connect = lambda _key: migrate.connect(bench.url(db))  # noqa: E731
            fleet = FleetSettings(Settings(folder, module_name="tenant", extensions=()), max_parallel=4)
            tenants = [Tenant(n) for n in tenant_names(args.k)]
            print(f"K={args.k}, {FILES} files, max_parallel 4")
            result = phase("up from empty: the executor", lambda: apply_fleet(fleet, tenants, connect))
            status = phase("up from empty: fingerprints after it", lambda: fleet_ops.after_apply(
                fleet, tenants, result, connect, fleet_prints.Recorded()))
            recorded = fleet_prints.Recorded(status[0], status[2], status[1], sorted(result.checksums))
            make_migrations(folder, FILES + 1)
            with connect("") as conn:
                phase("new file: the executor's read of the histories alone",
                      lambda: read_fleet(conn, fleet, tenants, [f"t{FILES + 1}"]))
            phase("new file: one fingerprint pass alone", lambda: fleet_prints.digests_of(fleet, tenants, connect))
            check = fleet_prints.DriftCheck(fleet, recorded, set())
            result = phase("new file: the executor, drift check in its read",
                           lambda: apply_fleet(fleet, tenants, connect, precheck=check))
            phase("new file: fingerprints after it",
                  lambda: fleet_ops.after_apply(fleet, tenants, result, connect, recorded))
            make_migrations(folder, FILES + 2)
            phase("12th file: the executor without the drift check", lambda: apply_fleet(fleet, tenants, connect))
        finally:
            bench.drop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
