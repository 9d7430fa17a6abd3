"""Where the engine's time over the psql floor goes, for one schema of N files (issue 24's "~1 ms per file").

    python -m bench.apply_profile [--ns 100,1000] [--reps 3] [--before REF] [--pg-dir .state/pg-prof] [--setup]

Four measurements on the same embedded server, each on a fresh database, tools taking turns:

1. whole processes, at each N: ``psql -f`` of the rendered files, one transaction per file (the bench's floor)
   against ``python -m llmemory_db.migrate apply`` (the engine's command line), and with ``--before REF`` the
   same command line with that git ref's code (exported with ``git archive``): before and after in one run; the
   servers' CPU-seconds too (load on the machine moves wall times, much less CPU); the difference between two Ns
   separates the fixed cost (interpreter, imports) from the cost per file;
2. the engine's own SQL at the largest N: ``migrate.apply`` runs in process once with every ``execute``
   recorded (text, time; with ``--before`` also the code before, in a process of its own); then those texts are
   **replayed** by one psycopg client, one round trip each, next to variants of the code before with one part of
   its bookkeeping taken out (the history row, the ``SET LOCAL``s, the lock and re-check ``SELECT``s) and the
   floor's texts (``BEGIN; file; COMMIT``) sent the same way; the backend's CPU-seconds of each replay (from
   /proc) are the server's cost of each part;
3. pg_stat_statements (when the server preloads it: ``--pg-dir .state/pg-prof`` is set up that way by
   ``--setup``): execution and planning time of every statement of one engine run, the bookkeeping statements
   summed by kind;
4. ``EXPLAIN (ANALYZE, BUFFERS)`` of the re-check ``SELECT`` and the history ``INSERT`` on a history of N rows.

Prints a table; ``--out`` writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent

from bench.bench import PY, SCHEMA, Bench, make_migrations, run_measured
from bench.cpu import children_cpu, server_cpu
from llmemory_db import migrate
from llmemory_db.migrate import load, render
from tools.pgserver import Server


def log(message: str) -> None:
    print(f"[apply-profile] {message}", file=sys.stderr, flush=True)


def capture(url: str, mdir: Path) -> tuple:
    """Run the engine's apply in process, recording every execute: ([(text, params, seconds)], total seconds)."""
    calls = []
    original = psycopg.Connection.execute

    def recording(self, query, params=None, **kwargs):
        text = query if isinstance(query, str) else query.as_string(self)
        started = time.perf_counter()
        try:
            return original(self, query, params, **kwargs)
        finally:
            calls.append((text, params, time.perf_counter() - started))

    psycopg.Connection.execute = recording
    try:
        with migrate.connect(url) as conn:
            pid = conn.info.backend_pid
            started, server, client = time.perf_counter(), backend_cpu(pid), time.process_time()
            migrate.apply(conn, migrate.Settings(mdir, schema=SCHEMA))
            total = (time.perf_counter() - started, backend_cpu(pid) - server, time.process_time() - client)
    finally:
        psycopg.Connection.execute = original
    return calls, total


CAPTURE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import psycopg
from llmemory_db import migrate
calls = []
original = psycopg.Connection.execute
def recording(self, query, params=None, **kwargs):
    text = query if isinstance(query, str) else query.as_string(self)
    started = time.perf_counter()
    try:
        return original(self, query, params, **kwargs)
    finally:
        calls.append((text, list(params) if isinstance(params, (tuple, list)) else params,
                      time.perf_counter() - started))
psycopg.Connection.execute = recording
with migrate.connect(sys.argv[2]) as conn:
    started, cpu = time.perf_counter(), time.process_time()
    migrate.apply(conn, migrate.Settings(sys.argv[3], schema=sys.argv[4]))
    total = [time.perf_counter() - started, 0.0, time.process_time() - cpu]
