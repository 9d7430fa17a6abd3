"""Lock-queue pile-up: what a migration does to a live application while a long reader holds its table.

    python -m bench.pileup [--reps 3] [--sections pileup,costs]

Scenario (each tool on a fresh database of the embedded PostgreSQL 18, tools taking turns in every repetition):

- a table ``t`` of 200,000 rows;
- t = 0: a reader runs ``BEGIN; SELECT count(*) FROM t`` and keeps its transaction open for 12 s (ACCESS SHARE);
- from t = 0: an application inserts one row every 50 ms on its own connection (autocommit, no timeout: it
  waits as long as the server makes it wait), measuring each insert's latency; and ``pgbench -c 2`` runs a
  custom script (a SELECT by primary key, an INSERT) on the same table, logging every transaction (``-l``);
- t = 1 s: a migration process starts: ``ALTER TABLE t ADD COLUMN extra int`` (ACCESS EXCLUSIVE). It cannot get
  its lock before the reader commits, and while it waits in the lock queue every later request for the table
  (the application's inserts, pgbench) queues behind it: the pile-up.

Tools: pgdbm 0.5 (AsyncMigrationManager, its default DatabaseConfig), this engine as it was before issue 11
(``--lock-timeout 0``: wait as long as it takes) and this engine with its defaults (lock_timeout 2 s, the file
retried with backoff until lock_retry_timeout 60 s). A monitor polls pg_stat_activity every 50 ms for the
migration's lock waits and the catalog for the new column (when it committed).

Second section, the cost of the risk analysis: ``risk.analyze`` over llmemory's own two migrations (both pending,
live connection; what ``pulumi preview`` adds in process), median of 10; ``python -m llmemory_db.migrate lint``
over 1,000 generated files, median of 5, without and with ``--dsn``.

Writes bench/pileup-results.json and docs/bench-pileup.png; ``python -m bench.report`` prints the README table.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent

from tools.pgserver import Server, client_bin_dir

PY = sys.executable
OUT = ROOT / "bench" / "pileup-results.json"
PLOT = ROOT / "docs" / "bench-pileup.png"
TOOLS = ["pgdbm", "engine_before", "engine"]
LABELS = {"pgdbm": "pgdbm 0.5 (its defaults)",
          "engine_before": "this engine before issue 11 (--lock-timeout 0)",
          "engine": "this engine, defaults (lock_timeout 2 s, retried until 60 s)"}
ROWS = 200_000
READER_HOLD = 12.0      # seconds the reader's transaction stays open
MIGRATION_AT = 1.0      # seconds after the reader took its lock
APP_INTERVAL = 0.05     # one application insert every 50 ms
WINDOW = 25.0           # how long the application and pgbench run
PGBENCH_CLIENTS = 2
MIGRATION_DEADLINE = 90.0  # a migration still running then is killed (none should be)
MODULE = "pileup"
MIGRATION_SQL = "ALTER TABLE {{tables.t}} ADD COLUMN extra int;\n"
PGBENCH_SCRIPT = """\\set id random(1, %d)
SELECT id, payload FROM t WHERE id = :id;
INSERT INTO t (payload) VALUES ('pgbench');
""" % ROWS


def log(message: str) -> None:
    print(f"[pileup] {message}", file=sys.stderr, flush=True)


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}


# ---------------------------------------------------------------------------------------------- the scenario

class Scenario:
    def __init__(self, server: Server, workdir: Path):
        self.server = server
        self.workdir = workdir
        self.mdir = workdir / "migrations"
        self.mdir.mkdir(parents=True, exist_ok=True)
        (self.mdir / "001_pileup.sql").write_text(MIGRATION_SQL)
        (workdir / "pgbench.sql").write_text(PGBENCH_SCRIPT)

    def url(self, db: str) -> str:
        return f"postgresql://postgres:{self.server.password}@127.0.0.1:{self.server.port}/{db}"

    def fresh_db(self) -> str:
        name = f"pileup_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self.server.dsn(database=name), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL, "
                         "created_at timestamptz NOT NULL DEFAULT now())")
            conn.execute(f"INSERT INTO t (payload) SELECT 'row ' || g FROM generate_series(1, {ROWS}) g")
            conn.execute("VACUUM ANALYZE t")
            conn.execute("CHECKPOINT")
        return name

    def drop_db(self, name: str) -> None:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def migration_cmd(self, tool: str, db: str):
        if tool == "pgdbm":
            code = textwrap.dedent(f"""
                import asyncio, json, sys
                from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
                async def main():
                    config = DatabaseConfig(connection_string={self.url(db)!r}, min_connections=1, max_connections=2)
                    db = AsyncDatabaseManager(config)
                    await db.connect()
                    seen = {{name: await db.fetch_value("SELECT current_setting($1)", name)
                            for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")}}
                    seen["asyncpg command_timeout"] = config.command_timeout
                    print("pgdbm pool settings: " + json.dumps(seen), file=sys.stderr, flush=True)
                    try:
                        result = await AsyncMigrationManager(db, migrations_path={str(self.mdir)!r},
                                                             module_name={MODULE!r}).apply_pending_migrations()
                        print(json.dumps(result, default=str))
                    except Exception as exc:
                        cause = exc.__cause__
                        print(f"pgdbm failed: {{type(exc).__name__}}: {{exc}}; sql_error: "
                              f"{{getattr(exc, 'sql_error', None)}}; cause: {{type(cause).__name__}}: {{cause}}",
                              file=sys.stderr, flush=True)
                        sys.exit(1)
                    finally:
                        await db.disconnect()
                asyncio.run(main())
            """)
            return [PY, "-c", code]
        cmd = [PY, "-m", "llmemory_db.migrate", "apply", "--dsn", self.url(db), "--dir", str(self.mdir),
               "--module", MODULE, "--json"]
        return cmd + (["--lock-timeout", "0"] if tool == "engine_before" else [])

    def run(self, tool: str) -> dict:
        db = self.fresh_db()
        try:
            return self._run(tool, db)
        finally:
            self.drop_db(db)

    def _run(self, tool: str, db: str) -> dict:
        dsn = self.server.dsn(database=db)
        logdir = Path(tempfile.mkdtemp(prefix="pgbench-", dir=self.workdir))
        stop_app = threading.Event()
        stop_monitor = threading.Event()
        app_trace, monitor = [], {"waits": [], "queue": [], "column_at": None}

        log_offset = self.server.log_file.stat().st_size if self.server.log_file.exists() else 0
        # the reader: its ACCESS SHARE lock is held from here until it commits
        reader = psycopg.connect(dsn, application_name="pileup-reader")
        reader.execute("SELECT count(*) FROM t").fetchone()
        t0 = time.time()

        def app() -> None:
            conn = psycopg.connect(dsn, autocommit=True, application_name="pileup-app")
            tick = t0
            while not stop_app.is_set():
                tick += APP_INTERVAL
                now = time.time()
                if tick < now:  # after a stall: next tick from now (no burst of the missed ones)
                    tick = now
                else:
                    time.sleep(tick - now)
                started = time.time()
                try:
                    conn.execute("INSERT INTO t (payload) VALUES ('app')")
                    app_trace.append((started - t0, time.time() - started, None))
                except psycopg.Error as exc:
                    app_trace.append((started - t0, time.time() - started, f"{exc.sqlstate}: {str(exc).strip()}"))
                    if conn.broken or conn.closed:
                        conn = psycopg.connect(dsn, autocommit=True, application_name="pileup-app")
            conn.close()

        def watch() -> None:
            conn = psycopg.connect(dsn, autocommit=True, application_name="pileup-monitor")
            waiting_since = None
            while not stop_monitor.is_set():
                now = time.time() - t0
                rows = conn.execute(
                    "SELECT application_name, query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'").fetchall()
                migration_waits = any("ADD COLUMN extra" in (q or "") for _, q in rows)
                monitor["queue"].append((round(now, 3), len(rows)))
                if migration_waits and waiting_since is None:
                    waiting_since = now
                elif not migration_waits and waiting_since is not None:
                    monitor["waits"].append((round(waiting_since, 3), round(now, 3)))
                    waiting_since = None
                if monitor["column_at"] is None and conn.execute(
                        "SELECT 1 FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'extra' "
                        "AND NOT attisdropped").fetchone():
                    monitor["column_at"] = round(now, 3)
                stop_monitor.wait(0.05)
            if waiting_since is not None:
                monitor["waits"].append((round(waiting_since, 3), round(time.time() - t0, 3)))
            conn.close()

        threads = [threading.Thread(target=app, daemon=True), threading.Thread(target=watch, daemon=True)]
        for thread in threads:
            thread.start()
        env = dict(os.environ, PGPASSWORD=self.server.password)
        pgbench = subprocess.Popen(
            [str(client_bin_dir() / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(self.server.port), "-U",
             "postgres", "-c", str(PGBENCH_CLIENTS), "-j", "1", "-T", str(int(WINDOW)), "-f",
             str(self.workdir / "pgbench.sql"), "-l", "--log-prefix", str(logdir / "tx"), db],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        time.sleep(max(0.0, t0 + MIGRATION_AT - time.time()))
        migration_start = time.time() - t0
        mig_out, mig_err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        migration = subprocess.Popen(self.migration_cmd(tool, db), cwd=ROOT, stdout=mig_out, stderr=mig_err,
                                     text=True)
        migration_end = None

        def poll_migration() -> None:
            nonlocal migration_end
            if migration_end is None and migration.poll() is not None:
                migration_end = time.time() - t0

        while time.time() < t0 + READER_HOLD:
            poll_migration()
            time.sleep(0.01)
        reader.commit()  # the reader ends
        reader_end = time.time() - t0
        reader.close()
        log(f"  {tool}: reader committed at {reader_end:.2f}s")

        while time.time() < t0 + WINDOW or (migration_end is None and time.time() < t0 + MIGRATION_DEADLINE):
            poll_migration()
            if migration_end is not None and time.time() >= t0 + WINDOW:
                break
            time.sleep(0.01)
        killed = False
        if migration_end is None:
            poll_migration()
        if migration_end is None:
            migration.kill()
            migration.wait()
            killed = True
        stop_app.set()
        pg_out, pg_err = pgbench.communicate(timeout=60)
        time.sleep(0.2)
        stop_monitor.set()
        for thread in threads:
            thread.join(timeout=10)
        mig_out.seek(0)
        mig_err.seek(0)
        stdout, stderr = mig_out.read(), mig_err.read()
        with psycopg.connect(dsn, autocommit=True) as conn:
            applied = conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = 't'::regclass AND "
                                   "attname = 'extra' AND NOT attisdropped").fetchone() is not None
            recorded = conn.execute("SELECT count(*) FROM public.schema_migrations WHERE module_name = %s",
                                    (MODULE,)).fetchone()[0] if conn.execute(
                "SELECT to_regclass('public.schema_migrations')").fetchone()[0] else 0
        pgb = parse_pgbench(logdir, pg_out, pg_err, pgbench.returncode, t0)
        result = self._result(tool, app_trace, monitor, pgb, migration.returncode, killed, stdout, stderr, applied,
                              recorded, migration_start, migration_end, reader_end)
        result["migration"]["server_lock_timeouts"] = self.lock_timeouts(log_offset)
        return result

    def lock_timeouts(self, offset: int) -> dict:
        """The server log's 'canceling statement due to lock timeout' errors during the run, by the statement
        that failed: the migration's whole batch (it starts with BEGIN) or a statement sent on its own."""
        if not self.server.log_file.exists():
            return {}
        with open(self.server.log_file, errors="replace") as handle:
            handle.seek(offset)
            lines = handle.read().splitlines()
        counts = {"whole_batch": 0, "statement_alone": 0}
        for index, line in enumerate(lines):
            if "canceling statement due to lock timeout" in line:
                following = next((l for l in lines[index + 1:index + 3] if "STATEMENT:" in l), "")
                text = following.split("STATEMENT:", 1)[1].strip() if following else ""
                counts["whole_batch" if text.startswith("BEGIN") else "statement_alone"] += 1
        return counts

    @staticmethod
    def _result(tool, app_trace, monitor, pgb, code, killed, stdout, stderr, applied, recorded, migration_start,
                migration_end, reader_end) -> dict:
        ok = [lat for _, lat, err in app_trace if err is None]
        errors = [err for _, _, err in app_trace if err is not None]
        lock_waits = [list(w) for w in monitor["waits"]]
        result = {
            "tool": tool,
            "app": {"inserts": len(app_trace), "failed": len(errors), "errors": sorted(set(errors))[:5],
                    "worst_ms": round(max(lat for _, lat, _ in app_trace) * 1000, 1),
                    "p50_ms": round(statistics.median(ok) * 1000, 2) if ok else None,
                    "stalled_over_100ms_s": round(sum(lat for _, lat, _ in app_trace if lat > 0.1), 2)},
            "pgbench": {k: v for k, v in pgb.items() if k != "trace"},
            "migration": {
                "exit_code": code, "killed": killed, "applied": applied, "history_rows": recorded,
                "started_at_s": round(migration_start, 3),
                "ended_at_s": round(migration_end, 3) if migration_end is not None else None,
                "process_seconds": round(migration_end - migration_start, 2) if migration_end is not None else None,
                "column_committed_at_s": monitor["column_at"],
                "applied_after_s": round(monitor["column_at"] - migration_start, 2)
                if applied and monitor["column_at"] is not None else None,
                "lock_waits": lock_waits, "lock_wait_count": len(lock_waits),
                "lock_waited_s": round(sum(e - s for s, e in lock_waits), 2),
                "stderr": stderr.strip()[-3000:], "stdout": stdout.strip()[-1500:]},
            "reader_end_s": round(reader_end, 3),
            "max_lock_queue": max((n for _, n in monitor["queue"]), default=0),
            "trace": {"app": [[round(t, 3), round(lat * 1000, 1), 0 if err is None else 1] for t, lat, err in app_trace],
                      "pgbench_max_ms_per_100ms": pgb["trace"]},
        }
        m = result["migration"]
        log(f"  {tool}: app worst {result['app']['worst_ms']:.0f} ms, failed {result['app']['failed']}/"
            f"{result['app']['inserts']}; pgbench worst {pgb['worst_ms']:.0f} ms, failed {pgb['failed']}; "
            f"migration {'applied' if applied else 'NOT applied'} (exit {code}) after "
            f"{m['applied_after_s'] if applied else m['process_seconds']} s; lock waits {lock_waits}")
        return result


def parse_pgbench(logdir: Path, out: str, err: str, code: int, t0: float) -> dict:
    """Per-transaction log lines: client_id transaction_no time script_no time_epoch time_us (time: µs, or
    'failed'); the summary's failed count and aborted clients from its output."""
    latencies, failed, buckets = [], 0, {}
    for path in glob.glob(str(logdir / "tx*")):
        with open(path) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) < 6:
                    continue
                if parts[2] == "failed":
                    failed += 1
                    continue
                if parts[2] == "skipped":
                    continue
                latency_ms = int(parts[2]) / 1000
                latencies.append(latency_ms)
                done = int(parts[4]) + int(parts[5]) / 1e6 - t0
                start = done - latency_ms / 1000
                key = round(int(start * 10) / 10, 1)  # by start time: a stalled transaction shows where it began
                buckets[key] = max(buckets.get(key, 0.0), latency_ms)
    summary_failed = re.search(r"number of failed transactions: (\d+)", out)
    aborted = len(re.findall(r"client \d+ aborted", err))
    return {"transactions": len(latencies), "failed": max(failed, int(summary_failed.group(1)) if summary_failed else 0),
            "aborted_clients": aborted, "exit_code": code,
            "worst_ms": round(max(latencies), 1) if latencies else float("nan"),
            "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "stderr": err.strip()[-1000:],
            "trace": [[k, round(v, 1)] for k, v in sorted(buckets.items())]}


def pileup(server: Server, reps: int) -> dict:
    runs = {tool: [] for tool in TOOLS}
    with tempfile.TemporaryDirectory(prefix="llmemory-pileup-") as tmp:
        scenario = Scenario(server, Path(tmp))
        for rep in range(reps):
            order = TOOLS[rep % len(TOOLS):] + TOOLS[:rep % len(TOOLS)]  # tools take turns going first
            for tool in order:
                log(f"rep {rep + 1}/{reps}: {tool}")
                result = scenario.run(tool)
                result["rep"] = rep + 1
                runs[tool].append(result)
    summaries = {}
    for tool, rs in runs.items():
        summaries[tool] = {
            "app_worst_ms": summary([r["app"]["worst_ms"] for r in rs]),
            "app_failed": summary([r["app"]["failed"] for r in rs]),
            "pgbench_worst_ms": summary([r["pgbench"]["worst_ms"] for r in rs]),
            "pgbench_failed": summary([r["pgbench"]["failed"] + r["pgbench"]["aborted_clients"] for r in rs]),
            "applied": sum(r["migration"]["applied"] for r in rs), "runs": len(rs),
            "applied_after_s": summary([r["migration"]["applied_after_s"] for r in rs]),
            "process_seconds": summary([r["migration"]["process_seconds"] for r in rs]),
            "lock_wait_count": summary([r["migration"]["lock_wait_count"] for r in rs]),
            "lock_waited_s": summary([r["migration"]["lock_waited_s"] for r in rs]),
            "app_stalled_s": summary([r["app"]["stalled_over_100ms_s"] for r in rs]),
            "server_lock_timeouts": summary([sum(r["migration"]["server_lock_timeouts"].values()) for r in rs]),
            "reader_end_s": summary([r["reader_end_s"] for r in rs]),
            "migration_started_at_s": summary([r["migration"]["started_at_s"] for r in rs]),
        }
    return {"runs": runs, "summary": summaries}


# ---------------------------------------------------------------------------------------------- the costs

def costs(server: Server) -> dict:
    from bench.bench import make_migrations
    from llmemory_db.migrate import executor, risk
    from llmemory_db.migrate.settings import Settings

    out = {}
    name = f"pileup_cost_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres:{server.password}@127.0.0.1:{server.port}/{name}"
    try:
        settings = Settings(migrations_package="llmemory", schema="llmemory")
        from llmemory_db.migrate.connection import connect
        with connect(url) as conn:
            current = executor.status(conn, settings)
            pending = current.plan.pending
            rendered, _ = executor.lint_pending(pending, settings)
            times, report = [], None
            for _ in range(10):
                started = time.perf_counter()
                report = risk.analyze(pending, rendered, settings, conn)
                times.append(time.perf_counter() - started)
        out["risk_analyze"] = {"files": [m.filename for m in pending], "findings": len(report.findings),
                               "bytes": sum(len(t) for t in rendered.values()), "seconds": summary(times)}
        log(f"risk.analyze over llmemory's {len(pending)} pending files: {statistics.median(times) * 1000:.0f} ms "
            f"(median of 10; {len(report.findings)} findings)")

        with tempfile.TemporaryDirectory(prefix="llmemory-lint-") as tmp:
            mdir = make_migrations(Path(tmp) / "m1000", 1000)
            lint = {}
            for label, extra in (("without_dsn", []), ("with_dsn", ["--dsn", url])):
                times = []
                for _ in range(5):
                    started = time.perf_counter()
                    proc = subprocess.run([PY, "-m", "llmemory_db.migrate", "lint", "--dir", str(mdir), "--schema",
                                           "bench", *extra], cwd=ROOT, capture_output=True, text=True)
                    times.append(time.perf_counter() - started)
                    if proc.returncode != 0:
                        raise RuntimeError(f"lint failed ({proc.returncode}): {proc.stderr[-2000:]}")
                lint[label] = {"seconds": summary(times), "output_head": proc.stdout.splitlines()[0]}
                log(f"lint over 1,000 files {label}: {statistics.median(times):.2f} s (median of 5)")
            out["lint_1000"] = lint
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


# ---------------------------------------------------------------------------------------------- report, plot

def _s(x, unit="s", digits=2, scale=1.0):
    if x is None:
        return "–"
    median = x["median"] * scale
    if x["n"] == 1:
        return f"{median:.{digits}f} {unit} (1 run)"
    if x["min"] == x["max"]:
        return f"{median:.{digits}f} {unit}"
    return f"{median:.{digits}f} {unit} ({x['min'] * scale:.{digits}f}–{x['max'] * scale:.{digits}f})"


def table(results: dict) -> str:
    """The README's table (median (min–max) over the repetitions)."""
    rows = ["| tool | app worst insert latency | app failed inserts | pgbench worst latency | pgbench failed "
            "transactions | migration applied | applied after (from its start) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    p = results.get("pileup", {}).get("summary", {})
    for tool in TOOLS:
        if tool not in p:
            continue
        s = p[tool]
        applied = f"{s['applied']} of {s['runs']} runs"
        runs = results["pileup"]["runs"][tool]
        if s["applied"] == 0:
            end = s["process_seconds"]
            reason = _reason(runs[0])
            after = f"– (failed after {_s(end)}{': ' + reason if reason else ''})"
        else:
            after = _s(s["applied_after_s"])
        count = lambda x: "–" if x is None else (f"{x['median']:.0f}" if x["min"] == x["max"]
                                                 else f"{x['median']:.0f} ({x['min']:.0f}–{x['max']:.0f})")
        rows.append(f"| {LABELS[tool]} | {_s(s['app_worst_ms'], 's', 2, 0.001)} | {count(s['app_failed'])} | "
                    f"{_s(s['pgbench_worst_ms'], 's', 2, 0.001)} | {count(s['pgbench_failed'])} | {applied} | {after} |")
    out = "\n".join(rows)
    if p:
        out += "\n\nTime the application spent in inserts slower than 100 ms (its stalls), and the migration's lock " \
               "waits (pg_stat_activity, polled every 50 ms; lock timeouts from the server log): " + "; ".join(
                   f"{LABELS[tool].split(' (')[0]}: stalled {_s(p[tool]['app_stalled_s'])}, "
                   f"waited {_s(p[tool]['lock_waited_s'])} in {p[tool]['lock_wait_count']['median']:.0f} wait(s), "
                   f"{p[tool]['server_lock_timeouts']['median']:.0f} lock timeout(s)"
                   for tool in TOOLS if tool in p) + "."
    c = results.get("costs")
    if c:
        r = c["risk_analyze"]
        out += (f"\n\nRisk analysis at preview (`risk.analyze` over llmemory's {len(r['files'])} pending files, "
                f"live connection): **{r['seconds']['median'] * 1000:.0f} ms** "
                f"({r['seconds']['min'] * 1000:.0f}–{r['seconds']['max'] * 1000:.0f}, median of {r['seconds']['n']}).")
        lint = c["lint_1000"]
        out += (f"\n`python -m llmemory_db.migrate lint` over 1,000 files: **{_s(lint['without_dsn']['seconds'])}** "
                f"without `--dsn`, **{_s(lint['with_dsn']['seconds'])}** with it (whole process, median of "
                f"{lint['with_dsn']['seconds']['n']}).")
    return out


def _reason(run: dict) -> str:
    err = run["migration"]["stderr"]
    if "lock timeout" in err or "LockNotAvailable" in err:
        return "lock timeout"
    return ""


def plot(results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = results["pileup"]["runs"]
    fig, axes = plt.subplots(len(TOOLS), 1, figsize=(11, 8.5), sharex=True, sharey=True)
    for index, (ax, tool) in enumerate(zip(axes, TOOLS)):
        runs = p[tool]
        # the repetition whose worst application latency is the median one
        run = sorted(runs, key=lambda r: r["app"]["worst_ms"])[len(runs) // 2]
        pg = run["trace"]["pgbench_max_ms_per_100ms"]
        # every request drawn at the moment it was sent, as high as it took: a stall is one tall stem
        ax.vlines([t for t, _ in pg], 0, [ms / 1000 for _, ms in pg], color="0.6", lw=2.5, alpha=0.5,
                  label="pgbench: worst latency of the transactions started in each 100 ms")
        app = run["trace"]["app"]
        ax.vlines([t for t, _, _ in app], 0, [ms / 1000 for _, ms, _ in app], color=f"C{index}", lw=1.2)
        ax.plot([t for t, _, _ in app], [ms / 1000 for _, ms, _ in app], color=f"C{index}", ls="none", marker=".",
                ms=4, label="application: each insert's latency, at the time it was sent")
        failed = [(t, ms) for t, ms, bad in app if bad]
        if failed:
            ax.plot([t for t, _ in failed], [ms / 1000 for _, ms in failed], "rx", label="failed insert")
        for n, (start, end) in enumerate(run["migration"]["lock_waits"]):
            ax.axvspan(start, end, color="orange", alpha=0.18, label="migration waits for its lock" if n == 0 else None)
        m = run["migration"]
        ax.axvline(m["started_at_s"], color="k", ls="--", lw=1, label="migration starts")
        ax.axvline(run["reader_end_s"], color="purple", ls=":", lw=2, zorder=5, label="reader commits")
        if m["column_committed_at_s"] is not None:
            ax.axvline(m["column_committed_at_s"], color="green", lw=1.2, label="migration committed")
        elif m["ended_at_s"] is not None:
            ax.axvline(m["ended_at_s"], color="red", lw=1.2, label="migration failed")
        ax.set_title(f"{LABELS[tool]} — app worst {run['app']['worst_ms'] / 1000:.2f} s, "
                     f"{run['app']['failed']} failed; migration "
                     + (f"applied after {m['applied_after_s']:.1f} s" if m["applied"] else "NOT applied")
                     + f" (rep {run['rep']})", fontsize=10)
        ax.set_ylabel("latency, s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds since the reader took its lock (reader holds it 12 s; migration starts at 1 s)")
    fig.suptitle(f"Lock-queue pile-up: ALTER TABLE ADD COLUMN on a {ROWS:,}-row table behind a 12 s reader",
                 fontsize=11)
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    log(f"plot in {PLOT}")


def dumps(results: dict) -> str:
    """JSON with every innermost list of numbers on one line (the traces stay readable and small)."""
    text = json.dumps(results, indent=1)
    return re.sub(r"\[\s*([-0-9.eE,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)).replace(",", ", ")
                  + "]", text) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pileup")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sections", default="pileup,costs", help="comma-separated subset of pileup,costs; the "
                                                                   "other keeps its figures in --out")
    parser.add_argument("--pg-dir", type=Path, default=ROOT / ".state" / "pg-bench",
                        help="the embedded server's folder (default: the bench's, .state/pg-bench)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    results = json.loads(args.out.read_text()) if args.out.exists() and sections != {"pileup", "costs"} else {}
    server = Server(args.pg_dir.resolve()).start()
    with psycopg.connect(server.dsn()) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    pgbench_version = subprocess.run([str(client_bin_dir() / "pgbench"), "--version"], capture_output=True,
                                     text=True).stdout.strip()
    import pgdbm
    results.update({"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "server": version,
                                "pgbench": pgbench_version, "pgdbm": getattr(pgdbm, "__version__", "?"),
                                "load_average_at_start": os.getloadavg()},
                    "config": {"rows": ROWS, "reader_hold_s": READER_HOLD, "migration_at_s": MIGRATION_AT,
                               "app_interval_s": APP_INTERVAL, "window_s": WINDOW,
                               "pgbench": f"-c {PGBENCH_CLIENTS} -j 1 -T {int(WINDOW)} -n -l, script: "
                                          + PGBENCH_SCRIPT.replace("\n", " ").strip(),
                               "migration": MIGRATION_SQL.strip()}})
    if "pileup" in sections:
        results["pileup"] = pileup(server, args.reps)
    if "costs" in sections:
        results["costs"] = costs(server)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.write_text(dumps(results))
    log(f"results in {args.out}")
    if results.get("pileup"):
        plot(results)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
