"""Fan-out: one module's migrations over K tenant schemas of one database ("One module, a thousand tenants").

    python -m bench.fleet [--ks 10,100,1000] [--reps 3] [--big-reps 3] [--tools fleet,schemas,pgdbm,psql]
    python -m bench.fleet --report     # summary, plot and table again from bench/fleet-results.json

For K = 10, 100, 1,000 tenants ``t0000`` ... in one fresh database of the embedded PostgreSQL 18, each with the
same 10 migration files (one table + one index each, ``bench.bench.make_migrations``), every tool runs three
operations, timed as whole processes (interpreter and Pulumi start-up included):

- ``up``:       from empty (schemas, histories, 10 files per tenant);
- ``noop``:     nothing to do (Pulumi: ``pulumi preview`` with no changes);
- ``new_file``: an 11th file added, applied to every tenant.

Tools:

- ``fleet``:   one ``MigratedTenants`` (max_parallel 4, extensions=[], tenants from the stack config, other settings
  default) in a Pulumi project with a file backend: ``pulumi up --yes --skip-preview``, ``pulumi preview``;
- ``schemas``: K ``MigratedSchema`` components in one stack (same module name, history ``<tenant>.schema_migrations``,
  extensions=()), K <= 100 only (Pulumi's per-resource cost: see ``not_run`` in the results);
- ``pgdbm``:   pgdbm 0.5 as an application does it: one process, one shared pool, for each tenant in turn
  ``CREATE SCHEMA IF NOT EXISTS`` and ``AsyncMigrationManager(module_name="tenant").apply_pending_migrations()``;
- ``psql``:    the floor: the same rendered files, one transaction per file (no history), in ``max_parallel`` = 4
  concurrent ``psql`` sessions, each taking a quarter of the tenants.

During every ``up`` a sampler polls ``pg_stat_activity`` every 10 ms (the client sessions of the database, its own
excluded) and, for the Pulumi tools, ``/proc/<pid>/status`` (VmHWM) of the dynamic provider (``python -m
pulumi.dynamic``, found by its command line and its working directory: the project's) every 20 ms. The CLI's own
peak RSS comes from GNU time. Repetitions: tools take turns in each; K >= 1,000 runs ``--big-reps`` times (pgdbm
once). The databases are dropped at the end of the section, not between runs (see ``Fleet.drop_all``).

Writes bench/fleet-results.json and docs/bench-fleet.png; prints the README table (``python -m bench.report`` too).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent

from bench.bench import PY, Bench, make_migrations, run_measured, summary
from bench.cpu import children_cpu, server_cpu
from llmemory_db.migrate import load, render
from tools.pgserver import Server, client_bin_dir

OUT = ROOT / "bench" / "fleet-results.json"
PLOT = ROOT / "docs" / "bench-fleet.png"
TOOLS = ["fleet", "fleet_before", "schemas", "pgdbm", "psql"]
LABELS = {"fleet": "one MigratedTenants (max_parallel 4)", "schemas": "K MigratedSchema components",
          "fleet_before": "one MigratedTenants, code before (--before)",
          "pgdbm": "pgdbm 0.5, a loop over the tenants (one process)",
          "psql": "psql floor: one transaction per file, 4 sessions"}
OPS = {"up": "`up` from empty", "noop": "no-op", "new_file": "one new file (11th)"}
PULUMI_TOOLS = {"fleet", "fleet_before", "schemas"}
FLEET_TOOLS = {"fleet", "fleet_before"}
SLOW = {"pgdbm"}  # one run at K >= 1,000 (one tenant after the other)
SCHEMAS_MAX_K = 100
MAX_PARALLEL = 4
FILES = 10
MODULE = "tenant"
ENGINE_APP = "llmemory-db-migrate"
TARGETS = {"fleet_up_ratio_to_floor": 1.5, "fleet_new_file_ratio_to_floor": 3.0, "fleet_noop_preview_s": 2.0,
           "provider_peak_rss_mib": 100, "peak_connections": MAX_PARALLEL + 1}
SERVERS = 3  # the three-server section: embedded servers in .state/pg-bench-fleet-{a,b,c}
BEFORE: dict = {}  # "ref", "path": the code before (--before REF), exported from git

FLEET_PROGRAM = f"""\
import pulumi
from llmemory_db.tenants import MigratedTenants, MigratedTenantsArgs
fleet = MigratedTenants("fleet", MigratedTenantsArgs(migrations_dir="migrations", module_name="{MODULE}",
                                                     extensions=[], max_parallel={MAX_PARALLEL}))
pulumi.export("summary", fleet.summary)
"""
FLEET3_PROGRAM = f"""\
import json
import pulumi
from llmemory_db import ConnectionArgs
from llmemory_db.tenants import MigratedTenants, MigratedTenantsArgs, TenantArgs
config = pulumi.Config()
servers, k = json.loads(config.require("fleet_servers")), int(config.require("k"))
tenants = []
for n, server in enumerate(servers):  # server 0: the stack's postgresql:* config; the others their own
    own = None if n == 0 else ConnectionArgs(host="127.0.0.1", port=server["port"], username="postgres",
                                             password=server["password"], database=server["database"],
                                             sslmode="disable")
    tenants += [TenantArgs(f"t{{i:04d}}", own) for i in range(k)]
fleet = MigratedTenants("fleet", MigratedTenantsArgs(migrations_dir="migrations", module_name="{MODULE}",
                                                     extensions=[], max_parallel={MAX_PARALLEL}, on_error="continue",
                                                     tenants=tenants))