psycopg.Connection.execute = original
print(json.dumps({"calls": calls, "total": total}))
"""


def capture_with(code: str, url: str, mdir: Path) -> tuple:
    """:func:`capture` with the engine of another checkout (``code``: a folder holding ``llmemory_db``)."""
    out = subprocess.run([sys.executable, "-c", CAPTURE, code, url, str(mdir), SCHEMA], capture_output=True,
                         text=True, check=True).stdout
    data = json.loads(out)
    return [tuple(c) for c in data["calls"]], tuple(data["total"])


_SET_LOCAL = re.compile(r"SET LOCAL [a-z_]+ (?:= '[^']*'|TO [^;]*); ?")
_LOCK = re.compile(r"SELECT CASE WHEN pg_try_advisory_xact_lock\([^;]*; ")
_CHECK = re.compile(r"SELECT \('llmdb:already-applied ' \|\| checksum\)::int FROM [^;]*; ")
_INSERT = re.compile(r"\n; INSERT INTO [^;]*; COMMIT$")


def variants(calls, files, schema: str, after=None) -> dict:
    """The floor's texts, the engine's as recorded (``calls``), the engine's without one part of its bookkeeping,
    and ``after``'s (another recording) when given."""
    engine = [(text, params) for text, params, _ in calls]
    per_file = [i for i, (text, _) in enumerate(engine) if "llmdb:already-applied" in text]

    def changed(fn):
        out = list(engine)
        for i in per_file:
            out[i] = (fn(out[i][0]), None)
        return out

    out = {
        "floor (BEGIN; file; COMMIT)": [(f"BEGIN; {render(m.sql, schema, m.filename)}\n; COMMIT", None)
                                        for m in files],
        "engine": engine,
        "engine without the history INSERT": changed(lambda t: _INSERT.sub("\n; COMMIT", t)),
        "engine without the SET LOCALs": changed(lambda t: _SET_LOCAL.sub("", t)),
        "engine without the try-lock and re-check": changed(lambda t: _CHECK.sub("", _LOCK.sub("", t))),
        # the history table's creation, then the files' round trips (no reads, no privilege checks)
        "engine, file round trips only": [c for c in engine[:per_file[0]] if not c[0].startswith("SELECT")
                                          or "pg_advisory_xact_lock" in c[0]] + [engine[i] for i in per_file],
    }
    if after is not None:
        out["engine after"] = [(text, params) for text, params, _ in after]
    return out


