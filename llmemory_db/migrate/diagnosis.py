"""Diagnosis: where a migration failed (file, line, statement) and what to do about it, by SQLSTATE.

Remedies are chosen from the SQLSTATE and from the failing statement's parse tree, never from the server's
message text (it is translated when the server runs with another ``lc_messages``).
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from typing import Callable, List, Optional, Sequence

import psycopg
from psycopg import errors as pg_errors

from . import lint as lint_mod
from .errors import StatementError, StatementFailure
from .files import Migration
from .settings import Settings

EXTENSION_REMEDY = (
    "run with a user that has SUPERUSER, or create the extension beforehand as a superuser: "
    "CREATE EXTENSION IF NOT EXISTS vector; GRANT ALL ON SCHEMA <schema> TO <migration user>;")


def failure(exc: psycopg.Error) -> StatementFailure:
    diag = exc.diag
    return StatementFailure(sqlstate=diag.sqlstate or "", message=diag.message_primary or str(exc).strip(),
                            detail=diag.message_detail or "", hint=diag.message_hint or "")


def statement_kind(text: str) -> str:
    """The parse-tree node of a statement (``CreateExtensionStmt``), '' when it does not parse."""
    try:
        parsed = lint_mod.parse(text)
    except Exception:  # pglast's ParseError: the server found the statement anyway
        return ""
    return parsed[0][0] if parsed else ""


def extension_name(text: str) -> str:
    try:
        parsed = lint_mod.parse(text)
    except Exception:
        return ""
    return parsed[0][1].get("extname", "") if parsed and parsed[0][0] == "CreateExtensionStmt" else ""


def remedy_for(fail: StatementFailure, settings: Settings, statement: str = "") -> str:
    """What to do about a failed statement, from its SQLSTATE (psycopg's error classes) and its kind."""
    error_class = pg_errors.lookup(fail.sqlstate) if fail.sqlstate else None
    if error_class is pg_errors.InsufficientPrivilege and statement_kind(statement) == "CreateExtensionStmt":
        return EXTENSION_REMEDY.replace("vector", extension_name(statement) or "vector")
    if error_class is pg_errors.InvalidSchemaName and settings.schema:
        return f"create the schema first: CREATE SCHEMA IF NOT EXISTS {settings.schema}; " \
               "or give the migration user the CREATE privilege on the database"
    if error_class is pg_errors.LockNotAvailable:
        return "another session holds a lock on an object this migration changes; retry later or raise lock_timeout"
    if error_class is pg_errors.QueryCanceled:
        return "the statement ran longer than statement_timeout; raise it or split the migration"
    data = data_remedy(fail, error_class, settings, statement)
    if data:
        return data
    if error_class in (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.TransactionRollback):
        return concurrency_remedy(error_class)
    return "fix the statement and run again"


def data_remedy(fail: StatementFailure, error_class, settings: Settings, statement: str) -> str:
    """An integrity violation (class 23), or a data exception (class 22) of a type change: the rows the table holds
    are what must change, not the statement; names the key from the server's DETAIL, and the query that lists the
    violating rows when the statement is one the data preflight knows."""
    from . import violations  # noqa: PLC0415 - pglast's AST is needed only on this path

    if not statement or error_class is None or \
            not issubclass(error_class, (psycopg.IntegrityError, psycopg.DataError)):
        return ""  # (without the statement: the engine's own queries on the history, not the user's data)
    queries = violations.failure_queries(statement, fail.sqlstate, settings.schema_name)
    if issubclass(error_class, psycopg.DataError) and not queries:  # class 22 of any other statement
        return ""
    detail = f" ({fail.detail.rstrip('.')})" if fail.detail else ""
    text = f"rows the table holds violate what the statement needs{detail}: the statement is not what must change, " \
           "the data is"
    if queries:
        check, query = queries[0]
        text += f": {violations.remedy(check)}; list them with: {query}"
    else:
        text += ": change or remove the rows the detail names (or the rows this statement writes that conflict " \
                "with them)"
    return text + "; then run again"


def concurrency_remedy(error_class) -> str:
    """Deadlock (40P01) and serialization failure (40001): another session's work, not this statement's fault."""
    if error_class is pg_errors.DeadlockDetected:
        return ("another session: it and this migration each waited for a lock the other held, and PostgreSQL "
                "ended this one (deadlock). The statement is not at fault: run again. If it repeats, look for what "
                "takes locks on these tables at the same time (pg_stat_activity, pg_locks): another applier, the "
                "application's own migrations at start-up, a long transaction, a CREATE INDEX CONCURRENTLY waiting "
                "for older snapshots")
    return ("another session: a concurrent transaction changed what this one read or wrote (serialization "
            "failure). The statement is not at fault: run again; if it repeats, run the migration when fewer "
            "sessions write these tables")


def line_in(statement: lint_mod.Statement, exc: psycopg.Error) -> int:
    """Line within the file of an error raised by ``statement`` sent on its own."""
    position = exc.diag.statement_position
    return statement.line + (statement.text[: int(position) - 1].count("\n") if position else 0)


def statement_error(conn: psycopg.Connection, settings: Settings, migration: Migration, rendered: str,
                    exc: psycopg.Error, committed: Sequence[str], offset: int = 0,
                    replay: Optional[Callable[[], None]] = None,
                    rollback: Optional[Callable[[], None]] = None) -> StatementError:
    """Locate the failing statement: by the server's error position (``offset`` characters of the batch came
    before the file), else by replaying the file statement by statement after ``replay()`` opened a
    transaction with the migration's settings; ``rollback()`` ends it."""
    fail = failure(exc)
    statements = lint_mod.split(rendered)
    position = exc.diag.statement_position
    failing: Optional[lint_mod.Statement] = None
    line = 1
    if position and 0 <= int(position) - 1 - offset < len(rendered):
        index = int(position) - 1 - offset
        line = rendered.count("\n", 0, index) + 1
        failing = next((s for s in reversed(statements) if s.line <= line), None)
    elif replay is not None:
        try:
            replay()
            if fail.sqlstate == "55P03":
                # the statement that waited for a lock fails again at once, without queueing the application a
                # second time behind its lock request
                conn.execute("SET LOCAL lock_timeout = '10ms'")
            for statement in statements:
                try:
                    conn.execute(statement.text)
                except psycopg.Error as again:
                    failing, line, fail = statement, line_in(statement, again), failure(again)
                    break
        finally:
            if rollback is not None:
                rollback()
    text = failing.text if failing else (statements[0].text if statements else rendered)
    return StatementError(migration.filename, line, text, fail, list(committed),
                          remedy=remedy_for(fail, settings, text), no_transaction=migration.no_transaction)


def no_transaction_error(migration: Migration, settings: Settings, statement: lint_mod.Statement,
                         exc: psycopg.Error, committed: List[str]) -> StatementError:
    fail = failure(exc)
    return StatementError(migration.filename, line_in(statement, exc), statement.text, fail, committed,
                          remedy=remedy_for(fail, settings, statement.text), no_transaction=True)


# a connection's parameters (for the watch's own connection), read once per connection: libpq's PQconninfo costs
# about as much as a small query's round trip
_PARAMS: "weakref.WeakKeyDictionary[psycopg.Connection, dict]" = weakref.WeakKeyDictionary()


def _params_of(conn: psycopg.Connection) -> dict:
    params = _PARAMS.get(conn)
    if params is None:
        params = _PARAMS[conn] = dict(conn.info.get_parameters(), password=conn.info.password or "")
    return params


class _Scheduler:
    """One daemon thread for every armed :class:`BlockerWatch` of the process: it sleeps until the earliest
    deadline, drops the watches stopped by then and fires the others."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: List[tuple] = []  # (deadline, sequence, watch)
        self._sequence = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def arm(self, watch: "BlockerWatch") -> None:
        deadline = time.monotonic() + watch.delay
        with self._cond:
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, next(self._sequence), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lock-watch-scheduler", daemon=True)
                self._thread.start()
            elif earliest is None or deadline < earliest:  # else the scheduler wakes up earlier anyway
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2]._stop.is_set():
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline = self._heap[0][0]
                now = time.monotonic()
                if now < deadline:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)[2]._fire()


_SCHEDULER = _Scheduler()

_BLOCKERS = """
SELECT a.pid, a.usename, coalesce(nullif(a.application_name, ''), '-'), a.state,
       date_trunc('second', now() - coalesce(a.xact_start, a.query_start)), left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80)
