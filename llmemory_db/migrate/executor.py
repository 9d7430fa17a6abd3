"""The executor: plan against the history, then apply each pending file with one of two strategies.

- in a transaction (the default): the file and its history row commit together, in one round trip when the
  module's lock is free;
- ``-- pgdbm:no-transaction``: statement by statement in autocommit under a session lock, with progress in the
  in-flight table so that an interrupted run is reported, never silently re-run or skipped.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import adoption, diagnosis, indexes, lockwait, progress
from . import lint as lint_mod
from .connection import pooler
from .errors import (ConnectionLostError, Inflight, LintError, LintIssue, LockRetryError, MigrationError,
                     PoolerError, StatementError)
from .files import Migration, load
from .history import APPLIED_MARK, BUSY_MARK, HistoryStore, marked, ms, rollback
from .plan import Plan, plan
from .render import render
from .settings import Settings
from .startup import ensure_startup_role

CLIENT_CHECK_INTERVAL = "1s"  # how soon the server notices a dead client and rolls its migration back


@dataclass
class Status:
    """What is on disk compared with what the database recorded."""

    plan: Plan
    history_exists: bool
    warnings: List[LintIssue] = field(default_factory=list)
    inflight: List[Inflight] = field(default_factory=list)  # no-transaction migrations started, not finished

    @property
    def interrupted(self) -> List[Inflight]:
        """Failed half-way, or started by a backend that is gone: never to finish by itself."""
        return [i for i in self.inflight if i.error or not i.alive]

    def as_dict(self) -> dict:
        return {
            "applied": [m.filename for m in self.plan.applied],
            "pending": [m.filename for m in self.plan.pending],
            "missing": self.plan.missing,
            "checksums": self.plan.checksums,
            "warnings": [str(w) for w in self.warnings],
            "interrupted": [i.describe() for i in self.interrupted],
            "running": [i.filename for i in self.inflight if i not in self.interrupted],
        }


@dataclass
class ApplyResult:
    applied: List[str]          # applied by this run, in order
    skipped: List[str]          # found already applied (by an earlier run or a concurrent applier)
    checksums: Dict[str, str]   # every file on disk -> SHA-256
    missing: List[str]
    warnings: List[LintIssue] = field(default_factory=list)
    duration_ms: float = 0.0
    revoked: List[str] = field(default_factory=list)  # privileges on the history that default privileges gave
    baselined: List[str] = field(default_factory=list)  # recorded as applied by a baseline (not run)

    def as_dict(self) -> dict:
        return {"applied": self.applied, "skipped": self.skipped, "pending": [], "baselined": self.baselined,
                "checksums": self.checksums, "missing": self.missing, "revoked": self.revoked,
                "warnings": [str(w) for w in self.warnings], "duration_ms": round(self.duration_ms, 1)}


# --------------------------------------------------------------------------- files, lint, status

def render_all(migrations: Sequence[Migration], settings: Settings) -> Dict[str, str]:
    return {m.filename: render(m.sql, settings.schema, m.filename) for m in migrations}


def render_parsed(migrations: Sequence[Migration], settings: Settings) -> Dict[str, str]:
    """Render every file and check that it parses (syntax errors are errors whether a file is applied or not);
    the other lint rules are for pending files (:func:`lint_pending`)."""
    rendered = render_all(migrations, settings)
    errors = [issue for m in migrations for issue in lint_mod.syntax(m.filename, rendered[m.filename])]
    if errors:
        raise LintError(errors)
    return rendered


def lint_pending(migrations: Sequence[Migration], settings: Settings) -> tuple:
    """Render and parse ``migrations`` (the pending ones: applied files are checked by checksum only); raise
    LintError on errors. Returns (rendered SQL by filename, warnings)."""
    rendered = render_all(migrations, settings)
    issues: List[LintIssue] = []
    for m in migrations:
        issues.extend(lint_mod.lint(m.filename, rendered[m.filename], schema=settings.schema,
                                    history=settings.history_parts))
        if not m.no_transaction:  # a CONCURRENTLY statement cannot run in the file's transaction
            issues.extend(indexes.lint(m.filename, rendered[m.filename]))
    errors = [i for i in issues if i.severity == "error" or settings.strict]
    if errors:
        raise LintError(errors)
    return rendered, issues


def status(conn: psycopg.Connection, settings: Settings, files: Optional[Sequence[Migration]] = None) -> Status:
    files = load(settings.migrations_dir) if files is None else files
    store = HistoryStore(conn, settings)
    exists, inflight_exists = store.tables_exist()
    recorded = store.read() if exists else {}
    return Status(plan(files, recorded, module=settings.module_name, history_table=settings.history_display),
                  exists, inflight=store.read_inflight() if inflight_exists else [])


# --------------------------------------------------------------------------- apply

def settings_sql(settings: Settings) -> List[sql.Composable]:
    """What every migration's transaction sets first."""
    statements = [sql.SQL("SET LOCAL lock_timeout = {}").format(
        sql.Literal(ms(settings.lock_timeout) if settings.lock_timeout is not None else "0")),
        # a client killed mid-migration: the server notices within a second and rolls back (instead of running
        # the rest of the file and holding its locks for nobody)
        sql.SQL("SET LOCAL client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL))]
    if settings.statement_timeout is not None:
        statements.append(sql.SQL("SET LOCAL statement_timeout = {}").format(
            sql.Literal(ms(settings.statement_timeout))))
    if settings.schema:
        statements.append(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(settings.schema)))
    return statements


def apply(conn: psycopg.Connection, settings: Settings, *,
          on_progress: Optional[Callable[[str], None]] = None,
          on_event: Optional[Callable[[str], None]] = None, known: bool = False) -> ApplyResult:
    """Apply every pending migration of ``settings``; each with its history row in one transaction.

    ``on_progress(filename)`` after each applied file; ``on_event(line)`` for what the user should see while it
    runs (a lock wait and its retry). ``known``: the caller applied these files here before (a stack's state says
    so), so objects found without a history are the spec's development reset (the history rows deleted), re-run
    as pgdbm would, not an unknown schema."""
    try:
        return _apply(conn, settings, on_progress, on_event or progress.discard, known)
    except psycopg.Error as exc:  # outside a migration's statements: history table, lock, catalog queries
        fail = diagnosis.failure(exc)
        raise MigrationError(
            f"Database error while reading or writing the migration history {settings.history_display}: "
            f"{fail.message}" + (f" (SQLSTATE {fail.sqlstate})" if fail.sqlstate else ""),
            remedy=diagnosis.remedy_for(fail, settings) if fail.sqlstate else "check the server log") from None


def _apply(conn: psycopg.Connection, settings: Settings, on_progress: Optional[Callable[[str], None]],
           on_event: Callable[[str], None], known: bool = False) -> ApplyResult:
    started = time.perf_counter()
    store = HistoryStore(conn, settings)
    files = load(settings.migrations_dir)
    current = status(conn, settings, files)
    current.plan.raise_for_mismatch()
    resume: List[Migration] = []
    if current.inflight:  # wait for a live run; refuse an interrupted one unless its concurrent build can resume
        resume = indexes.settle_inflight(store, files, [m.filename for m in current.plan.applied])
    rendered, warnings = lint_pending(current.plan.pending, settings)
    adopted: List[str] = []
    if not (current.plan.applied or current.plan.missing) and current.plan.pending:  # no history of the module
        if settings.baseline:
            result = adoption.baseline(conn, settings, settings.baseline, trust=settings.baseline_trust, files=files)
            on_event(result.message)
            adopted = result.recorded
            current = status(conn, settings, files)
        elif not known:
            adoption.refuse_unknown(conn, settings, files)
    if settings.risk_policy == "deny" and current.plan.pending:
        from .risk import analyze  # squawk runs only for the deny policy: a plain apply stays one round trip
        analyze(current.plan.pending, rendered, settings, conn).raise_for_errors(settings)
    if settings.schema and current.plan.pending and not store.schema_exists(settings.schema):
        raise MigrationError(
            f'schema "{settings.schema}" does not exist',
            remedy=f"create it before migrating: CREATE SCHEMA IF NOT EXISTS {settings.schema}; "
                   "(the MigratedSchema component does this), or give the user the CREATE SCHEMA permission")
    no_transaction = [m for m in current.plan.pending if m.no_transaction]
    if no_transaction:
        why = pooler(conn, settings)
        if why:
            raise PoolerError(
                f"{no_transaction[0].filename} is a no-transaction migration and this connection goes through a "
                f"transaction-pooling endpoint ({why}); nothing was applied",
                file=no_transaction[0].filename,
                remedy="apply it over a direct PostgreSQL connection or a session-pooled endpoint; if this endpoint "
                       "is direct or pools sessions, declare it: pool mode 'session' (--pool-mode session, "
                       "llmemory-db:poolMode)")
    if not current.history_exists:
        store.create()
    with_version = store.has_version_column()
    applied: List[str] = []
    skipped: List[str] = [m.filename for m in current.plan.applied if m.filename not in adopted]
    for migration in resume:  # recorded (handed over to a waiting applier), its index build then interrupted
        _apply_no_transaction(store, migration, render(migration.sql, settings.schema, migration.filename), applied,
                              with_version, on_event)
    for migration in current.plan.pending:
        try:
            done = _apply_retrying(store, migration, rendered[migration.filename], applied, with_version, on_event)
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise ConnectionLostError(migration.filename, str(exc).strip() or type(exc).__name__, applied,
                                          migration.no_transaction) from None
            raise
        (applied if done else skipped).append(migration.filename)
        if done and on_progress:
            on_progress(migration.filename)
    revoked = store.strip_default_privileges()  # no role but the migrations' may write the history
    revoked += ensure_startup_role(conn, settings)  # and what pgdbm at start-up needs
    return ApplyResult(applied, skipped, current.plan.checksums, current.plan.missing, warnings,
                       (time.perf_counter() - started) * 1000, revoked, adopted)


RETRY_FIRST_DELAY = 0.5   # seconds before the second attempt; doubles, with jitter, up to RETRY_MAX_DELAY
RETRY_MAX_DELAY = 8.0


def retry_delay(attempt: int) -> float:
    """Bounded exponential backoff with jitter: ~0.5, 1, 2, 4, 8, 8, ... seconds (±25%)."""
    return min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)