pulumi.export("summary", fleet.summary)
pulumi.export("servers", fleet.servers)
"""
SCHEMAS_PROGRAM = f"""\
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs
for schema in pulumi.Config().get_object("tenants"):
    MigratedSchema(schema, MigratedSchemaArgs(schema=schema, module_name="{MODULE}",
                                              history_table=f"{{schema}}.schema_migrations", extensions=()))
"""
PGDBM_SCRIPT = f"""\
import asyncio, sys
from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
async def main(url, mdir, k):
    pool = await AsyncDatabaseManager.create_shared_pool(
        DatabaseConfig(connection_string=url, min_connections=1, max_connections=2))
    applied = 0
    try:
        for i in range(k):
            schema = f"t{{i:04d}}"
            db = AsyncDatabaseManager(pool=pool, schema=schema)
            await db.execute(f'CREATE SCHEMA IF NOT EXISTS "{{schema}}"')
            result = await AsyncMigrationManager(db, migrations_path=mdir, module_name="{MODULE}") \\
                .apply_pending_migrations()
            applied += len(result["applied"])
    finally:
        await pool.close()
    print(applied)
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def log(message: str) -> None:
    print(f"[fleet] {message}", file=sys.stderr, flush=True)


def tenant_names(k: int):
    return [f"t{i:04d}" for i in range(k)]


_HZ = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple:
    """(busy, all) CPU seconds of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / _HZ, sum(fields) / _HZ


def busy_since(before: tuple) -> float:
    """The share of the machine's CPU time that was busy since ``before`` (1.0: every core all the time)."""
    after = machine_cpu()
    return round((after[0] - before[0]) / max(1e-9, after[1] - before[1]), 3)


# ---------------------------------------------------------------------------------------------- sampling

