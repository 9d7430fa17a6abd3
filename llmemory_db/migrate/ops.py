"""The operations layer: what a caller does with one module's migrations on one schema. Every operation returns a
typed result and reports through typed events (:mod:`.events`); none prints, none knows Pulumi.

    preflight   before anything runs (a preview): lint, edited applied files and their proof, the adoption
                decision, the risk of each pending statement on the live tables; every failure at once
    apply       the drift check, edits, adoption, the deny policy, then the executor; the schema recorded after
    refresh     what the database holds now: history, drift, interruptions, privilege leaks
    destroy     keep the data (default), or drop the module's objects and forget its history
    diff        what changed between the inputs of two deployments (pure)

The dynamic providers, the package server and the command line call these; fleets have theirs in
:mod:`.fleet_ops`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import psycopg

from . import adoption, diagnosis, drift, edits, executor, indexes, privileges, proof, risk
from .connection import pooler
from .errors import (EditedFileError, HistoryError, InterruptedMigrationError, LintIssue, MigrationError,
                     PoolerError, SchemaDriftError, SchemaMissingError)
from .events import Event, Sink, ignore
from .files import Migration, load
from .history import HistoryStore
from .inflight import settle_inflight
from .lint import lint_pending
from .objects import ManagedObjects
from .render import render_files
from .settings import Settings
from .spelling import setting
from .startup import ensure_startup_role
from .state import status


# --------------------------------------------------------------------------- preflight

@dataclass
class Preflight:
    pending: List[str]                                  # files not recorded yet, in order
    warnings: List[LintIssue] = field(default_factory=list)
    risk: Optional[risk.RiskReport] = None
    edit: Optional[proof.EditProof] = None              # the proof of edited applied files, when there are any
    failures: List[MigrationError] = field(default_factory=list)  # each refuses the deployment; all are reported

    def raise_first(self) -> None:
        if self.failures:
            raise self.failures[0]


def preflight(settings: Settings, *, conn: Optional[psycopg.Connection] = None,
              recorded: Optional[Mapping[str, str]] = None, known: bool = False, on_event: Sink = ignore) -> Preflight:
    """What a preview must say before anything runs. ``conn``: the live database when it answers (its history is
    the truth; without one, ``recorded`` - what the caller last recorded - stands in, and the checks that need
    the database are left to the apply). A lint error raises at once (nothing else is worth saying about a file
    that does not parse); the other failures are collected in :attr:`Preflight.failures`."""
    files = load(settings.migrations_dir)
    if conn is not None:
        store = HistoryStore(conn, settings)
        recorded = store.read() if store.exists() else {}
    recorded = dict(recorded or {})
    pending = [m for m in files if m.filename not in recorded]
    rendered, warnings = lint_pending(pending, settings)
    for warning in warnings:
        on_event(Event("lint", str(warning), "warning", warning.file))
    result = Preflight([m.filename for m in pending], warnings)
    if proof.edited_files(files, recorded):
        verdict = judge_edits(conn, settings, files, recorded, on_event)
        result.edit = verdict.proof
        if verdict.error is not None:
            result.failures.append(verdict.error)
    if conn is not None and pending and not recorded:
        try:
            adoption.decide(conn, settings, files, known=known, on_event=on_event)
        except MigrationError as exc:
            result.failures.append(exc)
    if pending:
        result.risk = risk.analyze(pending, rendered, settings, conn)
        for finding in result.risk.findings:
            on_event(Event("risk", f"risk: {finding}", "warning" if finding.severity == "warning" else
                           ("error" if finding.severity == "error" else "info"), finding.file))
        for allowed in result.risk.allowed:
            on_event(Event("risk", f"risk: allowed: {allowed}"))
        refusal = result.risk.error(settings)  # rows that will make a statement fail, or the deny policy
        if refusal is not None:
            result.failures.append(refusal)
    return result


@dataclass
class EditVerdict:
    """Edited applied files: the proof (None when it could not run) and, when the edit may not be recorded, why."""

    proof: Optional[proof.EditProof]
    error: Optional[EditedFileError] = None

    def raise_if_refused(self) -> "EditVerdict":
        if self.error is not None:
            raise self.error
        return self


def judge_edits(conn: Optional[psycopg.Connection], settings: Settings, files: Sequence[Migration],
                recorded: Mapping[str, str], on_event: Sink = ignore) -> EditVerdict:
    """Edited applied files: proven (built in a scratch schema, compared with the live one) and accepted when
    ``accept_edits`` covers them and the proof is clean; else the verdict carries an :class:`EditedFileError`
    with the proof's result. Without a database the proof waits for the apply (only when every edit would be
    accepted)."""
    edited = proof.edited_files(files, recorded)
    names = [name for name, _, _ in edited]
    refused = [name for name in names if not proof.accepted(settings, name)]
    if conn is None:
        if refused:
            return EditVerdict(None, EditedFileError(edited, settings.module_name, settings.history_display,
                                                     "(the proof did not run: the database is not reachable yet)"))
        for name, old, new in edited:
            on_event(Event("edit", f"{name}: edited after it was applied (recorded {old[:12]}…, file {new[:12]}…); "
                                   "the proof runs at the update, where the database answers", "warning", name))
        return EditVerdict(None)
    result = proof.prove_edits(conn, settings, files, recorded)
    for line, (name, _, _) in zip(result.lines(), edited):
        on_event(Event("edit", f"{line}; proof ({result.seconds * 1000:.0f} ms): {result.verdict()}",
                       "info" if result.clean else "warning", name))
    if not result.clean:
        return EditVerdict(result, EditedFileError(
            edited, settings.module_name, settings.history_display, f"proof: {result.verdict()}",
            remedy="the edit changes the schema, so it cannot be recorded as the same migration: restore the file "
                   "as it was applied and put the change in a new migration file (or, if the live schema is what "
                   "you want and you have checked it, record the edit without the proof: python -m "
                   "llmemory_db.migrate accept-edit FILE --trust)"))
    if refused:
        return EditVerdict(result, EditedFileError(
            edited, settings.module_name, settings.history_display,
            f"proof: {result.verdict()} (not accepted: {', '.join(refused)})",
            remedy=f"accept the verified edit: {setting('accept_edits', refused)} (or ['*'] for every edited file "
                   "whose proof is clean), or python -m llmemory_db.migrate accept-edit FILE; the history keeps the "
                   "old checksum in its audit trail"))
    on_event(Event("edit", f"{', '.join(names)}: the verified edit is accepted ({setting('accept_edits')}): the "
                           "update records the new checksum(s) and keeps the old one(s) in the audit trail"))
    return EditVerdict(result)


# --------------------------------------------------------------------------- apply

@dataclass
class ApplyResult:
    applied: List[str]          # applied by this run, in order
    skipped: List[str]          # found already applied (by an earlier run or a concurrent applier)
    checksums: Dict[str, str]   # every file on disk -> SHA-256
    missing: List[str]
    warnings: List[LintIssue] = field(default_factory=list)
    duration_ms: float = 0.0
    revoked: List[str] = field(default_factory=list)   # privileges on the history that default privileges gave
    baselined: List[str] = field(default_factory=list)  # recorded as applied by a baseline (not run)
    edits: List[str] = field(default_factory=list)     # accepted edits of applied files, in words
    objects: Optional[Dict[str, str]] = None           # the schema's fingerprint after the run (given managed)
    drift_accepted: List[str] = field(default_factory=list)
    applied_since: List[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return drift.fingerprint(self.objects or {})

    def as_dict(self) -> dict:
        return {"applied": self.applied, "skipped": self.skipped, "pending": [], "baselined": self.baselined,
                "checksums": self.checksums, "missing": self.missing, "revoked": self.revoked, "edits": self.edits,
                "warnings": [str(w) for w in self.warnings], "duration_ms": round(self.duration_ms, 1)}


def apply(conn: psycopg.Connection, settings: Settings, *, managed: Optional[ManagedObjects] = None,
          recorded_objects: Optional[Dict[str, str]] = None, covered: Sequence[str] = (), known: bool = False,
          on_event: Sink = ignore, on_progress: Optional[Callable[[str], None]] = None) -> ApplyResult:
    """Apply every pending file of ``settings``, each with its history row in one transaction.

    ``recorded_objects``: the fingerprint the caller recorded after the files ``covered`` were applied; the live
    schema is checked against it first (:func:`check_drift`). ``known``: the caller applied these files here
    before (a stack's state says so), so objects found without a history are the spec's development reset (the
    history rows deleted), re-run as pgdbm would, not an unknown schema. ``managed``: read the schema's
    fingerprint after the run (:attr:`ApplyResult.objects`)."""
    try:
        return _apply(conn, settings, managed, recorded_objects, covered, known, on_event, on_progress)
    except psycopg.Error as exc:  # outside a migration's statements: history table, lock, catalog queries
        fail = diagnosis.failure(exc)
        raise HistoryError(
            f"Database error while reading or writing the migration history {settings.history_display}: "
            f"{fail.message}" + (f" (SQLSTATE {fail.sqlstate})" if fail.sqlstate else ""),
            remedy=diagnosis.remedy_for(fail, settings) if fail.sqlstate else "check the server log") from None


def _apply(conn, settings, managed, recorded_objects, covered, known, on_event, on_progress) -> ApplyResult:
    started = time.perf_counter()
    store = HistoryStore(conn, settings)
    files = load(settings.migrations_dir)
    result = ApplyResult([], [], {}, [])
    if recorded_objects is not None:
        report = check_drift(conn, settings, managed or ManagedObjects(), recorded_objects, covered, files)
        result.applied_since, result.drift_accepted = report.applied_since, report.differences
        if report.applied_since:
            on_event(Event("applied-since", f"applied outside this stack since its last update: "
                                            f"{', '.join(report.applied_since)}; the schema fingerprint is taken "
                                            "again after this update"))
        if report.accepted:
            on_event(Event("drift", "accepted schema drift:\n  " + "\n  ".join(report.differences), "warning"))
    current = status(conn, settings, files)
    if current.plan.mismatched:
        verdict = judge_edits(conn, settings, files, store.read(), on_event).raise_if_refused()
        result.edits = edits.record(conn, settings, verdict.proof)
        for line in result.edits:
            on_event(Event("edit", line))
        current = status(conn, settings, files)
    current.plan.raise_for_mismatch()
    resume: List[Migration] = []
    if current.inflight:  # wait for a live run; refuse an interrupted one unless its concurrent build can resume
        resume = settle_inflight(store, files, [m.filename for m in current.plan.applied])
    rendered, result.warnings = lint_pending(current.plan.pending, settings)
    if not (current.plan.applied or current.plan.missing) and current.plan.pending:  # no history of the module
        result.baselined = adoption.decide(conn, settings, files, known=known, record=True, on_event=on_event)
        if result.baselined:
            current = status(conn, settings, files)
    if settings.risk_policy == "deny" and current.plan.pending:  # squawk runs only for deny: a plain apply stays fast
        risk.analyze(current.plan.pending, rendered, settings, conn).raise_for_errors(settings)
    if settings.schema and current.plan.pending and not store.schema_exists(settings.schema):
        raise SchemaMissingError(
            f'schema "{settings.schema}" does not exist',
            remedy=f"create it before migrating: CREATE SCHEMA IF NOT EXISTS {settings.schema}; "
                   "(the MigratedSchema component does this), or give the user the CREATE SCHEMA permission")
    _refuse_pooler(conn, settings, [m for m in current.plan.pending if m.no_transaction])
    if not current.history_exists:
        store.create()
    result.applied, skipped = executor.apply_pending(store, current.plan.pending, rendered, on_event, on_progress,
                                                     resume)
    result.skipped = [m.filename for m in current.plan.applied if m.filename not in result.baselined] + skipped
    if result.applied:
        on_event(Event("applied", f"applied {', '.join(result.applied)}"))
    result.revoked = privileges.strip(conn, settings)  # no role but the migrations' may write the history
    result.revoked += ensure_startup_role(conn, settings)  # and what pgdbm at start-up needs
    for change in result.revoked:
        on_event(Event("privileges", f"privileges: {change}"))
    for warning in result.warnings:
        on_event(Event("lint", str(warning), "warning", warning.file))
    result.checksums, result.missing = current.plan.checksums, current.plan.missing
    if managed is not None:
        result.objects = drift.inspect_target(conn, settings, managed)
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def _refuse_pooler(conn: psycopg.Connection, settings: Settings, no_transaction: Sequence[Migration]) -> None:
    """No-transaction files need a session of their own for their whole run: never through a transaction pooler."""
    if not no_transaction:
        return
    why = pooler(conn, settings)
    if why:
        raise PoolerError(
            f"{no_transaction[0].filename} is a no-transaction migration and this connection goes through a "
            f"transaction-pooling endpoint ({why}); nothing was applied", file=no_transaction[0].filename,
            remedy="apply it over a direct PostgreSQL connection or a session-pooled endpoint; if this endpoint is "
                   f"direct or pools sessions, declare it: {setting('pool_mode', 'session')}")


# --------------------------------------------------------------------------- drift

@dataclass
class DriftReport:
    differences: List[str] = field(default_factory=list)   # manual changes, in plain words
    applied_since: List[str] = field(default_factory=list)  # files another applier applied since the fingerprint
    accepted: bool = False                                   # differences found and accepted (accept_schema_drift)

    @property
    def clean(self) -> bool:
        return not self.differences


def check_drift(conn: psycopg.Connection, settings: Settings, managed: ManagedObjects, recorded: Dict[str, str],
                covered: Sequence[str], files: Optional[Sequence[Migration]] = None) -> DriftReport:
    """Compare the live schema with the fingerprint ``recorded`` after the files ``covered`` were applied.

    Not drift: files applied since by another applier (pgdbm at start-up) move the schema on with the history
    (the fingerprint is taken again after the update); objects that pending files create and that exist already
    are an interrupted run's (reported as that). Raises InterruptedMigrationError for an interrupted
    no-transaction file, and SchemaDriftError on drift unless ``settings.accept_schema_drift``."""
    current = status(conn, settings, files)
    if current.interrupted:
        raise InterruptedMigrationError(current.interrupted, settings.module_name)
    covered_set = set(covered)
    since = [m.filename for m in current.plan.applied if m.filename not in covered_set]
    if since:
        return DriftReport(applied_since=since)
    differences = drift.compare(recorded, drift.inspect_target(conn, settings, managed))
    if differences and current.plan.pending:
        pending = render_files(current.plan.pending, settings.schema).values()
        differences = drift.without_expected(differences, drift.created_by(pending, settings.schema))
    if differences and not settings.accept_schema_drift:
        raise SchemaDriftError(settings, differences)
    return DriftReport(differences=differences, accepted=bool(differences))


# --------------------------------------------------------------------------- refresh, destroy

@dataclass
class Refreshed:
    """What the database holds now, for the files on disk."""

    recorded: Dict[str, str]        # history rows: filename -> checksum
    pending: List[str]
    missing: List[str]
    drift: List[str]                # differences from the recorded fingerprint, and privilege leaks
    interrupted: List[str]
    objects: Dict[str, str]         # the live fingerprint


def refresh(conn: psycopg.Connection, settings: Settings, managed: ManagedObjects,
            recorded_objects: Optional[Dict[str, str]]) -> Refreshed:
    """Re-read the history and the schema; ``recorded_objects``: the fingerprint to find drift against (None:
    not recorded yet, no drift to find)."""
    current = status(conn, settings)
    recorded = HistoryStore(conn, settings).read() if current.history_exists else {}
    live = drift.inspect_target(conn, settings, managed)
    leaks = privileges.drift(conn, settings) if current.history_exists else []
    differences = drift.compare(recorded_objects, live) if recorded_objects is not None else []
    # an INVALID index (an interrupted or failed concurrent build, whoever ran it) is drift, with its rebuild SQL
    invalid = indexes.invalid_lines([i for i in indexes.invalid_indexes(conn, [settings.schema_name])
                                     if not i.building])
    return Refreshed(recorded, [m.filename for m in current.plan.pending], current.plan.missing,
                     differences + leaks + invalid, [i.describe() for i in current.interrupted], live)


def destroy(settings: Settings, managed: ManagedObjects, connect: Callable[[], psycopg.Connection]) -> Event:
    """Keep the data (default: nothing is touched, no connection opened), or with ``drop_on_destroy`` forget the
    module's history and drop its objects (standalone mode: the module's tables; schema mode: the component drops
    the schema)."""
    where = f"schema {settings.schema_name} (module {settings.module_name}, history {settings.history_display})"
    if not settings.drop_on_destroy:
        return Event("destroy", f"kept the tables and history of {where}; set {setting('drop_on_destroy', True)} "
                                "to drop them on destroy")
    tables = [] if settings.schema else list(managed.tables)
    with connect() as conn:
        HistoryStore(conn, settings).forget(drop_tables=tables)
    dropped = f"dropped tables {', '.join(tables)} and " if tables else ""
    return Event("destroy", f"{dropped}forgot the history of {where}")


# --------------------------------------------------------------------------- diff (pure)

def pending_lines(old_sums: Mapping[str, str], new_sums: Mapping[str, str], same_target: bool) -> List[str]:
    """What an update will do to the files, in words: pending, edited (proven at check), gone from disk."""
    pending = [name for name in sorted(new_sums) if name not in old_sums or not same_target]
    lines = [f"{len(pending)} pending: {', '.join(pending)}"] if pending else []
    edited = [name for name in sorted(new_sums) if same_target and name in old_sums and old_sums[name] != new_sums[name]]
    if edited:
        lines.append(f"edited after they were applied (their proof: see above): {', '.join(edited)}")
    forgotten = [name for name in sorted(old_sums) if name not in new_sums]
    if forgotten:
        lines.append(f"recorded but not on disk: {', '.join(forgotten)}")
    return lines


def changed_inputs(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Sequence[str],
                   defaults: Mapping[str, Any]) -> List[str]:
    """The ``keys`` whose values differ (a key an older version did not write counts as its default)."""
    def value(props: Mapping[str, Any], key: str) -> Any:
        found = props.get(key, defaults.get(key))
        return list(found) if isinstance(found, tuple) else found
    return [key for key in keys if value(olds, key) != value(news, key)]