def _apply_retrying(store: HistoryStore, migration: Migration, rendered: str, committed: List[str],
                    with_version: bool, on_event: Callable[[str], None]) -> bool:
    """A transactional file that fails on lock_timeout (55P03) rolled back whole: retry it, with backoff, until
    lock_retry_timeout. Each attempt names the session it waited for (pg_blocking_pids, read while it waits).
    A no-transaction file is never retried (a failed CREATE INDEX CONCURRENTLY leaves an INVALID index)."""
    settings = store.settings
    if migration.no_transaction:
        return _apply_no_transaction(store, migration, rendered, committed, with_version, on_event)
    started, attempt = time.monotonic(), 0
    while True:
        attempt += 1
        watch = diagnosis.BlockerWatch(store.conn, min(0.5, settings.lock_timeout / 2)) \
            if settings.lock_timeout else None
        try:
            with progress.watching(store.conn, on_event, migration.filename, None, "(in one transaction)"):
                return _apply_in_transaction(store, migration, rendered, committed, with_version)
        except StatementError as exc:
            if exc.sqlstate != "55P03" or watch is None:
                raise
            blocker = watch.stop().describe()
            elapsed = time.monotonic() - started
            delay = retry_delay(attempt)
            if elapsed + delay > settings.lock_retry_timeout:
                raise LockRetryError(exc, attempt, elapsed, blocker) from None
            on_event(f"lock wait: {migration.filename} (attempt {attempt}) gave up after "
                     f"{settings.lock_timeout:g}s waiting for a lock (line {exc.line}); blocked by {blocker}; "
                     f"retrying in {delay:.1f}s (until {settings.lock_retry_timeout:g}s)")
            time.sleep(delay)
        finally:
            if watch is not None:
                watch.stop()