FROM unnest(pg_blocking_pids(%s)) AS b(pid) JOIN pg_stat_activity a ON a.pid = b.pid ORDER BY a.xact_start
"""


class _SharedConnection:
    """One connection that every watch of a database shares (a fleet's workers would otherwise each open one,
    over its bound of max_parallel + 1 connections); queries take turns."""

    def __init__(self, params: dict) -> None:
        params = {k: v for k, v in params.items() if v}
        params.update(connect_timeout=5, application_name="llmemory-db-lock-watch")
        self.conn = psycopg.connect(autocommit=True, **params)
        self.lock = threading.Lock()
        self.users = 0

    def query(self, query: str, args: tuple) -> List[tuple]:
        with self.lock:
            return self.conn.execute(query, args).fetchall()


class _WatchConnections:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict = {}

    def borrow(self, params: dict) -> "_Borrowed":
        return _Borrowed(self, tuple(sorted((k, str(v)) for k, v in params.items())), params)


class _Borrowed:
    def __init__(self, pool: _WatchConnections, key: tuple, params: dict) -> None:
        self.pool, self.key, self.params = pool, key, params

    def __enter__(self) -> _SharedConnection:
        with self.pool._lock:
            shared = self.pool._open.get(self.key)
            if shared is None or shared.conn.closed:
                shared = self.pool._open[self.key] = _SharedConnection(self.params)
            shared.users += 1
            return shared

    def __exit__(self, *exc) -> None:
        with self.pool._lock:
            shared = self.pool._open[self.key]
            shared.users -= 1
            if shared.users == 0:  # the last watch of this database: close it
                del self.pool._open[self.key]
                shared.conn.close()


_WATCH_CONNECTIONS = _WatchConnections()


class BlockerWatch:
    """Who blocks a migration while it waits for a lock: ``pg_blocking_pids`` of its backend, read from a second
    connection. That connection is opened only once the migration has been running for ``delay`` seconds (a
    quick migration never opens it), shared by every watch of the database (a fleet's workers: one connection,
    the "+1" of its bound), and closed when the last of them stops.

    Every file of every tenant arms one, so arming is cheap: a deadline in the process's one scheduler thread
    (not a thread per file), the connection's parameters read once per connection; a thread of its own starts only
    when the delay has passed."""

    def __init__(self, conn: psycopg.Connection, delay: float) -> None:
        self.pid, self.delay = conn.info.backend_pid, delay
        self.params = _params_of(conn)
        self.blockers: List[tuple] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        _SCHEDULER.arm(self)

    def _fire(self) -> None:
        """The delay has passed (called by the scheduler): watch from a thread of its own, unless stopped."""
        with self._lock:
            if self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._watch, name="lock-watch", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        try:
            with _WATCH_CONNECTIONS.borrow(self.params) as shared:
                while not self._stop.is_set():
                    rows = shared.query(_BLOCKERS, (self.pid,))
                    if rows:
                        self.blockers = rows
                    self._stop.wait(0.1)
        except Exception:  # noqa: BLE001 - the watch is a courtesy: the migration's own error says what happened
            pass

    def stop(self) -> "BlockerWatch":
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        return self

    def describe(self) -> str:
        if not self.blockers:
            return "the blocking session was not seen (it ended, or the lock was wanted only briefly)"
        return "; ".join(f"pid {pid} (user {user}, application {app}, {state}, transaction age {age}, "
                         f"query: {query!r})" for pid, user, app, state, age, query in self.blockers)
