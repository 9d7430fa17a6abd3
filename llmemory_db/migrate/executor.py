"""The executor: applies pending files one by one, each with one of two strategies.

- in a transaction (the default): the file and its history row commit together, in one round trip when the
  module's lock is free; a file that waited longer than lock_timeout for a table lock rolled back whole and is
  retried with backoff until lock_retry_timeout;
- ``-- pgdbm:no-transaction``: statement by statement in autocommit under a session lock, with progress in the
  in-flight log (:mod:`.inflight`) so that an interrupted run is reported, never silently re-run or skipped.

What to apply, and everything decided before and after (adoption, risk, privileges), is the operations layer's
(:mod:`.ops`); the executor only applies.
"""
from __future__ import annotations

import random
import time
import weakref
from typing import Callable, List, Optional, Sequence, Tuple

import psycopg
from psycopg import sql

from . import diagnosis, index_builds, indexes, parser, progress
from .errors import ConnectionLostError, LockRetryError, StatementError, UnterminatedFileError
from .events import Event, Sink, ignore
from .filelock import FileLock
from .files import Migration
from .history import APPLIED_MARK, BUSY_MARK, HistoryStore, marked, rollback
from .inflight import InflightLog, resume_point
from .render import render
from .roundtrip import FileSQL
from .settings import Settings, duration
from .watch import BlockerWatch

CLIENT_CHECK_INTERVAL = "1s"  # how soon the server notices a dead client and rolls its migration back


def settings_sql(settings: Settings) -> List[sql.Composable]:
    """What every migration's transaction sets first."""
    statements = [sql.SQL("SET LOCAL lock_timeout = {}").format(
        sql.Literal(duration(settings.lock_timeout) if settings.lock_timeout is not None else "0")),
        # a client killed mid-migration: the server notices within a second and rolls back (instead of running
        # the rest of the file and holding its locks for nobody)
        sql.SQL("SET LOCAL client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL))]
    if settings.statement_timeout is not None:
        statements.append(sql.SQL("SET LOCAL statement_timeout = {}").format(
            sql.Literal(duration(settings.statement_timeout))))
    if settings.schema:
        statements.append(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(settings.schema)))
    return statements


def apply_pending(store: HistoryStore, pending: Sequence[Migration], rendered: dict, on_event: Sink,
                  on_progress: Optional[Callable[[str], None]] = None,
                  resume: Sequence[Migration] = ()) -> Tuple[List[str], List[str]]:
    """Apply ``pending`` in order (``rendered``: filename -> SQL); returns (applied by this run, found applied
    already by another applier). ``resume``: recorded files whose concurrent index build was interrupted after the
    lock was handed over (:func:`.inflight.settle`): finished first. A connection lost mid-file is a
    :class:`ConnectionLostError` that says what the server kept."""
    conn = store.conn
    with_version = store.has_version_column()
    applied: List[str] = []
    skipped: List[str] = []
    for migration in resume:
        apply_no_transaction(store, migration, render(migration.sql, store.settings.schema, migration.filename),
                             applied, with_version, on_event)
    for migration in pending:
        try:
            done = apply_file(store, migration, rendered[migration.filename], applied, with_version, on_event)
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise ConnectionLostError(migration.filename, str(exc).strip() or type(exc).__name__, applied,
                                          migration.no_transaction) from None
            raise
        (applied if done else skipped).append(migration.filename)
        if done and on_progress:
            on_progress(migration.filename)
    return applied, skipped


RETRY_FIRST_DELAY = 0.5   # seconds before the second attempt; doubles, with jitter, up to RETRY_MAX_DELAY
RETRY_MAX_DELAY = 8.0


def retry_delay(attempt: int) -> float:
    """Bounded exponential backoff with jitter: ~0.5, 1, 2, 4, 8, 8, ... seconds (±25%)."""
    return min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)


def apply_file(store: HistoryStore, migration: Migration, rendered: str, committed: List[str],
                    with_version: bool, on_event: Sink) -> bool:
    """A transactional file that fails on lock_timeout (55P03) rolled back whole: retry it, with backoff, until
    lock_retry_timeout. Each attempt names the session it waited for (pg_blocking_pids, read while it waits).
    A no-transaction file is never retried (a failed CREATE INDEX CONCURRENTLY leaves an INVALID index)."""
    settings = store.settings
    if migration.no_transaction:
        return apply_no_transaction(store, migration, rendered, committed, with_version, on_event)
    started, attempt = time.monotonic(), 0
    while True:
        attempt += 1
        watch = BlockerWatch(store.conn, min(0.5, settings.lock_timeout / 2)) \
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
            on_event(Event("lock-wait", f"lock wait: {migration.filename} (attempt {attempt}) gave up after "
                           f"{settings.lock_timeout:g}s waiting for a lock (line {exc.line}); blocked by {blocker}; "
                           f"retrying in {delay:.1f}s (until {settings.lock_retry_timeout:g}s)", "warning",
                           migration.filename))
            time.sleep(delay)
        finally:
            if watch is not None:
                watch.stop()


