"""Side-by-side benchmark: this engine vs the psql floor vs pgdbm 0.5, and the Pulumi layer.

    make bench                       # everything, writes bench/results.json and docs/*.png
    python -m bench.bench --quick    # N = 10, 100 only, no fan-out

Every figure is the wall-clock time of a whole process (interpreter start-up included) in a fresh
database on the embedded PostgreSQL 18, repeated, reported as median and spread (min-max), with ratios
against the floor: `psql` running the same rendered SQL, one transaction per file, in one session.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Optional

import psycopg

ROOT = Path(__file__).resolve().parent.parent

from llmemory_db.migrate import load, render
from tools.pgserver import Server, bin_dir

PY = sys.executable
VENV = Path(sys.prefix)  # the Pulumi programs' virtualenv: this interpreter's (make bench: .venv)
TOOLS = ["psql_floor", "engine", "pgdbm", "dbmate", "yoyo", "flyway"]
SLOW = {"pgdbm", "yoyo"}
FLYWAY_LIB = ROOT / ".state" / "flyway" / "lib"
UNAVAILABLE = {
    "Flyway 13.x": "its command line needs flyway-core-utilities 13.x, which Maven Central does not serve here; "
                   "Flyway 11.20.3 (the same command line, its Main class run with java) is measured instead",
    "Atlas, Liquibase, sqitch": "no package on the registries this machine reaches ships them",
}
SCHEMA = "bench"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def make_migrations(directory: Path, n: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (directory / f"{i:04d}_t{i}.sql").write_text(
            f"CREATE TABLE {{{{tables.t{i}}}}} (id bigserial PRIMARY KEY, name text NOT NULL, created_at timestamptz "
            f"DEFAULT now());\nCREATE INDEX idx_t{i}_name ON {{{{tables.t{i}}}}} (name);\n")
    return directory


GNU_TIME = Path("/usr/bin/time")


def run_measured(cmd, env=None, cwd=None):
    """Run a process; return (wall seconds, peak RSS in MiB, stdout).

    The peak RSS comes from GNU time (Debian's `time`), which forks the tool from its own small process: the
    rusage of a child forked from this Python process would count the parent's pages copied before exec.
    """
    with tempfile.NamedTemporaryFile("r") as rss_file:
        full = ([str(GNU_TIME), "-f", "%M", "-o", rss_file.name] if GNU_TIME.exists() else []) + [str(c) for c in cmd]
        started = time.perf_counter()
        proc = subprocess.run(full, env=env, cwd=cwd, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        text = rss_file.read().strip().splitlines()
    peak = int(text[-1]) / 1024 if text and text[-1].isdigit() else float("nan")
    return elapsed, peak, proc.stdout


class Bench:
    def __init__(self, server: Server, workdir: Path):
        self.server = server
        self.workdir = workdir

    def fresh_db(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self.server.dsn(database=name), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute("CHECKPOINT")  # every tool starts with the same amount of unflushed WAL: none
        return name

    def drop_db(self, name: str) -> None:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, name: str) -> str:
        return f"postgresql://postgres:{self.server.password}@127.0.0.1:{self.server.port}/{name}"

    # ------------------------------------------------------------------ tools
    def psql_floor(self, mdir: Path, db: str):
        script = self.workdir / f"floor_{mdir.name}.sql"
        if not script.exists():
            parts = []
            for m in load(mdir):
                parts.append(f"BEGIN;\n{render(m.sql, SCHEMA, m.filename)}\nCOMMIT;\n")
            script.write_text("".join(parts))
        env = dict(os.environ, PGPASSWORD=self.server.password)
        return run_measured([str(bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                             "-p", str(self.server.port), "-U", "postgres", "-d", db, "-f", str(script)], env=env)

    def engine(self, mdir: Path, db: str):
        return run_measured([PY, "-m", "llmemory_db.migrate", "apply", "--dsn", self.url(db), "--dir", str(mdir),
                             "--schema", SCHEMA, "--json"], cwd=ROOT)

    def pgdbm(self, mdir: Path, db: str):
        code = textwrap.dedent(f"""
            import asyncio
            from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
            async def main():
                db = AsyncDatabaseManager(DatabaseConfig(connection_string={self.url(db)!r}, schema={SCHEMA!r},
                                                         min_connections=1, max_connections=2))
                await db.connect()
                await AsyncMigrationManager(db, migrations_path={str(mdir)!r}, module_name="aword_memory") \\
                    .apply_pending_migrations()
                await db.disconnect()
            asyncio.run(main())
        """)
        return run_measured([PY, "-c", code], cwd=ROOT)

    def _rendered_copy(self, mdir: Path, kind: str) -> Path:
        """The same migrations, rendered, in the file layout a peer tool expects."""
        out = self.workdir / f"{kind}_{mdir.name}"
        if not out.exists():
            out.mkdir()
            for m in load(mdir):
                sql_text = render(m.sql, SCHEMA, m.filename)
                if kind == "dbmate":
                    (out / m.filename).write_text(f"-- migrate:up\n{sql_text}\n-- migrate:down\n")
                else:
                    (out / m.filename).write_text(sql_text)
        return out

    def flyway(self, mdir: Path, db: str):
        out = self.workdir / f"flyway_{mdir.name}"
        if not out.exists():
            out.mkdir()
            for i, m in enumerate(load(mdir), 1):
                (out / f"V{i}__{m.filename[:-4]}.sql").write_text(render(m.sql, SCHEMA, m.filename))
        return run_measured(["java", "-cp", f"{FLYWAY_LIB}/*", "org.flywaydb.commandline.Main",
                             f"-url=jdbc:postgresql://127.0.0.1:{self.server.port}/{db}", "-user=postgres",
                             f"-password={self.server.password}", f"-locations=filesystem:{out}",
                             "-skipCheckForUpdate", "migrate"])

    def dbmate(self, mdir: Path, db: str):
        url = self.url(db).replace("postgresql://", "postgres://") + "?sslmode=disable"
        return run_measured([str(Path(PY).parent / "dbmate"), "--url", url, "--migrations-dir",
                             str(self._rendered_copy(mdir, "dbmate")), "--no-dump-schema", "up"])

    def yoyo(self, mdir: Path, db: str):
        url = self.url(db).replace("postgresql://", "postgresql+psycopg://")
        return run_measured([str(Path(PY).parent / "yoyo"), "apply", "--batch", "--no-config-file",
                             "--database", url, str(self._rendered_copy(mdir, "yoyo"))])

    # ------------------------------------------------------------------ scenarios
    def apply_and_noop(self, n: int, reps: int, tools):
        """Every repetition runs every tool once, in turn (disk noise then hits all of them alike)."""
        mdir = make_migrations(self.workdir / f"m{n}", n)
        raw = {tool: {"apply": [], "noop": [], "noop_in_process": [], "rss": []} for tool in tools}
        for rep in range(reps):
            for tool in tools:
                if tool in SLOW and n >= 1000 and rep > 0:
                    continue  # quadratic tools: one run at N = 1000
                db = self.fresh_db()
                try:
                    seconds, peak, out = getattr(self, tool)(mdir, db)
                    raw[tool]["apply"].append(seconds)
                    raw[tool]["rss"].append(peak)
                    if tool != "psql_floor":
                        seconds, _, out = getattr(self, tool)(mdir, db)
                        raw[tool]["noop"].append(seconds)
                        if tool == "engine":
                            raw[tool]["noop_in_process"].append(json.loads(out)["duration_ms"] / 1000)
                finally:
                    self.drop_db(db)
        results = {}
        for tool, r in raw.items():
            results[tool] = {"apply": summary(r["apply"]), "noop": summary(r["noop"]) if r["noop"] else None,
                             "noop_in_process": summary(r["noop_in_process"]) if r["noop_in_process"] else None,
                             "peak_rss_mib": round(max(r["rss"]), 1)}
            log(f"N={n} {tool}: apply {results[tool]['apply']['median']:.3f}s"
                + (f", no-op {results[tool]['noop']['median']:.3f}s" if r["noop"] else ""))
        floor = results["psql_floor"]["apply"]["median"]
        for r in results.values():
            r["apply_ratio_to_floor"] = round(r["apply"]["median"] / floor, 2)
        return results

    def drift_cost(self, n: int, reps: int):
        """Refresh cost of schema drift detection: the one catalog query over a schema of N tables."""
        from llmemory_db import migrate
        from llmemory_db.migrate import drift
        from llmemory_db.migrate.objects import managed_objects
        mdir = make_migrations(self.workdir / f"m{n}", n)
        db = self.fresh_db()
        try:
            target = migrate.Settings(mdir, schema=SCHEMA)
            with migrate.connect(self.url(db)) as conn:
                migrate.apply(conn, target)
                managed = managed_objects(migrate.render_files(migrate.load(mdir), target.schema).values(), SCHEMA)
                times, objects = [], {}
                for _ in range(reps):
                    started = time.perf_counter()
                    objects = drift.inspect(conn, SCHEMA, managed, ["vector"])
                    times.append(time.perf_counter() - started)
        finally:
            self.drop_db(db)
        log(f"drift fingerprint over {n} tables ({len(objects)} objects): {statistics.median(times) * 1000:.1f} ms")
        return {"tables": n, "objects": len(objects), "seconds": summary(times)}

    def pulumi_project(self, name: str, n_files: int, k: int, db: str, program: Optional[str] = None) -> Path:
        """A Pulumi project (file backend of its own) on database ``db``; ``program``: its __main__.py (default: K
        MigratedSchema components)."""
        project = self.workdir / name
        project.mkdir(parents=True, exist_ok=True)
        (project / "Pulumi.yaml").write_text(
            f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: {VENV}\n")
        make_migrations(project / "migrations", n_files)
        (project / "__main__.py").write_text(program if program is not None else textwrap.dedent(f"""
            from llmemory_db import MigratedSchema, MigratedSchemaArgs
            for i in range({k}):
                MigratedSchema(f"s{{i}}", MigratedSchemaArgs(schema=f"fan_{{i}}" if {k} > 1 else "bench",
                                                             module_name=f"m{{i}}", extensions=()))
        """))
        env = self.pulumi_env(project)
        subprocess.run(["pulumi", "stack", "init", "b", "--non-interactive"], cwd=project, env=env,
                       capture_output=True, check=True)
        for key, value in (("postgresql:host", "127.0.0.1"), ("postgresql:port", str(self.server.port)),
                           ("postgresql:username", "postgres"), ("postgresql:database", db),
                           ("postgresql:sslmode", "disable")):
            subprocess.run(["pulumi", "config", "set", key, value], cwd=project, env=env, check=True,
                           capture_output=True)
        subprocess.run(["pulumi", "config", "set", "--secret", "postgresql:password", self.server.password],
                       cwd=project, env=env, check=True, capture_output=True)
        return project

    def pulumi_env(self, project: Path):
        backend = project / ".backend"
        backend.mkdir(exist_ok=True)
        # PYTHONPATH: the program and the dynamic provider import this checkout's llmemory_db (from a git worktree
        # the venv's editable install points at another checkout)
        return dict(os.environ, PULUMI_BACKEND_URL=f"file://{backend}", PULUMI_CONFIG_PASSPHRASE="bench",
                    PULUMI_SKIP_UPDATE_CHECK="true", PIP_DISABLE_PIP_VERSION_CHECK="1",
                    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    def pulumi_files(self, n: int, reps: int):
        db = self.fresh_db()
        try:
            project = self.pulumi_project(f"pulumi_n{n}", n, 1, db)
            env = self.pulumi_env(project)
            up, _, _ = run_measured(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive"], env=env,
                                    cwd=project)
            previews = [run_measured(["pulumi", "preview", "--non-interactive", "--expect-no-changes"], env=env,
                                     cwd=project)[0] for _ in range(reps)]
        finally:
            self.drop_db(db)
        log(f"pulumi N={n}: up {up:.2f}s, preview no-op {statistics.median(previews):.2f}s")
        return {"up": up, "preview_noop": summary(previews)}

    def pulumi_fanout(self, k: int, n_files: int):
        db = self.fresh_db()
        try:
            project = self.pulumi_project(f"pulumi_k{k}", n_files, k, db)
            env = self.pulumi_env(project)
            up, _, _ = run_measured(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive"], env=env,
                                    cwd=project)
        finally:
            self.drop_db(db)
        log(f"pulumi K={k} schemas x {n_files} files: up {up:.2f}s")
        return {"up": up}


def summary(values):
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench")
    parser.add_argument("--quick", action="store_true", help="N = 10, 100; no N = 1000, no fan-out")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--sections", default="pulumi,drift,apply",
                        help="comma-separated subset of pulumi,drift,apply; the others keep their figures in --out")
    args = parser.parse_args(argv)
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    if not FLYWAY_LIB.exists():
        log("Flyway's jars are missing (make bench fetches them with mvn): skipping flyway")
        TOOLS.remove("flyway")
    server = Server((ROOT / ".state" / "pg-bench").resolve()).start()
    sections = set(args.sections.split(","))
    results = json.loads(args.out.read_text()) if args.out.exists() and sections != {"pulumi", "drift", "apply"} \
        else {}
    results.update({"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
                    "not_measured": UNAVAILABLE})
    with tempfile.TemporaryDirectory(prefix="llmemory-bench-") as tmp:
        bench = Bench(server, Path(tmp))
        # Pulumi first: after the N = 1,000 runs of every tool the server spends a while flushing
        if "pulumi" in sections:
            results["pulumi_files"] = {str(n): bench.pulumi_files(n, args.reps)
                                       for n in ([1, 100] if args.quick else [1, 100, 1000])}
            results["pulumi_fanout"] = {} if args.quick else {str(k): bench.pulumi_fanout(k, 10) for k in (1, 10, 50)}
        if "drift" in sections:
            results["drift_fingerprint"] = bench.drift_cost(100, 10)
        if "apply" in sections:
            results["apply"] = {str(n): bench.apply_and_noop(n, args.reps, TOOLS) for n in sizes}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