def _apply_in_transaction(store: HistoryStore, migration: Migration, rendered: str, committed: List[str],
                          with_version: bool) -> bool:
    """One migration and its history row in one transaction, in one round trip when the lock is free:

    BEGIN; take the module's advisory lock if it is free; re-plan under the lock (is the file recorded
    already?); the settings; the file; its history row (execution time measured by the server); COMMIT.
    When another applier holds the lock, wait for it (bounded) in a round trip of its own, then go on.
    Returns False when the file turned out to be applied already (by pgdbm or another applier).
    """
    conn, settings = store.conn, store.settings
    body = store.check_sql(migration).as_string(conn) + "; " + \
        sql.SQL("; ").join(settings_sql(settings)).as_string(conn) + ";\n"
    # "\n;" ends a last statement without a semicolon and a trailing -- comment alike
    tail = sql.SQL("\n; {}; COMMIT").format(store.insert_sql(migration, with_version, elapsed=sql.SQL(
        "greatest(1, (extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::int)"))).as_string(conn)
    head = "BEGIN; " + store.try_lock_sql().as_string(conn) + "; " + body
    for attempt in (1, 2):
        if attempt == 2:  # the lock was busy: wait for it in a round trip of its own, bounded by lock_wait_timeout
            store.begin_locked()
            head = body
        try:
            conn.execute(head + rendered + tail)  # no parameters: the text is sent as it is
            break
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise
            rollback(conn)
            if attempt == 1 and marked(exc, BUSY_MARK):
                continue
            if marked(exc, APPLIED_MARK) or store.is_history_violation(exc):
                store.already_applied(migration)  # raises if recorded with another checksum
                return False
            raise diagnosis.statement_error(
                conn, settings, migration, rendered, exc, committed, offset=len(head),
                replay=lambda: conn.execute(sql.SQL("; ").join([sql.SQL("BEGIN")] + settings_sql(settings))),
                rollback=lambda: rollback(conn)) from None
        except BaseException:
            rollback(conn)
            raise
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:  # the file must not swallow COMMIT
        rollback(conn)
        raise MigrationError(f"Migration {migration.filename} left its transaction open; nothing of it was applied",
                             remedy="check the file for an unterminated statement, quote or comment",
                             file=migration.filename)
    return True