class Sampler:
    """While a command runs: peak client sessions of the database (pg_stat_activity every ``interval``, this
    sampler's session excluded) and, with ``project``, the peak memory (VmHWM) of the dynamic provider processes
    running in that folder."""

    def __init__(self, dsn: str, database: str, project: Path | None = None, interval: float = 0.01):
        self.dsn, self.database, self.project, self.interval = dsn, database, project, interval
        self.peak = self.peak_engine = self.samples = 0
        self.by_app: dict = {}
        self.providers: dict = {}  # pid -> {"hwm_kib", "cmd"}
        self._stop = threading.Event()
        self._threads = []

    def __enter__(self) -> "Sampler":
        self._conn = psycopg.connect(self.dsn, autocommit=True, application_name="fleetbench-sampler")
        self._threads = [threading.Thread(target=self._sessions, daemon=True)]
        if self.project is not None:
            self._threads.append(threading.Thread(target=self._processes, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._conn.close()

    def _sessions(self) -> None:
        query = ("SELECT coalesce(application_name, ''), count(*) FROM pg_stat_activity WHERE datname = %s "
                 "AND pid <> pg_backend_pid() AND backend_type = 'client backend' GROUP BY 1")
        while not self._stop.is_set():
            rows = self._conn.execute(query, (self.database,), prepare=True).fetchall()
            total = sum(n for _, n in rows)
            self.samples += 1
            self.peak = max(self.peak, total)
            for app, n in rows:
                self.by_app[app] = max(self.by_app.get(app, 0), n)
            self.peak_engine = max(self.peak_engine, sum(n for app, n in rows if app == ENGINE_APP))
            self._stop.wait(self.interval)

    def _processes(self) -> None:
        project = str(self.project.resolve())
        known: set = set()
        tick = 0
        while not self._stop.is_set():
            if tick % 5 == 0:  # look for new provider processes every 100 ms
                for entry in os.listdir("/proc"):
                    if not entry.isdigit() or int(entry) in known:
                        continue
                    try:
                        cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                        if b"pulumi.dynamic" in cmd and os.readlink(f"/proc/{entry}/cwd") == project:
                            known.add(int(entry))
                            self.providers[int(entry)] = {"hwm_kib": 0, "cmd": cmd.replace(b"\0", b" ").decode()[:120]}
                    except OSError:
                        continue
            for pid in list(known):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    known.discard(pid)  # exited: its last reading stays
                    continue
                found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
                if found:
                    self.providers[pid]["hwm_kib"] = max(self.providers[pid]["hwm_kib"], int(found.group(1)))
            tick += 1
            self._stop.wait(0.02)

    def result(self) -> dict:
        hwm = max((p["hwm_kib"] for p in self.providers.values()), default=0)
        return {"peak_sessions": self.peak, "peak_engine_sessions": self.peak_engine, "peak_by_app": self.by_app,
                "samples": self.samples, "provider_processes": len(self.providers),
                "provider_peak_rss_mib": round(hwm / 1024, 1) if self.providers else None}


# ---------------------------------------------------------------------------------------------- the tools

class Fleet(Bench):
    """One tool's three operations on a fresh database; each returns {op: {seconds, ...}}."""

    def __init__(self, server: Server, workdir: Path):
        super().__init__(server, workdir)
        self.databases: list = []

    def measured(self, cmd, db: str, project: Path | None = None, env=None, cwd=None, sample: bool = True,
                 check: bool = True) -> dict:
        load_before, cpu_before = os.getloadavg()[0], machine_cpu()
        server_before, client_before = server_cpu(self.server), children_cpu()
        if not check:
            started = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
            return {"seconds": round(time.perf_counter() - started, 3), "exit": proc.returncode,
                    "out": (proc.stdout + proc.stderr)[-4000:], "load_1min": load_before,
                    "server_cpu_s": round(server_cpu(self.server) - server_before, 2),
                    "client_cpu_s": round(children_cpu() - client_before, 2)}
        if sample:
            with Sampler(self.server.dsn(database="postgres"), db, project) as sampler:
                seconds, rss, out = run_measured(cmd, env=env, cwd=cwd)
            extra = sampler.result()
        else:
            seconds, rss, out = run_measured(cmd, env=env, cwd=cwd)
            extra = {}
        in_provider = re.findall(r"tenants \S+: \d+ tenants: .*\((\d+(?:\.\d+)?)s\)", out)
        prints = re.findall(r"tenants \S+: schema fingerprints: .*\((\d+(?:\.\d+)?)s\)", out)
        return {"seconds": round(seconds, 3), "cli_peak_rss_mib": round(rss, 1), "load_1min": load_before,
                **({"in_provider_prints_s": float(prints[-1])} if prints else {}),
                "machine_cpu_busy": busy_since(cpu_before),
                "server_cpu_s": round(server_cpu(self.server) - server_before, 2),
                "client_cpu_s": round(children_cpu() - client_before, 2),
                **({"in_provider_apply_s": float(in_provider[-1])} if in_provider else {}), **extra}

    # -- Pulumi
    def pulumi_tool(self, tool: str, k: int, db: str, mdir_files: int = FILES) -> dict:
        program = FLEET_PROGRAM if tool in FLEET_TOOLS else SCHEMAS_PROGRAM
        project = self.pulumi_project(f"{tool}_k{k}_{uuid.uuid4().hex[:6]}", mdir_files, k, db, program=program)
        env = self.pulumi_env(project)
        if tool == "fleet_before":  # the program and its provider import the code before
            env["PYTHONPATH"] = os.pathsep.join([BEFORE["path"]] + env["PYTHONPATH"].split(os.pathsep)[1:])
        subprocess.run(["pulumi", "config", "set", "tenants", json.dumps(tenant_names(k))], cwd=project, env=env,
                       check=True, capture_output=True)
        up = ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive"]
        out = {"up": self.measured(up, db, project, env=env, cwd=project)}
        self.check_applied(db, k, FILES)
        out["noop"] = self.measured(["pulumi", "preview", "--non-interactive", "--expect-no-changes"], db, project,
                                    env=env, cwd=project, sample=False)
        make_migrations(project / "migrations", FILES + 1)
        out["new_file"] = self.measured(up, db, project, env=env, cwd=project)
        self.check_applied(db, k, FILES + 1)
        return out

    # -- pgdbm
    def pgdbm(self, k: int, db: str) -> dict:
        script = self.workdir / "pgdbm_fleet.py"
        script.write_text(PGDBM_SCRIPT)
        mdir = self.workdir / f"pgdbm_k{k}_{uuid.uuid4().hex[:6]}"
        make_migrations(mdir, FILES)
        cmd = [PY, str(script), self.url(db), str(mdir), str(k)]
        out = {"up": self.measured(cmd, db, cwd=ROOT)}
        self.check_applied(db, k, FILES)
        out["noop"] = self.measured(cmd, db, cwd=ROOT, sample=False)
        make_migrations(mdir, FILES + 1)
        out["new_file"] = self.measured(cmd, db, cwd=ROOT)
        self.check_applied(db, k, FILES + 1)
        return out

    # -- psql floor
    def psql_scripts(self, k: int, files, with_schema: bool, tag: str):
        """max_parallel scripts, each a quarter of the tenants (contiguous), one transaction per file."""
        names = tenant_names(k)
        per = -(-k // MAX_PARALLEL)
        scripts = []
        for index in range(MAX_PARALLEL):
            part = names[index * per:(index + 1) * per]
            if not part:
                continue
            path = self.workdir / f"floor_{tag}_k{k}_{index}.sql"
            if not path.exists():
                chunks = []
                for schema in part:
                    if with_schema:
                        chunks.append(f"CREATE SCHEMA {schema};\n")
                    for m in files:
                        chunks.append(f"BEGIN;\n{render(m.sql, schema, m.filename)}\nCOMMIT;\n")
                path.write_text("".join(chunks))
            scripts.append(path)
        return scripts

    def psql_parallel(self, scripts, db: str) -> dict:
        env = dict(os.environ, PGPASSWORD=self.server.password)
        base = [str(client_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                str(self.server.port), "-U", "postgres", "-d", db, "-f"]
        load_before, cpu_before = os.getloadavg()[0], machine_cpu()
        server_before, client_before = server_cpu(self.server), children_cpu()
        with Sampler(self.server.dsn(database="postgres"), db) as sampler:
            started = time.perf_counter()
            with ThreadPoolExecutor(len(scripts)) as pool:
                sessions = list(pool.map(lambda s: run_measured(base + [str(s)], env=env)[0], scripts))
            seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 3), "sessions_s": [round(s, 3) for s in sessions], "load_1min": load_before,
                "machine_cpu_busy": busy_since(cpu_before),
                "server_cpu_s": round(server_cpu(self.server) - server_before, 2),
                "client_cpu_s": round(children_cpu() - client_before, 2), **sampler.result()}

    def psql(self, k: int, db: str) -> dict:
        mdir = self.workdir / "m_floor"
        make_migrations(mdir, FILES + 1)
        files = load(mdir)
        out = {"up": self.psql_parallel(self.psql_scripts(k, files[:FILES], True, "up"), db)}
        self.check_applied(db, k, FILES, history=False)
        out["new_file"] = self.psql_parallel(self.psql_scripts(k, files[FILES:], False, "new"), db)
        self.check_applied(db, k, FILES + 1, history=False)
        return out

    def check_applied(self, db: str, k: int, files: int, history: bool = True) -> None:
        """Every tenant holds the files' tables (and, for the migration tools, their history rows)."""
        with psycopg.connect(self.server.dsn(database=db), autocommit=True) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname ~ '^t[0-9]{4}$' "
                                  "AND tablename ~ '^t[0-9]+$'").fetchone()[0]
            rows = conn.execute("SELECT sum((xpath('/row/c/text()', query_to_xml(format("
                                "'SELECT count(*) AS c FROM %I.schema_migrations WHERE module_name = ''tenant''', "
                                "n.nspname), false, true, '')))[1]::text::int) FROM pg_namespace n "
                                "WHERE n.nspname ~ '^t[0-9]{4}$'").fetchone()[0] if history else None
        if tables != k * files or (history and rows != k * files):
            raise RuntimeError(f"{db}: expected {k} x {files} tables{' and history rows' if history else ''}, "
                               f"found {tables} tables, {rows} history rows")

    def run(self, tool: str, k: int) -> dict:
        """On a fresh database, kept until the whole section is done (see ``drop_all``)."""
        db = self.fresh_db()  # bench's: CREATE DATABASE, CHECKPOINT
        self.databases.append(db)
        if tool in PULUMI_TOOLS:
            return self.pulumi_tool(tool, k, db)
        return getattr(self, tool)(k, db)

    def drop_all(self) -> None:
        """The section's databases, dropped at its end, not between runs: on this machine's ext4 (no journal) a
        file created within a few minutes of many deletions costs kernel time (``recently_deleted`` in the inode
        allocator; seen with perf: 2x slower runs right after a K=1,000 database of ~45,000 files was dropped)."""
        for db in self.databases:
            self.drop_db(db)
        self.databases.clear()


# ---------------------------------------------------------------------------------------------- three servers

class ThreeServers:
    """One MigratedTenants over three embedded servers (ports of their own), K tenants on each: ``up`` from empty,
    a no-change preview, one new file; then, on fresh databases, the same ``up`` and new file with server 1
    stopped mid-run (once half its tenants are done), started again, and ``up`` re-run: every tenant at head, each
    file recorded once. The psql floor: 4 sessions per server, all twelve at once."""

    def __init__(self, workdir: Path, k: int):
        self.workdir, self.k = workdir, k
        self.servers = [Server((ROOT / ".state" / f"pg-bench-fleet-{n}").resolve()).start() for n in "abc"]
        self.benches = [Fleet(server, workdir / f"s{n}") for n, server in enumerate(self.servers)]
        for bench in self.benches:
            bench.workdir.mkdir(parents=True, exist_ok=True)

    def fresh(self) -> list:
        out = []
        for bench in self.benches:
            db = bench.fresh_db()
            bench.databases.append(db)
            out.append(db)
        return out

    def project(self, dbs: list, tag: str) -> tuple:
        bench = self.benches[0]
        project = bench.pulumi_project(f"three_{tag}_{uuid.uuid4().hex[:6]}", FILES, self.k, dbs[0],
                                       program=FLEET3_PROGRAM)
        env = bench.pulumi_env(project)
        described = [{"port": server.port, "password": server.password, "database": db}
                     for server, db in zip(self.servers, dbs)]
        for key, value, secret in (("fleet_servers", json.dumps(described), True), ("k", str(self.k), False)):
            subprocess.run(["pulumi", "config", "set"] + (["--secret"] if secret else []) + [key, value],
                           cwd=project, env=env, check=True, capture_output=True)
        return project, env

    def cpu(self):
        """(CPU seconds of the three servers so far, their postmasters' pids): a restarted server starts at 0."""
        return sum(server_cpu(server) for server in self.servers), [s.running_pid() for s in self.servers]

    def cpu_since(self, before):
        now = self.cpu()
        return round(now[0] - before[0], 2) if now[1] == before[1] else None

    def timed(self, cmd, project: Path, env, expect_ok: bool = True, during=None) -> dict:
        load, before, client = os.getloadavg()[0], self.cpu(), children_cpu()
        with Sampler(self.servers[0].dsn(database="postgres"), "-", project) as sampler:  # provider RSS only
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            if during is not None:
                during(proc)
            out, _ = proc.communicate()
            seconds = time.perf_counter() - started
        if expect_ok and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({proc.returncode}):\n{out[-3000:]}")
        in_provider = re.findall(r"tenants \S+: \d+ tenants: .*\((\d+(?:\.\d+)?)s\)", out)
        prints = re.findall(r"tenants \S+: schema fingerprints: .*\((\d+(?:\.\d+)?)s\)", out)
        summary_line = re.findall(r"tenants \S+: (\d+ tenants: [^(]*)\(", out)
        return {"seconds": round(seconds, 3), "exit": proc.returncode, "load_1min": load,
                "server_cpu_s": self.cpu_since(before), "client_cpu_s": round(children_cpu() - client, 2),
                "provider_peak_rss_mib": sampler.result()["provider_peak_rss_mib"],
                **({"in_provider_apply_s": float(in_provider[-1])} if in_provider else {}),
                **({"in_provider_prints_s": float(prints[-1])} if prints else {}),
                **({"summary": summary_line[-1].strip()} if summary_line else {})}

    def stop_when_half_done(self, db: str, probe: str):
        """``during``: stop server 1 once half its tenants have ``probe`` (a table name) committed."""
        server = self.servers[1]

        def during(proc) -> None:
            deadline, done = time.monotonic() + 600, 0
            with psycopg.connect(server.dsn(database=db), autocommit=True) as conn:
                while time.monotonic() < deadline and proc.poll() is None:
                    done = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                        "c.relnamespace WHERE c.relname = %s AND n.nspname ~ '^t[0-9]{4}$'",
                                        (probe,)).fetchone()[0]
                    if done >= self.k // 2:
                        break
                    time.sleep(0.05)
            server.stop()
            log(f"three servers: server 1 stopped mid-run ({done} of its {self.k} tenants had {probe})")
        return during

    def check(self, dbs: list, files: int) -> None:
        for bench, db in zip(self.benches, dbs):
            bench.check_applied(db, self.k, files)  # every tenant's tables and history rows (unique per file)

    def floor(self, dbs: list, files, with_schema: bool, tag: str) -> dict:
        jobs = []
        for bench, db in zip(self.benches, dbs):
            for script in bench.psql_scripts(self.k, files, with_schema, tag):
                jobs.append((bench, db, script))
        load, before, client = os.getloadavg()[0], self.cpu(), children_cpu()
        started = time.perf_counter()

        def one(job):
            bench, db, script = job
            env = dict(os.environ, PGPASSWORD=bench.server.password)
            return run_measured([str(client_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                                 "127.0.0.1", "-p", str(bench.server.port), "-U", "postgres", "-d", db, "-f",
                                 str(script)], env=env)[0]
        with ThreadPoolExecutor(len(jobs)) as pool:
            list(pool.map(one, jobs))
        return {"seconds": round(time.perf_counter() - started, 3), "load_1min": load,
                "server_cpu_s": self.cpu_since(before), "client_cpu_s": round(children_cpu() - client, 2)}

    def run(self) -> dict:
        up = ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive"]
        out: dict = {"k_per_server": self.k, "servers": SERVERS, "max_parallel": MAX_PARALLEL}
        mdir = self.workdir / "m_floor3"
        make_migrations(mdir, FILES + 1)
        files = load(mdir)
        dbs = self.fresh()
        out["floor_up"] = self.floor(dbs, files[:FILES], True, "up3")
        out["floor_new_file"] = self.floor(dbs, files[FILES:], False, "new3")
        log(f"three servers, psql floor: up {out['floor_up']['seconds']:.1f}s, new file "
            f"{out['floor_new_file']['seconds']:.1f}s")
        # every server up
        dbs = self.fresh()
        project, env = self.project(dbs, "all")
        out["up"] = self.timed(up, project, env)
        self.check(dbs, FILES)
        out["noop"] = self.timed(["pulumi", "preview", "--non-interactive", "--expect-no-changes"], project, env)
        make_migrations(project / "migrations", FILES + 1)
        out["new_file"] = self.timed(up, project, env)
        self.check(dbs, FILES + 1)
        log("three servers: " + ", ".join(f"{op} {out[op]['seconds']:.1f}s" for op in ("up", "noop", "new_file")))
        # server 1 stopped mid-run, started again, up re-run
        dbs = self.fresh()
        project, env = self.project(dbs, "stop")
        for op, files in (("up", FILES), ("new_file", FILES + 1)):
            make_migrations(project / "migrations", files)
            try:
                out[f"{op}_server_stopped"] = self.timed(up, project, env, expect_ok=False,
                                                         during=self.stop_when_half_done(dbs[1], f"t{files}"))
            finally:
                self.servers[1].start()
            out[f"{op}_rerun"] = self.timed(up, project, env)
            self.check(dbs, files)
        out["every_tenant_at_head_each_file_once"] = True
        log("three servers, server 1 stopped mid-run: " + ", ".join(
            f"{op} {out[op]['seconds']:.1f}s" for op in ("up_server_stopped", "up_rerun", "new_file_server_stopped",
                                                         "new_file_rerun")))
        return out

    def drop_all(self) -> None:
        for server in self.servers:
            if not (server.running_pid() and server.ready()):
                server.start()
        for bench in self.benches:
            bench.drop_all()


def three_servers(k: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="llmemory-fleet3-") as tmp:
        section = ThreeServers(Path(tmp), k)
        try:
            return section.run()
        finally:
            log("dropping the three-server section's databases")
            section.drop_all()


# ---------------------------------------------------------------------------------------------- the section

def measure(server: Server, ks, reps: int, big_reps: int, tools) -> dict:
    runs: dict = {str(k): {t: [] for t in tools if not (t == "schemas" and k > SCHEMAS_MAX_K)} for k in ks}
    with tempfile.TemporaryDirectory(prefix="llmemory-fleet-") as tmp:
        bench = Fleet(server, Path(tmp))
        try:
            _measure(bench, ks, reps, big_reps, runs)
        finally:
            log("dropping the section's databases")
            bench.drop_all()
    return runs


def _measure(bench: "Fleet", ks, reps: int, big_reps: int, runs: dict) -> None:
    for k in ks:
        active = list(runs[str(k)])
        for rep in range(big_reps if k >= 1000 else reps):
            order = active[rep % len(active):] + active[:rep % len(active)]  # tools take turns going first
            for tool in order:
                if tool in SLOW and k >= 1000 and rep > 0:
                    continue
                result = bench.run(tool, k)
                result["rep"] = rep + 1
                runs[str(k)][tool].append(result)
                log(f"K={k} rep {rep + 1} {tool}: " + ", ".join(
                    f"{op} {r['seconds']:.2f}s" + (f" (peak {r['peak_sessions']} sessions" +
                                                   (f", provider {r['provider_peak_rss_mib']} MiB"
                                                    if r.get('provider_peak_rss_mib') else "") + ")"
                                                   if "peak_sessions" in r else "")
                    for op, r in result.items() if op in OPS) + f"; load {os.getloadavg()[0]:.2f}")


def summarize(runs: dict) -> dict:
    out: dict = {}
    for k, tools in runs.items():
        out[k] = {}
        for tool, reps in tools.items():
            if not reps:
                continue
            s: dict = {}
            for op in OPS:
                values = [r[op]["seconds"] for r in reps if op in r]
                if values:
                    s[op] = summary(values)
            ups = [r[op] for r in reps for op in ("up", "new_file") if op in r]
            s["peak_sessions"] = max(u["peak_sessions"] for u in ups)
            s["peak_sessions_by_op"] = {op: max(r[op]["peak_sessions"] for r in reps) for op in ("up", "new_file")
                                        if op in reps[0]}
            s["peak_by_app"] = {}
            for u in ups:
                for app, n in u["peak_by_app"].items():
                    s["peak_by_app"][app] = max(s["peak_by_app"].get(app, 0), n)
            providers = [u["provider_peak_rss_mib"] for u in ups if u.get("provider_peak_rss_mib")]
            if providers:
                s["provider_peak_rss_mib"] = max(providers)
                s["provider_peak_rss_mib_by_op"] = {op: max(r[op]["provider_peak_rss_mib"] or 0 for r in reps)
                                                    for op in ("up", "new_file")}
            cli = [r[op]["cli_peak_rss_mib"] for r in reps for op in OPS if "cli_peak_rss_mib" in r.get(op, {})]
            if cli:  # GNU time's peak RSS of the command (Pulumi: the CLI, not its plugins)
                s["cli_peak_rss_mib"] = max(cli)
            in_provider = {op: summary([r[op]["in_provider_apply_s"] for r in reps])
                           for op in ("up", "new_file") if all("in_provider_apply_s" in r.get(op, {}) for r in reps)}
            if in_provider:
                s["in_provider_apply_s"] = in_provider
            prints = {op: summary([r[op]["in_provider_prints_s"] for r in reps])
                      for op in ("up", "new_file") if all("in_provider_prints_s" in r.get(op, {}) for r in reps)}
            if prints:
                s["in_provider_prints_s"] = prints
            s["machine_cpu_busy"] = {op: summary([r[op]["machine_cpu_busy"] for r in reps if op in r]) for op in OPS
                                     if any(op in r for r in reps)}
            for side in ("server_cpu_s", "client_cpu_s"):
                cpu = {op: summary([r[op][side] for r in reps if side in r.get(op, {})]) for op in OPS
                       if any(side in r.get(op, {}) for r in reps)}
                if cpu:
                    s[side] = cpu
            s["load_1min"] = [min(r[op]["load_1min"] for r in reps for op in OPS if op in r),
                              max(r[op]["load_1min"] for r in reps for op in OPS if op in r)]
            out[k][tool] = s
        floor = out[k].get("psql", {}).get("up", {}).get("median")
        if floor:
            for tool, s in out[k].items():
                if "up" in s:
                    s["up_ratio_to_floor"] = round(s["up"]["median"] / floor, 2)
                if "new_file" in s and out[k]["psql"].get("new_file"):
                    s["new_file_ratio_to_floor"] = round(s["new_file"]["median"] / out[k]["psql"]["new_file"]["median"], 2)
    return out


def targets(s: dict) -> dict:
    big = s.get("1000", {}).get("fleet")
    if not big:
        return {}
    out = {}
    if "up_ratio_to_floor" in big:
        out["fleet_up_ratio_to_floor_at_1000"] = {"value": big["up_ratio_to_floor"],
                                                  "target": TARGETS["fleet_up_ratio_to_floor"],
                                                  "met": big["up_ratio_to_floor"] <= TARGETS["fleet_up_ratio_to_floor"]}
    if "new_file_ratio_to_floor" in big:
        out["fleet_new_file_ratio_to_floor_at_1000"] = {
            "value": big["new_file_ratio_to_floor"], "target": TARGETS["fleet_new_file_ratio_to_floor"],
            "met": big["new_file_ratio_to_floor"] <= TARGETS["fleet_new_file_ratio_to_floor"]}
    out["fleet_noop_preview_at_1000_s"] = {"value": big["noop"]["median"], "target": TARGETS["fleet_noop_preview_s"],
                                           "met": big["noop"]["median"] <= TARGETS["fleet_noop_preview_s"]}
    if big.get("provider_peak_rss_mib"):
        out["fleet_provider_peak_rss_mib_at_1000"] = {
            "value": big["provider_peak_rss_mib"], "target": TARGETS["provider_peak_rss_mib"],
            "met": big["provider_peak_rss_mib"] <= TARGETS["provider_peak_rss_mib"]}
    peak = max(v["fleet"]["peak_sessions"] for v in s.values() if "fleet" in v)
    out["fleet_peak_sessions"] = {"value": peak, "target": TARGETS["peak_connections"],
                                  "met": peak <= TARGETS["peak_connections"]}
    return out


def not_run(s: dict, ks, tools) -> dict:
    """What was left out, and why (with the figures measured)."""
    out = {}
    if "schemas" in tools and any(k > SCHEMAS_MAX_K for k in ks):
        measured = s.get(str(SCHEMAS_MAX_K), {}).get("schemas", {}).get("up")
        small = s.get("10", {}).get("schemas", {}).get("up")
        slope = (measured["median"] - small["median"]) / (SCHEMAS_MAX_K - 10) if measured and small else None
        out["schemas"] = (
            f"K MigratedSchema components at K > {SCHEMAS_MAX_K}: Pulumi's per-resource cost (several resources per "
            "component, each a step the engine schedules and records in the state)"
            + (f"; K={SCHEMAS_MAX_K} already took {measured['median']:.0f} s for `pulumi up` from empty"
               if measured else "")
            + (f" ({slope:.2f} s more per component than at K=10: about {slope * 1000 / 60:.0f} minutes per "
               "`pulumi up` at K=1,000)" if slope else ""))
    return out


# ---------------------------------------------------------------------------------------------- report, plot

def _s(x) -> str:
    if not x:
        return "–"
    if x["n"] == 1:
        return f"{x['median']:.2f} s (1 run)"
    return f"{x['median']:.2f} s ({x['min']:.2f}–{x['max']:.2f})"


def table(results: dict) -> str:
    s = results["summary"]
    ks = sorted(s, key=int)
    rows = ["| tool | operation | " + " | ".join(f"K={int(k):,}" for k in ks) + " |",
            "| --- | --- |" + " --- |" * len(ks)]
    for tool in TOOLS:
        if not any(tool in s[k] for k in ks):
            continue
        for op, label in OPS.items():
            if not any(op in s[k].get(tool, {}) for k in ks):
                continue
            if tool in PULUMI_TOOLS:
                label = {"up": "`pulumi up` from empty", "noop": "`pulumi preview`, no changes",
                         "new_file": "`pulumi up`, one new file"}[op]
            cells = []
            for k in ks:
                t = s[k].get(tool)
                if t is None:
                    cells.append("not run" if tool == "schemas" else "–")
                    continue
                cell = _s(t.get(op))
                ratio = t.get(f"{op}_ratio_to_floor")
                if ratio and tool != "psql":
                    cell += f", {ratio:.2f}x floor"
                cells.append(cell)
            rows.append(f"| {LABELS[tool]} | {label} | " + " | ".join(cells) + " |")
    out = "\n".join(rows)
    rows = ["", "| during the `up`s | " + " | ".join(f"K={int(k):,}" for k in ks) + " |",
            "| --- |" + " --- |" * len(ks)]
    for tool in TOOLS:
        if any(tool in s[k] for k in ks):
            rows.append(f"| {LABELS[tool]}: peak sessions on the database | "
                        + " | ".join(str(s[k][tool]["peak_sessions"]) if tool in s[k] else "not run" for k in ks) + " |")
    for tool in sorted(PULUMI_TOOLS):
        if any(s[k].get(tool, {}).get("provider_peak_rss_mib") for k in ks):
            rows.append(f"| {LABELS[tool]}: dynamic provider peak RSS | "
                        + " | ".join(f"{s[k][tool]['provider_peak_rss_mib']:.0f} MiB" if s[k].get(tool, {}).get(
                            "provider_peak_rss_mib") else "not run" for k in ks) + " |")
    for tool in TOOLS:
        if any(s[k].get(tool, {}).get("machine_cpu_busy", {}).get("up") for k in ks):
            rows.append(f"| {LABELS[tool]}: machine CPU busy during the `up` from empty | "
                        + " | ".join(f"{s[k][tool]['machine_cpu_busy']['up']['median'] * 100:.0f}%"
                                     if s[k].get(tool, {}).get("machine_cpu_busy", {}).get("up") else "not run"
                                     for k in ks) + " |")
    for tool in TOOLS:
        for side, what in (("server_cpu_s", "server CPU-s"), ("client_cpu_s", "client CPU-s")):
            for op in ("up", "new_file"):
                if any(s[k].get(tool, {}).get(side, {}).get(op) for k in ks):
                    rows.append(f"| {LABELS[tool]}: {what}, {OPS[op]} | " + " | ".join(
                        f"{s[k][tool][side][op]['median']:.1f}" if s[k].get(tool, {}).get(side, {}).get(op)
                        else "–" for k in ks) + " |")
    for tool in sorted(FLEET_TOOLS):
        for op in ("up", "new_file"):
            if any(s[k].get(tool, {}).get("in_provider_apply_s", {}).get(op) for k in ks):
                rows.append(f"| {LABELS[tool]}: of which the fleet executor ({OPS[op]}, in the provider) | "
                            + " | ".join(_s(s[k][tool]["in_provider_apply_s"].get(op))
                                         if s[k].get(tool, {}).get("in_provider_apply_s") else "–" for k in ks) + " |")
            if any(s[k].get(tool, {}).get("in_provider_prints_s", {}).get(op) for k in ks):
                rows.append(f"| {LABELS[tool]}: of which the fingerprints after the apply ({OPS[op]}) | "
                            + " | ".join(_s(s[k][tool]["in_provider_prints_s"].get(op))
                                         if s[k].get(tool, {}).get("in_provider_prints_s") else "–" for k in ks) + " |")
    out += "\n" + "\n".join(rows)
    for why in results.get("not_run", {}).values():
        out += f"\n\nNot run: {why}"
    m = results["machine"]
    out += (f"\n\nLoad average (1 min) at the start of the runs: {m['load_min']:.2f}–{m['load_max']:.2f} "
            f"({m['cores']} cores); runs per tool: {results['config']['reps']} for K < 1,000, "
            f"{results['config']['big_reps']} at K = 1,000 (pgdbm: 1).")
    return out


THREE_OPS = [("floor_up", "psql floor, `up` from empty (4 sessions per server)"),
             ("floor_new_file", "psql floor, one new file"),
             ("up", "`pulumi up` from empty"), ("noop", "`pulumi preview`, no changes"),
             ("new_file", "`pulumi up`, one new file"),
             ("up_server_stopped", "`pulumi up` from empty, server 1 stopped mid-run (fails its tenants)"),
             ("up_rerun", "server 1 started again: `pulumi up` re-run"),
             ("new_file_server_stopped", "`pulumi up`, one new file, server 1 stopped mid-run"),
             ("new_file_rerun", "server 1 started again: `pulumi up` re-run")]


def three_table(three: dict) -> str:
    rows = [f"| three servers, {three['k_per_server']:,} tenants each (max_parallel {three['max_parallel']} per "
            "server) | seconds | of which the executor, the fingerprints after it | server CPU-s (3 servers) | "
            "client CPU-s | provider peak RSS | outcome |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for op, label in THREE_OPS:
        r = three.get(op)
        if not r:
            continue
        outcome = r.get("summary", "") or ("" if op.startswith("floor") else f"exit {r.get('exit')}")
        rss = f"{r['provider_peak_rss_mib']:.0f} MiB" if r.get("provider_peak_rss_mib") else "–"
        cpu = f"{r['server_cpu_s']:.1f}" if r.get("server_cpu_s") is not None else "– (a server restarted)"
        inside = (f"{r['in_provider_apply_s']:.1f} s, {r.get('in_provider_prints_s', 0):.1f} s"
                  if "in_provider_apply_s" in r else "–")
        rows.append(f"| {label} | {r['seconds']:.2f} | {inside} | {cpu} | {r['client_cpu_s']:.1f} | {rss} | "
                    f"{outcome} |")
    if three.get("every_tenant_at_head_each_file_once"):
        rows.append("\nAfter each re-run: every tenant of the three servers at head, each file recorded once "
                    "(tables and history rows counted per server).")
    return "\n".join(rows)


def plot(results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    ks = sorted(s, key=int)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharey=True)
    for ax, (op, title) in zip(axes, OPS.items()):
        for index, tool in enumerate(TOOLS):
            points = [(int(k), s[k][tool][op]) for k in ks if op in s[k].get(tool, {})]
            if not points:
                continue
            xs = [k for k, _ in points]
            ax.plot(xs, [p["median"] for _, p in points], marker="o", color=f"C{index}", label=LABELS[tool])
            ax.vlines(xs, [p["min"] for _, p in points], [p["max"] for _, p in points], color=f"C{index}", lw=1)
        if op == "up":
            floor = [(int(k), s[k]["psql"]["up"]["median"] * TARGETS["fleet_up_ratio_to_floor"]) for k in ks
                     if "up" in s[k].get("psql", {})]
            if floor:
                ax.plot([k for k, _ in floor], [v for _, v in floor], color="0.4", ls=":", lw=1,
                        label="target for the fleet: 1.5 x the floor")
        if op == "noop":
            ax.axhline(TARGETS["fleet_noop_preview_s"], color="0.4", ls=":", lw=1,
                       label="target: fleet preview at K=1,000 <= 3 s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K tenant schemas (10 files each; one database)")
        ax.set_title(title.replace("`", ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds, whole process (median; bar: min-max)")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle("One module, K tenants: Pulumi (one MigratedTenants / K MigratedSchema), pgdbm 0.5, psql floor",
                 fontsize=11)
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    log(f"plot in {PLOT}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--ks", default="10,100,1000", help="comma-separated numbers of tenants")
    parser.add_argument("--reps", type=int, default=3, help="repetitions for K < 1,000")
    parser.add_argument("--big-reps", type=int, default=3, help="repetitions for K >= 1,000 (pgdbm: one)")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--pg-dir", type=Path, default=ROOT / ".state" / "pg-bench",
                        help="the embedded server's folder (default: the bench's, .state/pg-bench)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--report", action="store_true",
                        help="no measurement: summary, plot and table again from the runs in --out")
    parser.add_argument("--before", default=None, metavar="REF",
                        help="also run the fleet with the code of this git ref (exported with git archive), side by "
                             "side: before/after in one run")
    parser.add_argument("--servers-k", type=int, default=1000,
                        help="tenants per server in the three-server section (0: skip it)")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(args.out.read_text())
        results["summary"] = summarize(results["runs"])
        results["targets"] = targets(results["summary"])
        results["not_run"] = not_run(results["summary"], results["config"]["ks"], results["config"]["tools"])
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        return report(results, plotting=not args.no_plot)
    ks = [int(k) for k in args.ks.split(",")] if args.ks else []
    tools = [t for t in TOOLS if t in args.tools.split(",") and (t != "fleet_before" or args.before)]
    before_dir = None
    if args.before:
        before_dir = tempfile.TemporaryDirectory(prefix="llmemory-before-")
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", before_dir.name], input=archive, check=True)
        BEFORE.update(ref=subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip(), path=before_dir.name)
        LABELS["fleet_before"] = f"one MigratedTenants, code before ({BEFORE['ref']})"
    server = Server(args.pg_dir.resolve()).start()
    with psycopg.connect(server.dsn()) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    import pgdbm
    pulumi_version = subprocess.run(["pulumi", "version"], capture_output=True, text=True).stdout.strip()
    load_start = os.getloadavg()
    started = time.time()
    runs = measure(server, ks, args.reps, args.big_reps, tools) if ks else {}
    three = three_servers(args.servers_k) if args.servers_k else None
    s = summarize(runs)
    loads = [r[op]["load_1min"] for k in runs.values() for reps in k.values() for r in reps for op in OPS if op in r]
    loads = loads or [os.getloadavg()[0]]
    results = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "server": version,
                    "pulumi": pulumi_version, "pgdbm": getattr(pgdbm, "__version__", "?"),
                    "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
                    "load_min": min(loads), "load_max": max(loads), "minutes": round((time.time() - started) / 60, 1)},
        "config": {"ks": ks, "reps": args.reps, "big_reps": args.big_reps, "files": FILES, "max_parallel": MAX_PARALLEL,
                   "module": MODULE, "tools": tools, "before": BEFORE.get("ref"), "servers_k": args.servers_k},
        "three_servers": three,
        "summary": s,
        "targets": targets(s),
        "runs": runs,
    }
    results["not_run"] = not_run(s, ks, tools)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"results in {args.out}")
    return report(results, plotting=not args.no_plot)


def report(results: dict, plotting: bool = True) -> int:
    if results["config"].get("before"):
        LABELS["fleet_before"] = f"one MigratedTenants, code before ({results['config']['before']})"
    if plotting and results["summary"]:
        plot(results)
    if results["summary"]:
        print(table(results))
    if results.get("three_servers"):
        print("\n" + three_table(results["three_servers"]))
    for name, t in results["targets"].items():
        print(f"{name}: {t['value']} (target {t['target']}): {'met' if t['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