_FILE_SQL: "weakref.WeakKeyDictionary[HistoryStore, FileSQL]" = weakref.WeakKeyDictionary()


def _file_sql(store: HistoryStore, with_version: bool) -> FileSQL:
    """The round trip's constant parts of ``store`` (composed on first use, again if with_version changes)."""
    cached = _FILE_SQL.get(store)
    if cached is None or cached.with_version != with_version:
        cached = _FILE_SQL[store] = FileSQL(store, with_version, settings_sql(store.settings))
    return cached


def _apply_in_transaction(store: HistoryStore, migration: Migration, rendered: str, committed: List[str],
                          with_version: bool) -> bool:
    """One migration and its history row in one transaction, in one round trip when the lock is free:

    BEGIN; take the module's advisory lock if it is free; re-plan under the lock (is the file recorded
    already?); the settings; the file; its history row (execution time measured by the server); COMMIT.
    When another applier holds the lock, wait for it (bounded) in a round trip of its own, then go on.
    Returns False when the file turned out to be applied already (by pgdbm or another applier).
    """
    conn, settings = store.conn, store.settings
    texts = _file_sql(store, with_version)  # the constant parts, composed once per store (roundtrip.py)
    # "\n;" ends a last statement without a semicolon and a trailing -- comment alike
    tail = texts.tail(migration)
    head = texts.head(migration)
    for attempt in (1, 2):
        if attempt == 2:  # the lock was busy: wait for it in a round trip of its own, bounded by lock_wait_timeout
            store.begin_locked()
            head = texts.head(migration, waited=True)
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
        raise UnterminatedFileError(f"Migration {migration.filename} left its transaction open; nothing of it was applied",
                             remedy="check the file for an unterminated statement, quote or comment",
                             file=migration.filename)
    return True


def apply_no_transaction(store: HistoryStore, migration: Migration, rendered: str, applied: List[str],
                         with_version: bool, on_event: Sink = ignore) -> bool:
    """pgdbm's no-transaction mode: the module's lock for the session, statements one by one in autocommit.

    Progress is recorded in the in-flight log as it goes, so that a run that dies half-way is reported by the next
    one (which refuses to go on, unless it stopped at a concurrent index statement: then it resumes there) instead
    of being re-run blindly or skipped. Concurrent index statements run with their cleanup and check
    (:mod:`.index_builds`), under a lock held from a second connection (:class:`.filelock.FileLock`). Returns False
    when the file turned out to be applied already."""
    conn, settings = store.conn, store.settings
    statements = parser.split(rendered)
    lock = FileLock(store, migration, with_version, indexes.has_concurrent(statements), on_event)
    lock.acquire()
    log = InflightLog(store)
    try:
        conn.execute(sql.SQL("SET client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL)))
        if settings.schema:
            conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(settings.schema)))
        start = resume_point(store, migration, statements, on_event)
        if start is None:
            if store.already_applied(migration):
                return False
            log.raise_if_any()
            log.create()
            log.start(migration, len(statements), statements[0].line if statements else 1)
        t0 = time.perf_counter()
        for index in range(start or 0, len(statements)):
            statement = statements[index]
            try:
                index_builds.execute(conn, settings, migration, statement, lock, on_event, applied,
                                     last=index == len(statements) - 1, earlier=index > 0, resuming=index == start)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                error = diagnosis.no_transaction_error(migration, settings, statement, exc, applied)
                lock.undo()
                # nothing of the file ran: no trace; else the record says where it stopped
                log.fail(migration, None if index == 0 else f"line {error.line}: {error.server_message}")
                raise error from None
            except StatementError as error:  # a concurrent index statement; what it left INVALID is dropped
                lock.undo()
                log.fail(migration, None if index == 0 else f"line {error.line}: {error.server_message}")
                raise
            following = statements[index + 1].line if index + 1 < len(statements) else statement.line
            log.progress(migration, index + 1, following)
        lock.finish(int((time.perf_counter() - t0) * 1000))
        return True
    finally:
        if not (conn.broken or conn.closed):
            rollback(conn)
            conn.execute("RESET client_connection_check_interval")
            if settings.schema:
                conn.execute("RESET search_path")
        lock.release()
