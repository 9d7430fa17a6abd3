"""Command line over the engine: ``python -m components.migrate {lint,plan,apply,status,resolve}``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from . import engine
from .errors import InterruptedMigrationError, MigrationError
from .files import load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.migrate",
        description="Apply pgdbm-compatible templated SQL migrations ({{tables.x}} -> schema.x).")
    parser.add_argument("command", choices=["lint", "plan", "apply", "status", "resolve"],
                        help="lint: check files (no database); plan/status: compare with history; apply: run "
                             "pending; resolve FILE --retry|--mark-applied: settle an interrupted migration")
    parser.add_argument("file", nargs="?", help="resolve: the interrupted migration file")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--retry", dest="action", action="store_const", const="retry",
                        help="resolve: forget the interruption; the next apply re-runs the whole file")
    action.add_argument("--mark-applied", dest="action", action="store_const", const="mark-applied",
                        help="resolve: the rest was finished by hand; record the file as applied")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""),
                        help="connection string (default $DATABASE_URL, else libpq's PG* variables)")
    parser.add_argument("--dir", default="migrations", help="directory of *.sql files (default: migrations)")
    parser.add_argument("--schema", default=None, help="target schema; omit for standalone mode (public)")
    parser.add_argument("--module", default=engine.DEFAULT_MODULE, help="module name in the history table")
    parser.add_argument("--history-table", default=engine.DEFAULT_HISTORY_TABLE,
                        help="history table, table or schema.table (default public.schema_migrations)")
    parser.add_argument("--lock-wait", type=float, default=60.0, help="seconds to wait for the migration lock")
    parser.add_argument("--lock-timeout", type=float, default=None, help="PostgreSQL lock_timeout (s) for migrations")
    parser.add_argument("--statement-timeout", type=float, default=None,
                        help="PostgreSQL statement_timeout (s) for migrations")
    parser.add_argument("--strict", action="store_true", help="treat lint warnings as errors")
    parser.add_argument("--pool-mode", choices=engine.POOL_MODES, default="auto",
                        help="the endpoint: auto (detect a pooler: no-transaction files are refused through one), "
                             "session or transaction")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        target = engine.Target(args.dir, schema=args.schema, module=args.module, history_table=args.history_table,
                               lock_wait_timeout=args.lock_wait, lock_timeout=args.lock_timeout,
                               statement_timeout=args.statement_timeout, strict=args.strict,
                               pool_mode=args.pool_mode)
        if args.command == "resolve" and not (args.file and args.action):
            raise MigrationError("resolve needs the file and what to do",
                                 remedy="python -m components.migrate resolve 002_x.sql --retry (or --mark-applied)")
        if args.command == "lint":
            files = load(target.migrations_dir)
            _, warnings = engine.lint_pending(files, target)
            result = {"files": [m.filename for m in files], "checksums": {m.filename: m.checksum for m in files},
                      "warnings": [str(w) for w in warnings]}
            _emit(args, result, f"{len(files)} file(s) OK" + _warnings_text(warnings))
            return 0
        with engine.connect(args.dsn) as conn:
            if args.command == "resolve":
                message = engine.resolve(conn, target, args.file, args.action)
                _emit(args, {"resolved": args.file, "action": args.action}, message)
                return 0
            if args.command in ("plan", "status"):
                current = engine.status(conn, target)
                if args.command == "plan":
                    _, current.warnings = engine.lint_pending(current.plan.pending, target)
                result = current.as_dict()
                error = current.plan.mismatch_error() or (
                    InterruptedMigrationError(current.interrupted, target.module) if current.interrupted else None)
                text = (f"applied: {len(current.plan.applied)}, pending: {len(current.plan.pending)}"
                        + "".join(f"\n  pending {m.filename}" for m in current.plan.pending)
                        + "".join(f"\n  recorded but missing on disk: {name}" for name in current.plan.missing)
                        + "".join(f"\n  running now: {i.filename} (pid {i.pid})" for i in current.inflight if i not in current.interrupted)
                        + _warnings_text(current.warnings))
                if error:
                    result["error"] = str(error)
                    _emit(args, result, text)
                    print(f"error: {error}", file=sys.stderr)
                    return 1
                _emit(args, result, text)
                return 0
            progress = None if args.json else (lambda name: print(f"applied {name}", file=sys.stderr))
            result = engine.apply(conn, target, on_progress=progress)
            _emit(args, result.as_dict(),
                  f"{len(result.applied)} migration(s) applied, {len(result.skipped)} already applied "
                  f"in {result.duration_ms:.0f} ms" + _warnings_text(result.warnings))
            return 0
    except MigrationError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}, indent=2))
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _warnings_text(warnings) -> str:
    return "".join(f"\n{w}" for w in warnings)


def _emit(args, result: dict, text: str) -> None:
    print(json.dumps(result, indent=2) if args.json else text)
