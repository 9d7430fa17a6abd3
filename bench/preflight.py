"""The cost of the data preflight and of the proof of an edited file on a 1,000,000-row table (issue 25: "preflight
<= 2 s there, or skipped with a note"), each check side by side with the bare SELECT it runs, in one run.

    python -m bench.preflight [--rows 1000000] [--reps 3]     # writes bench/preflight-results.json

The table is llmemory 0.5.0's ``documents`` (its own 001, schema lm) holding ``--rows`` rows, one duplicate
(owner_id, id_at_origin) among them. For each kind of check: the engine's check (``violations.run``: READ ONLY
transaction, statement_timeout, count + up to 5 examples) with a generous limit, so that its whole cost is seen,
and the bare query it is built on (the count, or the GROUP BY) run alone; then the whole ``plan`` of llmemory's
real 002 (squawk + live sizes + preflight) with the default limit, and without the preflight. Warm cache (the rows
were just written). The schema is llmemory 0.4.0's 001 (from `make app-venv-0.4.0`), so that 0.5.0's edited 001 is
proven too (``proof.prove_edits``: every applied file built in a scratch schema, compared with the live one).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from llmemory_db import migrate
from llmemory_db.migrate import Settings, proof, risk, violation_checks, violation_reads
from llmemory_db.migrate import parser as sql_parser
from llmemory_db.migrate.history import HistoryStore
from llmemory_db.migrate.source import find_package
from tests.helpers import ROOT
from tests.helpers import db as dbs
from tools.pgserver import Server

OLD = sorted((ROOT / ".state" / "llmemory-app-0.4.0-venv").glob("lib/python*/site-packages/llmemory/migrations"))

OUT = ROOT / "bench" / "preflight-results.json"
GENEROUS = 120.0  # seconds: every check runs to its end

STATEMENTS = {
    "ADD CONSTRAINT UNIQUE (owner_id, id_at_origin)":
        "ALTER TABLE lm.documents ADD CONSTRAINT uq UNIQUE (owner_id, id_at_origin)",
    "CREATE UNIQUE INDEX (document_name) WHERE document_type = 'pdf'":
        "CREATE UNIQUE INDEX idx ON lm.documents (document_name) WHERE document_type = 'pdf'",
    "SET NOT NULL (document_date)": "ALTER TABLE lm.documents ALTER COLUMN document_date SET NOT NULL",
    "ADD COLUMN x int NOT NULL (no DEFAULT)": "ALTER TABLE lm.documents ADD COLUMN x int NOT NULL",
    "ADD CHECK (length(document_name) < 12)": "ALTER TABLE lm.documents ADD CHECK (length(document_name) < 12)",
    "ADD FOREIGN KEY (owner_id) REFERENCES ref.owners":
        "ALTER TABLE lm.documents ADD FOREIGN KEY (owner_id) REFERENCES ref.owners (id)",
    "ALTER COLUMN id_at_origin TYPE varchar(10)": "ALTER TABLE lm.documents ALTER COLUMN id_at_origin TYPE varchar(10)",
}


def log(message: str) -> None:
    print(f"[bench:preflight] {message}", file=sys.stderr, flush=True)


def timed(action, reps: int):
    times, value = [], None
    for _ in range(reps):
        started = time.perf_counter()
        value = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preflight")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    server = Server(ROOT / ".state" / "pg-bench").start()
    db = dbs.create(server, prefix="preflight", extensions=("vector",))
    folder = Path(tempfile.mkdtemp())
    try:
        package = find_package("llmemory")
        (folder / "first").mkdir()
        # llmemory 0.4.0's 001 when its venv is there (0.5.0 edited it: the proof is measured too), else 0.5.0's
        shutil.copy((OLD[0] if OLD else package.folder) / "001_complete_schema.sql", folder / "first")
        db.sql("CREATE SCHEMA lm")
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            migrate.apply(conn, Settings(folder / "first", schema="lm", module_name="llmemory",
                                         history_table="lm.schema_migrations"))
            log(f"loading {args.rows:,} rows into lm.documents")
            conn.execute("CREATE SCHEMA ref; CREATE TABLE ref.owners (id text PRIMARY KEY)")
            conn.execute("INSERT INTO ref.owners SELECT 'owner-' || g FROM generate_series(0, 99) g")
            conn.execute(
                "INSERT INTO lm.documents (owner_id, id_at_origin, document_type, document_name, document_date) "
                "SELECT 'owner-' || (g %% 100), 'doc-' || g, CASE WHEN g %% 10 = 0 THEN 'pdf' ELSE 'text' END, "
                "'name-' || g, CASE WHEN g %% 1000 <> 0 THEN now() END FROM generate_series(1, %s) g", (args.rows,))
            conn.execute("INSERT INTO lm.documents (owner_id, id_at_origin, document_type, document_name) "
                         "VALUES ('owner-7', 'doc-7', 'text', 'again')")
            conn.execute("VACUUM ANALYZE lm.documents")
            table = violation_reads.table_of(conn, (None, "documents"), "lm")
            log(f"lm.documents: {table.heap / 2**20:.0f} MB heap, {table.total / 2**20:.0f} MB with indexes")
            checks = []
            for label, statement in STATEMENTS.items():
                [(kind, stmt, _, _)] = sql_parser.parse(statement)
                for check in violation_checks.checks_for(kind, stmt, statement):
                    listing, count, _, _ = violation_reads.queries(check, table, conn)
                    bare = count if count is not None else listing
                    check_seconds, result = timed(lambda: violation_reads.run(conn, check, table, GENEROUS), args.reps)
                    bare_seconds, _ = timed(lambda: conn.execute(bare).fetchall(), args.reps)
                    rate = table.heap / check_seconds / 2**20
                    row = {"statement": label, "rule": check.rule, "check_s": round(check_seconds, 3),
                           "bare_select_s": round(bare_seconds, 3), "ratio": round(check_seconds / bare_seconds, 2),
                           "heap_MB_per_s": round(rate), "violations": result.violations,
                           "within_2s": check_seconds <= 2.0}
                    log(f"{label} [{check.rule}]: check {check_seconds:.3f}s, bare SELECT {bare_seconds:.3f}s "
                        f"(x{row['ratio']}), {result.violations} violation(s), {rate:.0f} MB/s")
                    checks.append(row)
            settings = Settings(migrations_package="llmemory", schema="lm")
            pending = migrate.status(conn, settings).plan.pending
            rendered = migrate.render_files(pending, settings.schema)
            with_seconds, report = timed(lambda: risk.analyze(pending, rendered, settings, conn), args.reps)
            without_seconds, _ = timed(lambda: risk.analyze(pending, rendered, settings.replace(preflight_timeout=0),
                                                            conn), args.reps)
            [violation] = [f for f in report.findings if f.rule == "unique-violation"]
            version = conn.info.server_version
            plan = {"plan_002_with_preflight_s": round(with_seconds, 3),
                    "plan_002_without_preflight_s": round(without_seconds, 3),
                    "preflight_share_s": round(with_seconds - without_seconds, 3),
                    "finding": str(violation)}
            log(f"plan of llmemory's 002: {with_seconds:.3f}s with the preflight, {without_seconds:.3f}s without; "
                f"{violation.severity}: {violation.violations} duplicate group")
            files = migrate.load(settings.migrations_dir)
            recorded = HistoryStore(conn, settings).read()
            if proof.edited_files(files, recorded):
                proof_seconds, edit = timed(lambda: proof.prove_edits(conn, settings, files, recorded), args.reps)
                plan.update(proof_of_edited_001_s=round(proof_seconds, 3), proof=edit.verdict())
                log(f"proof of 0.5.0's edited 001 over 0.4.0's schema: {proof_seconds:.3f}s: {edit.verdict()}")
        results = {"rows": args.rows, "heap_MB": round(table.heap / 2**20), "total_MB": round(table.total / 2**20),
                   "reps": args.reps, "checks": checks, "plan": plan, "server_version": version,
                   "cpus": os.cpu_count(), "load_average_before_after": [round(load_before, 1),
                                                                          round(os.getloadavg()[0], 1)]}
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {OUT.relative_to(ROOT)}")
        return 0
    finally:
        db.drop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
