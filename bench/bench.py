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

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.migrate import load, render  # noqa: E402
from tools.pgserver import Server, bin_dir  # noqa: E402

PY = sys.executable
TOOLS = ["psql_floor", "engine", "pgdbm", "dbmate", "yoyo"]
UNAVAILABLE = {
    "flyway": "Flyway's command line needs its own JRE bundle or a Maven build of flyway-commandline with its "
              "database plugins; not attempted in this harness yet (dbmate and yoyo cover the peer tools)",
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


def run_measured(cmd, env=None, cwd=None):
    """Like run() but also the peak RSS of the process (via wait4)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024, stdout


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
        return run_measured([PY, "-m", "components.migrate", "apply", "--dsn", self.url(db), "--dir", str(mdir),
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
        mdir = make_migrations(self.workdir / f"m{n}", n)
        results = {}
        for tool in tools:
            reps_here = 1 if (tool in ("pgdbm", "yoyo") and n >= 1000) else reps
            apply_t, noop_t, rss, noop_inproc = [], [], [], []
            for _ in range(reps_here):
                db = self.fresh_db()
                try:
                    seconds, peak, out = getattr(self, tool)(mdir, db)
                    apply_t.append(seconds)
                    rss.append(peak)
                    if tool != "psql_floor":
                        seconds, _, out = getattr(self, tool)(mdir, db)
                        noop_t.append(seconds)
                        if tool == "engine":
                            noop_inproc.append(json.loads(out)["duration_ms"] / 1000)
                finally:
                    self.drop_db(db)
            results[tool] = {"apply": summary(apply_t), "noop": summary(noop_t) if noop_t else None,
                             "noop_in_process": summary(noop_inproc) if noop_inproc else None,
                             "peak_rss_mib": max(rss)}
            log(f"N={n} {tool}: apply {results[tool]['apply']['median']:.3f}s"
                + (f", no-op {results[tool]['noop']['median']:.3f}s" if noop_t else ""))
        floor = results["psql_floor"]["apply"]["median"]
        for tool, r in results.items():
            r["apply_ratio_to_floor"] = round(r["apply"]["median"] / floor, 2)
        return results

    def pulumi_project(self, name: str, n_files: int, k: int, db: str) -> Path:
        project = self.workdir / name
        project.mkdir(parents=True, exist_ok=True)
        (project / "Pulumi.yaml").write_text(
            f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT / '.venv'}\n")
        make_migrations(project / "migrations", n_files)
        (project / "__main__.py").write_text(textwrap.dedent(f"""
            from components import MigratedSchema, MigratedSchemaArgs
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
        return dict(os.environ, PULUMI_BACKEND_URL=f"file://{backend}", PULUMI_CONFIG_PASSPHRASE="bench",
                    PULUMI_SKIP_UPDATE_CHECK="true")

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
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    server = Server((ROOT / ".state" / "pg-bench").resolve()).start()
    results = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
               "not_measured": UNAVAILABLE,
               "apply": {}, "pulumi_files": {}, "pulumi_fanout": {}}
    with tempfile.TemporaryDirectory(prefix="llmemory-bench-") as tmp:
        bench = Bench(server, Path(tmp))
        for n in sizes:
            results["apply"][str(n)] = bench.apply_and_noop(n, args.reps, TOOLS)
        for n in ([1, 100] if args.quick else [1, 100, 1000]):
            results["pulumi_files"][str(n)] = bench.pulumi_files(n, args.reps)
        if not args.quick:
            for k in (1, 10, 50):
                results["pulumi_fanout"][str(k)] = bench.pulumi_fanout(k, 10)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
