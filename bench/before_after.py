"""Does the redesign (issue 21) cost speed? The same operations with an earlier commit's code and with this
checkout's, side by side in one run, taking turns (the machine's noise hits both alike).

    git worktree add /tmp/before 43aae42        # the code before (any checkout of the package)
    python -m bench.before_after --code /tmp/before [--n 1000] [--reps 5]

Measured, each a whole process: ``apply`` of N generated files on one schema (the engine's command line) against
the psql floor (the same rendered SQL, one transaction per file, one session), a no-change ``pulumi preview``
of a one-component stack, and ``pulumi up`` from empty of one component with ``--up-n`` files. The earlier code is put first on ``PYTHONPATH`` (the venv's own install is this
checkout). Writes bench/before-after-results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.bench import SCHEMA, Bench, log, make_migrations, run_measured
from tools.pgserver import Server

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "before-after-results.json"


def noop_previews(bench: Bench, code: dict, reps: int) -> dict:
    """A no-change ``pulumi preview`` of a one-component stack (10 files) per code, taking turns."""
    envs, dbs, times = {}, [], {label: [] for label in code}
    try:
        for label, path in code.items():
            db = bench.fresh_db()
            dbs.append(db)
            project = bench.pulumi_project(f"preview_{label}", 10, 1, db)
            env = dict(bench.pulumi_env(project), PYTHONPATH=str(path))
            up = run_measured(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive"], env=env, cwd=project)
            envs[label] = (env, project)
            log(f"preview project {label}: up {up[0]:.2f}s")
        for rep in range(reps):
            for label, (env, project) in envs.items():
                seconds = run_measured(["pulumi", "preview", "--non-interactive", "--expect-no-changes"], env=env,
                                       cwd=project)[0]
                times[label].append(seconds)
                log(f"no-change preview rep {rep + 1}: {label} {seconds:.2f}s")
    finally:
        for db in dbs:
            bench.drop_db(db)
    return times


def ups(bench: Bench, code: dict, n: int, reps: int) -> dict:
    """``pulumi up`` from empty of a one-component stack of ``n`` files per code, taking turns (a fresh database and
    project each time): what a first deployment costs, the check's preflight included."""
    times = {label: [] for label in code}
    for rep in range(reps):
        for label, path in code.items():
            db = bench.fresh_db()
            try:
                project = bench.pulumi_project(f"up_{label}_{rep}", n, 1, db)
                env = dict(bench.pulumi_env(project), PYTHONPATH=str(path))
                seconds = run_measured(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive"], env=env,
                                       cwd=project)[0]
            finally:
                bench.drop_db(db)
            times[label].append(seconds)
            log(f"pulumi up N={n} rep {rep + 1}: {label} {seconds:.2f}s")
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after")
    parser.add_argument("--code", type=Path, required=True, help="a checkout of the earlier code")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--up-n", type=int, default=1000, help="files of the `pulumi up` from empty (0: skip it)")
    args = parser.parse_args(argv)
    server = Server(ROOT / ".state" / "pg-bench").start()
    bench = Bench(server, Path(tempfile.mkdtemp(prefix="before-after-")))
    codes = {"before": {"PYTHONPATH": str(args.code.resolve())}, "after": {}}
    mdir = make_migrations(bench.workdir / f"m{args.n}", args.n)
    times = {"floor": [], "before": [], "after": []}
    for rep in range(args.reps):
        for label in ("floor", "before", "after"):
            db = bench.fresh_db()
            try:
                if label == "floor":
                    seconds = bench.psql_floor(mdir, db)[0]
                else:
                    env = dict(os.environ, **codes[label])
                    seconds = run_measured([sys.executable, "-m", "llmemory_db.migrate", "apply", "--dsn",
                                            bench.url(db), "--dir", str(mdir), "--schema", SCHEMA, "--json"],
                                           env=env, cwd=args.code if label == "before" else ROOT)[0]
            finally:
                bench.drop_db(db)
            times[label].append(seconds)
            log(f"apply N={args.n} rep {rep + 1}: {label} {seconds:.2f}s")
    previews = noop_previews(bench, {"before": args.code.resolve(), "after": ROOT}, args.reps)
    code = {"before": args.code.resolve(), "after": ROOT}
    up_times = ups(bench, code, args.up_n, min(args.reps, 3)) if args.up_n else {}
    result = {"n": args.n, "reps": args.reps, "apply_s": {k: statistics.median(v) for k, v in times.items()},
              "apply_runs_s": times, "noop_preview_s": {k: statistics.median(v) for k, v in previews.items()},
              "noop_preview_runs_s": previews,
              "pulumi_up_n": args.up_n, "pulumi_up_s": {k: statistics.median(v) for k, v in up_times.items()},
              "pulumi_up_runs_s": up_times, "code_before": str(args.code), "cpus": os.cpu_count()}
    floor = result["apply_s"]["floor"]
    result["apply_over_floor_s_per_1000_files"] = {
        k: round((result["apply_s"][k] - floor) / args.n * 1000, 3) for k in ("before", "after")}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    log(f"apply: floor {floor:.2f}s, before {result['apply_s']['before']:.2f}s, after {result['apply_s']['after']:.2f}s;"
        f" no-change preview: before {result['noop_preview_s']['before']:.2f}s, after "
        f"{result['noop_preview_s']['after']:.2f}s; pulumi up N={args.up_n}: {result['pulumi_up_s']}; wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
