"""Command line over the engine: ``python -m llmemory_db.migrate COMMAND --help`` for each command's options.

Exit codes: 0 success; 1 a finding (a modified or interrupted file for plan/status, drift for drift); 2 an error,
with one message on stderr (``--json``: also on stdout).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional

from . import adoption, edits, indexes, ops, proof, risk
from .connection import connect
from .errors import ConnectionFailedError, EditedFileError, InterruptedMigrationError, MigrationError
from .events import Event
from .files import load
from .history import HistoryStore
from .inflight import InflightLog
from .lint import lint_pending
from .settings import Settings
from .state import status

PROG = "python -m llmemory_db.migrate"
# the settings each command takes (see Settings for their help and defaults)
WHERE = ("migrations_dir", "migrations_package", "schema", "module_name", "history_table")
RISK = ("risk_policy", "risk_min_rows", "preflight_timeout")
COMMANDS: Dict[str, tuple] = {
    "lint": ("check the files: render, parse and run squawk's risk rules on every file (a database is optional: "
             "with --dsn the findings name live table sizes)", WHERE + ("strict",) + RISK),
    "plan": ("compare the files with the history: what would apply, and the risk of each pending statement on the "
             "live tables (--sql: the SQL exactly as it will be sent)", WHERE + ("strict",) + RISK),
    "status": ("applied, pending, missing and interrupted files, and INVALID indexes in the schema", WHERE),
    "apply": ("apply the pending files, each with its history row in one transaction",
              WHERE + ("lock_wait_timeout", "lock_timeout", "lock_retry_timeout", "statement_timeout", "strict",
                       "pool_mode", "startup_role") + RISK),
    "resolve": ("settle an interrupted no-transaction file: FILE --retry or --mark-applied",
                WHERE + ("lock_wait_timeout",)),
    "drift": ("compare the live schema with what the applied files produce (built in a scratch schema and "
              "rolled back); exit 1 on differences", WHERE + ("extensions",)),
    "baseline": ("adopt an existing schema: record the files up to VERSION as applied without running them, once "
                 "the live schema is proven to be what they produce", WHERE + ("extensions", "baseline_trust",
                                                                             "lock_wait_timeout")),
    "copy-history": ("adopt the history of a pgdbm application kept under another module name or in another "
                     "history table: copy its rows (checksums verified, idempotent, one transaction)",
                     WHERE + ("lock_wait_timeout",)),
    "accept-edit": ("an applied file was edited (a library's release edits its own files): prove that the edit "
                    "changes nothing in the schema but comments (every applied file built in a scratch schema, "
                    "rolled back, compared with the live one), then record its new checksum, keeping the old one "
                    "in an audit trail; --trust records without the proof", WHERE + ("extensions", "lock_wait_timeout")),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Apply pgdbm-compatible templated SQL migrations ({{tables.x}} -> schema.x).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, settings) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name == "lint":
            sub.add_argument("--dsn", default=None, help="optional: a database to read live table sizes from "
                                                         "(lint never needs one)")
        else:
            sub.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""),
                             help="connection string (default $DATABASE_URL, else libpq's PG* variables)")
        if name == "baseline":
            sub.add_argument("version", help="the version (or file name) of the last file the live schema has")
        if name == "copy-history":
            sub.add_argument("--from-module", help="the module name the rows were recorded under")
            sub.add_argument("--from-history-table", help="the history table they are in (schema.table)")
        if name == "accept-edit":
            sub.add_argument("file", nargs="?", help="the edited file, e.g. 001_complete_schema.sql")
            sub.add_argument("--all", action="store_true", help="every edited applied file")
            sub.add_argument("--trust", dest="trust_edit", action="store_true",
                             help="record without the proof (said loudly; at your own risk)")
        if name == "resolve":
            sub.add_argument("file", help="the interrupted migration file, e.g. 002_index.sql")
            action = sub.add_mutually_exclusive_group(required=True)
            action.add_argument("--retry", dest="action", action="store_const", const="retry",
                                help="forget the interruption; the next apply re-runs the whole file")
            action.add_argument("--mark-applied", dest="action", action="store_const", const="mark-applied",
                                help="the rest was finished by hand; record the file as applied")
        Settings.add_arguments(sub, settings)
        if name == "plan":
            sub.add_argument("--sql", action="store_true",
                             help="print every pending file's rendered SQL exactly as it will be sent")
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_cli(args)
        if args.command == "lint":
            return _lint(args, settings)
        with connect(args.dsn) as conn:
            return RUN[args.command](args, settings, conn)
    except MigrationError as exc:
        text = exc.render("cli", Settings.cli_flags())
        if args.json:
            print(json.dumps({"error": text, "type": type(exc).__name__}, indent=2))
        print(f"error: {text}", file=sys.stderr)
        return 2


def _print_event(event: Event) -> None:
    print(str(event), file=sys.stderr)


def _lint(args, settings: Settings) -> int:
    files = load(settings.migrations_dir)
    rendered, warnings = lint_pending(files, settings)
    report, note = None, ""
    if args.dsn:
        try:
            with connect(args.dsn, retries=0) as conn:
                report = risk.analyze(files, rendered, settings, conn)
        except ConnectionFailedError as exc:  # lint never needs a database: squawk's findings alone
            note = f"\nlive table sizes not read: {exc.message}"
    if report is None:
        report = risk.analyze(files, rendered, settings)
    result = {"files": [m.filename for m in files], "checksums": {m.filename: m.checksum for m in files},
              "warnings": [str(w) for w in warnings], "findings": [f.as_dict() for f in report.findings],
              "allowed": report.allowed}
    _emit(args, result, f"{len(files)} file(s) OK" + _warnings_text(warnings) + _risk_text(report) + note)
    report.raise_for_errors(settings)
    return 0


def _risk_text(report: "risk.RiskReport") -> str:
    return "".join(f"\n{line}" for line in report.lines())


def _plan_or_status(args, settings: Settings, conn) -> int:
    current = status(conn, settings)
    report, verdict = None, None
    if current.plan.mismatched:  # edited applied files: proven and listed, not a stop
        verdict = ops.judge_edits(conn, settings, load(settings.migrations_dir), HistoryStore(conn, settings).read())
    if args.command == "plan":
        rendered, current.warnings = lint_pending(current.plan.pending, settings)
        report = risk.analyze(current.plan.pending, rendered, settings, conn,
                              on_progress=lambda line: print(line, file=sys.stderr))
        if args.sql:
            print(risk.rendered_sql(current.plan.pending, rendered, settings), end="", file=sys.stderr
                  if args.json else sys.stdout)
    result = current.as_dict()
    if report is not None:
        result.update(findings=[f.as_dict() for f in report.findings], allowed=report.allowed)
    if verdict is not None:
        result["edited"] = [{"file": name, "recorded": old, "current": new, "accepted": verdict.error is None,
                             "proof": verdict.proof.verdict() if verdict.proof else "not run"}
                            for name, old, new in current.plan.mismatched]
    error = (verdict.error if verdict is not None else None) or (
        InterruptedMigrationError(current.interrupted, settings.module_name) if current.interrupted else None)
    text = (f"applied: {len(current.plan.applied)}, pending: {len(current.plan.pending)}"
            + "".join(f"\n  pending {m.filename}" for m in current.plan.pending)
            + "".join(f"\n  recorded but missing on disk: {name}" for name in current.plan.missing)
            + "".join(f"\n  edited after it was applied: {e['file']} (proof: {e['proof']}; "
                      + ("accepted: apply records its new checksum)" if e["accepted"] else "not accepted)")
                      for e in result.get("edited", []))
            + "".join(f"\n  running now: {i.filename} (pid {i.pid})"
                      for i in current.inflight if i not in current.interrupted)
            + _warnings_text(current.warnings) + (_risk_text(report) if report else ""))
    invalid = []
    if args.command == "status":  # what an interrupted or failed concurrent build left, whoever ran it
        invalid = indexes.invalid_indexes(conn, [settings.schema_name])
        result["invalid_indexes"] = [i.as_dict() for i in invalid]
        text += "".join(f"\n  {line}" for line in indexes.invalid_lines(invalid))
    if report is not None and report.errors:
        error = error or report.error(settings)
    if error:
        result["error"] = str(error)
        _emit(args, result, text)
        print(f"error: {error}", file=sys.stderr)
        return 1
    _emit(args, result, text)
    return 1 if any(not i.building for i in invalid) else 0


def _apply(args, settings: Settings, conn) -> int:
    progress = None if args.json else (lambda name: print(f"applied {name}", file=sys.stderr))
    result = ops.apply(conn, settings, on_progress=progress,
                       on_event=lambda e: e.kind != "applied" and _print_event(e))
    _emit(args, result.as_dict(),
          f"{len(result.applied)} migration(s) applied, {len(result.skipped)} already applied "
          f"in {result.duration_ms:.0f} ms" + _warnings_text(result.warnings))
    return 0


def _resolve(args, settings: Settings, conn) -> int:
    message = InflightLog(HistoryStore(conn, settings)).resolve(args.file, args.action)
    _emit(args, {"resolved": args.file, "action": args.action}, message)
    return 0


def _drift(args, settings: Settings, conn) -> int:
    current = status(conn, settings)
    current.plan.raise_for_mismatch()
    applied = current.plan.applied
    differences = proof.diff_against_files(conn, settings, applied)
    differences += indexes.invalid_lines([i for i in indexes.invalid_indexes(conn, [settings.schema_name])
                                          if not i.building])
    result = {"applied": [m.filename for m in applied], "pending": [m.filename for m in current.plan.pending],
              "differences": differences}
    where = f"{settings.schema_name} (module {settings.module_name}, {len(applied)} applied file(s))"
    if differences:
        _emit(args, result, f"schema drift in {where}:\n  " + "\n  ".join(differences))
        return 1
    _emit(args, result, f"no drift in {where}: the live schema is what the applied files produce")
    return 0


def _baseline(args, settings: Settings, conn) -> int:
    result = adoption.baseline(conn, settings, args.version, trust=settings.baseline_trust)
    _emit(args, {"baselined": result.recorded, "proven": result.proven, "message": result.message,
                 "seconds": round(result.seconds, 3)}, result.message)
    return 0


def _copy_history(args, settings: Settings, conn) -> int:
    copied = adoption.copy_history(conn, settings, args.from_module, args.from_history_table)
    _emit(args, {"copied": copied}, f"copied {len(copied)} history row(s) into {settings.history_display} "
                                    f"(module {settings.module_name})" + "".join(f"\n  {name}" for name in copied))
    return 0


def _accept_edit(args, settings: Settings, conn) -> int:
    files = load(settings.migrations_dir)
    store = HistoryStore(conn, settings)
    recorded = store.read() if store.exists() else {}
    edited = proof.edited_files(files, recorded)
    if args.file and not args.all:
        if args.file not in {m.filename for m in files}:
            raise MigrationError(f"{args.file} is not in {settings.migrations_dir}", file=args.file,
                                 remedy="name a migration file of the folder (--dir / --package)")
        edited = [e for e in edited if e[0] == args.file]
        if not edited:
            _emit(args, {"accepted": [], "message": f"{args.file} is not edited: nothing to do"},
                  f"{args.file}: recorded with the checksum of the file on disk: nothing to do")
            return 0
    elif not args.all:
        raise MigrationError("accept-edit needs a FILE or --all", remedy="for example: accept-edit 001_x.sql")
    if not edited:
        _emit(args, {"accepted": [], "message": "no applied file was edited"}, "no applied file was edited")
        return 0
    if args.trust_edit:
        result = proof.EditProof(edited, proven=False)
    else:
        result = proof.prove_edits(conn, settings, files, recorded)
        result.edited = edited
        if not result.clean:
            raise EditedFileError(edited, settings.module_name, settings.history_display,
                                  f"proof: {result.verdict()}; nothing was recorded",
                                  remedy="restore the file as it was applied and put the change in a new migration; "
                                         "if the live schema is what you want and you checked it, --trust records "
                                         "without the proof")
    done = edits.record(conn, settings, result)
    _emit(args, {"accepted": [name for name, _, _ in edited], **result.as_dict()},
          f"proof: {result.verdict()}" + "".join(f"\n{line}" for line in done))
    return 0


RUN: Dict[str, Callable[..., int]] = {"plan": _plan_or_status, "status": _plan_or_status, "apply": _apply,
                                      "resolve": _resolve, "drift": _drift, "baseline": _baseline,
                                      "copy-history": _copy_history, "accept-edit": _accept_edit}


def _warnings_text(warnings) -> str:
    return "".join(f"\n{w}" for w in warnings)


def _emit(args, result: dict, text: str) -> None:
    print(json.dumps(result, indent=2) if args.json else text)