def _apply_no_transaction(store: HistoryStore, migration: Migration, rendered: str, applied: List[str],
                          with_version: bool, on_event: Callable[[str], None] = progress.discard) -> bool:
    """pgdbm's no-transaction mode: the module's lock for the session, statements one by one in autocommit.

    Progress is recorded in the in-flight table as it goes, so that a run that dies half-way is reported by the
    next one (which refuses to go on, unless it stopped at a concurrent index statement: then it resumes there)
    instead of being re-run blindly or skipped. Concurrent index statements run with their cleanup and check
    (indexes), under a lock held from a second connection (lockwait.FileLock). Returns False when the file turned
    out to be applied already."""
    conn, settings = store.conn, store.settings
    statements = lint_mod.split(rendered)
    lock = lockwait.FileLock(store, migration, with_version, indexes.has_concurrent(statements), on_event)
    lock.acquire()
    try:
        conn.execute(sql.SQL("SET client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL)))
        if settings.schema:
            conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(settings.schema)))
        start = indexes.resume_point(store, migration, statements, on_event)
        if start is None:
            if store.already_applied(migration):
                return False
            store.raise_for_inflight()
            store.create_inflight_table()
            store.start_inflight(migration, len(statements), statements[0].line if statements else 1)
        t0 = time.perf_counter()
        for index in range(start or 0, len(statements)):
            statement = statements[index]
            try:
                indexes.execute(conn, settings, migration, statement, lock, on_event, applied,
                                last=index == len(statements) - 1, earlier=index > 0, resuming=index == start)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                error = diagnosis.no_transaction_error(migration, settings, statement, exc, applied)
                lock.undo()
                # nothing of the file ran: no trace; else the record says where it stopped
                store.fail_inflight(migration, None if index == 0 else f"line {error.line}: {error.server_message}")
                raise error from None
            except StatementError as error:  # a concurrent index statement; what it left INVALID is dropped
                lock.undo()
                store.fail_inflight(migration, None if index == 0 else f"line {error.line}: {error.server_message}")
                raise
            following = statements[index + 1].line if index + 1 < len(statements) else statement.line
            store.progress_inflight(migration, index + 1, following)
        lock.finish(int((time.perf_counter() - t0) * 1000))
        return True
    finally:
        if not (conn.broken or conn.closed):
            rollback(conn)
            conn.execute("RESET client_connection_check_interval")
            if settings.schema:
                conn.execute("RESET search_path")
        lock.release()