_HZ = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a server process so far (/proc: load on the machine does not change it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


def replay(url: str, texts) -> tuple:
    """Send ``texts`` one round trip each: (wall seconds, the backend's CPU seconds, this client's CPU seconds)."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        pid = conn.info.backend_pid
        started, server, client = time.perf_counter(), backend_cpu(pid), time.process_time()
        for text, params in texts:
            conn.execute(text, params)
        return (time.perf_counter() - started, backend_cpu(pid) - server, time.process_time() - client)


def stat_statements(url: str, texts) -> list:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error as exc:
            log(f"no pg_stat_statements ({exc.diag.message_primary}): run with --setup on a --pg-dir of its own")
            replay(url, texts)  # the history the EXPLAIN that follows reads
            return []
    replay(url, texts)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query, calls, total_exec_time, total_plan_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()").fetchall()
    kinds: dict = {}
    for query, calls, exec_ms, plan_ms in rows:
        q = query.strip()
        kind = ("history INSERT" if q.startswith("INSERT INTO") and "schema_migrations" in q else
                "re-check SELECT" if "checksum)::int" in q else
                "try-lock SELECT" if "pg_try_advisory_xact_lock" in q else
                "SET LOCAL / set_config" if q.startswith("SET LOCAL") or q.startswith("SELECT set_config") else
                "BEGIN" if q.upper() == "BEGIN" else "COMMIT" if q.upper() == "COMMIT" else
                "CREATE TABLE" if q.startswith("CREATE TABLE") else "CREATE INDEX" if q.startswith("CREATE INDEX")
                else "other")
        k = kinds.setdefault(kind, {"calls": 0, "exec_ms": 0.0, "plan_ms": 0.0})
        k["calls"] += calls
        k["exec_ms"] += exec_ms
        k["plan_ms"] += plan_ms
    return sorted(({"kind": k, **{x: round(y, 1) for x, y in v.items()}} for k, v in kinds.items()),
                  key=lambda r: -(r["exec_ms"] + r["plan_ms"]))


def files_last(text: str) -> str:
    return re.search(r"WHERE filename = '([^']*)'", text).group(1)


def explain(url: str, calls) -> dict:
    out = {}
    per_file = [text for text, _, _ in calls if "llmdb:already-applied" in text]
    last = per_file[-1]
    if not _CHECK.search(last) or not _INSERT.search(last):
        return out
    check = _CHECK.search(last).group(0).rstrip("; ")
    insert = _INSERT.search(last).group(0)[3:-len("; COMMIT")]
    insert = insert.replace(f"'{files_last(last)}'", "'explain-probe.sql'", 1)  # a row that is not there yet
    with psycopg.connect(url, autocommit=True) as conn:
        for name, query in (("re-check SELECT", check.replace("::int", "")), ("history INSERT", insert)):
            conn.execute("BEGIN")
            try:
                plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, SUMMARY) " + query).fetchall()
            finally:
                conn.execute("ROLLBACK")
            out[name] = [r[0] for r in plan]
    return out


def engine_cli(bench: Bench, mdir: Path, db: str, code: Path = None):
    """The engine's command line (``code``: another checkout's, run from its folder so that it is imported)."""
    if code is None:
        return bench.engine(mdir, db)
    return run_measured([PY, "-m", "llmemory_db.migrate", "apply", "--dsn", bench.url(db), "--dir", str(mdir),
                         "--schema", SCHEMA, "--json"], cwd=code)


def whole_processes(bench: Bench, mdir: Path, reps: int, before) -> dict:
    tools = ["psql_floor", "engine"] + (["engine_before"] if before else [])
    runs = {tool: [] for tool in tools}
    for rep in range(reps):
        for tool in tools[rep % len(tools):] + tools[:rep % len(tools)]:  # taking turns going first
            db = bench.fresh_db()
            try:
                server, client = server_cpu(bench.server), children_cpu()
                if tool == "psql_floor":
                    seconds = bench.psql_floor(mdir, db)[0]
                else:
                    seconds = engine_cli(bench, mdir, db, before if tool == "engine_before" else None)[0]
                runs[tool].append((seconds, server_cpu(bench.server) - server, children_cpu() - client))
            finally:
                bench.drop_db(db)
    return {tool: {"seconds": round(statistics.median(r[0] for r in rs), 3),
                   "server_cpu_s": round(statistics.median(r[1] for r in rs), 2),
                   "client_cpu_s": round(statistics.median(r[2] for r in rs), 2),
                   "runs": [[round(x, 3) for x in r] for r in rs]} for tool, rs in runs.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apply_profile")
    parser.add_argument("--ns", default="100,1000", help="comma-separated numbers of files")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--before", default=None, metavar="REF", help="also the engine of this git ref")
    parser.add_argument("--pg-dir", type=Path, default=ROOT / ".state" / "pg-prof")
    parser.add_argument("--setup", action="store_true", help="preload pg_stat_statements on --pg-dir (restarts it)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    ns = [int(n) for n in args.ns.split(",")]
    server = Server(args.pg_dir.resolve()).start()
    if args.setup:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            conn.execute("ALTER SYSTEM SET pg_stat_statements.track_utility = on")
            conn.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
        server.stop()
        server.start()
    results: dict = {"ns": ns, "reps": args.reps, "load_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="llmemory-profile-") as tmp:
        before = None
        if args.before:
            before = Path(tmp) / "before"
            before.mkdir()
            archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            results["before"] = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT,
                                               capture_output=True, text=True).stdout.strip()
        bench = Bench(server, Path(tmp))
        # 1. whole processes
        results["whole_process"] = {}
        for n in ns:
            mdir = make_migrations(Path(tmp) / f"m{n}", n)
            results["whole_process"][str(n)] = whole_processes(bench, mdir, args.reps, before)
            log(f"N={n}: " + ", ".join(f"{t} {r['seconds']:.2f}s" for t, r in results["whole_process"][str(n)].items()))
        n = max(ns)
        mdir = Path(tmp) / f"m{n}"
        files = load(mdir)
        # 2. capture, then replay
        db = bench.fresh_db()
        try:
            calls, in_process = capture(bench.url(db), mdir)
        finally:
            bench.drop_db(db)
        results["in_process_apply_s"] = round(in_process[0], 3)
        results["in_process_server_cpu_s"] = round(in_process[1], 3)
        results["in_process_client_cpu_s"] = round(in_process[2], 3)
        results["round_trips"] = len(calls)
        results["client_wait_s"] = round(sum(c[2] for c in calls), 3)
        after = None
        if before is not None:
            db = bench.fresh_db()
            try:
                before_calls, before_total = capture_with(str(before), bench.url(db), mdir)
            finally:
                bench.drop_db(db)
            results["before_in_process_apply_s"] = round(before_total[0], 3)
            results["before_in_process_client_cpu_s"] = round(before_total[2], 3)
            results["before_round_trips"] = len(before_calls)
            calls, after = before_calls, calls
        sets = variants(calls, files, SCHEMA, after)
        times: dict = {name: [] for name in sets}
        for rep in range(args.reps):
            names = list(sets) if rep % 2 == 0 else list(reversed(list(sets)))
            for name in names:
                db = bench.fresh_db()
                try:
                    times[name].append(replay(bench.url(db), sets[name]))
                finally:
                    bench.drop_db(db)
        results["replay"] = {name: round(statistics.median(t[0] for t in runs), 3) for name, runs in times.items()}
        results["replay_server_cpu"] = {name: round(statistics.median(t[1] for t in runs), 3)
                                        for name, runs in times.items()}
        results["replay_client_cpu"] = {name: round(statistics.median(t[2] for t in runs), 3)
                                        for name, runs in times.items()}
        results["replay_runs"] = times
        # 3. pg_stat_statements of one replay of each engine
        for name in ("engine", "engine after"):
            if name in sets:
                db = bench.fresh_db()
                try:
                    results[f"pg_stat_statements ({name})"] = stat_statements(bench.url(db), sets[name])
                    if name == "engine":
                        results["explain"] = explain(bench.url(db), calls)
                finally:
                    bench.drop_db(db)
    results["load_at_end"] = os.getloadavg()
    print_report(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def print_report(results: dict) -> None:
    label = {"psql_floor": "psql floor", "engine": "engine CLI",
             "engine_before": f"engine CLI before ({results.get('before')})"}
    print(f"{results['reps']} runs each, median; load average {results['load_at_start'][0]:.1f} at the start, "
          f"{results['load_at_end'][0]:.1f} at the end")
    extra = {}
    for n, tools in results["whole_process"].items():
        floor = tools["psql_floor"]
        for tool, r in tools.items():
            line = f"N={n:>5} {label[tool]:32} {r['seconds']:7.3f} s   server CPU {r['server_cpu_s']:6.2f} s   " \
                   f"client CPU {r['client_cpu_s']:5.2f} s"
            if tool != "psql_floor":
                extra.setdefault(tool, {})[int(n)] = r["seconds"] - floor["seconds"]
                line += f"   over the floor {r['seconds'] - floor['seconds']:+.3f} s (server CPU " \
                        f"{r['server_cpu_s'] - floor['server_cpu_s']:+.2f})"
            print(line)
    for tool, by_n in extra.items():
        if len(by_n) >= 2:
            lo, hi = min(by_n), max(by_n)
            per_file = (by_n[hi] - by_n[lo]) / (hi - lo)
            print(f"{label[tool]}: over the floor {per_file * 1000:.3f} s per 1,000 files (slope N={lo}..{hi}), "
                  f"fixed {by_n[lo] - per_file * lo:.3f} s")
    print(f"engine in process (N={max(results['ns'])}): {results['in_process_apply_s']:.3f} s, "
          f"{results['round_trips']} round trips, {results['client_wait_s']:.3f} s waiting on them; backend CPU "
          f"{results['in_process_server_cpu_s']:.2f} s, client CPU {results['in_process_client_cpu_s']:.2f} s")
    if "before_in_process_apply_s" in results:
        print(f"engine before in process: {results['before_in_process_apply_s']:.3f} s, "
              f"{results['before_round_trips']} round trips, client CPU "
              f"{results['before_in_process_client_cpu_s']:.2f} s")
    key = "floor (BEGIN; file; COMMIT)"
    floor, floor_cpu = results["replay"][key], results["replay_server_cpu"][key]
    for name, seconds in results["replay"].items():
        cpu = results["replay_server_cpu"][name]
        shown = name.replace("engine", f"engine before ({results['before']})", 1) \
            if results.get("before") and name.startswith("engine") and name != "engine after" else name
        print(f"replay {shown:58} wall {seconds:7.3f} ({seconds - floor:+.3f} vs floor)   backend CPU "
              f"{cpu:6.2f} ({cpu - floor_cpu:+.2f})   client CPU {results['replay_client_cpu'][name]:.2f}")
    for key in [k for k in results if k.startswith("pg_stat_statements")]:
        for row in results[key]:
            print(f"{key} {row['kind']:24} calls {row['calls']:6}  exec {row['exec_ms']:9.1f} ms  "
                  f"plan {row['plan_ms']:8.1f} ms")
    for name, plan in results.get("explain", {}).items():
        print(f"EXPLAIN ANALYZE {name}:\n  " + "\n  ".join(plan))


if __name__ == "__main__":
    raise SystemExit(main())
