"""Waiting for the module's lock without deadlocking a concurrent index build, and holding it for one.

**Polling, not queueing.** A session that waits in ``pg_advisory_lock`` / ``pg_advisory_xact_lock`` waits inside
a statement, with a snapshot. ``CREATE INDEX CONCURRENTLY`` (and ``REINDEX … CONCURRENTLY``) ends by waiting for
every transaction whose snapshot is older than its own: if it holds the lock that such a waiter waits for, the two
wait for each other and PostgreSQL kills one with 40P01 — the build itself when the waiter came first (measured:
the build is then left INVALID). So this engine never waits inside a statement: it polls
``pg_try_advisory_xact_lock`` / ``pg_try_advisory_lock`` in short autocommit statements with a jittered backoff
(2 ms doubling to 100 ms) until ``lock_wait_timeout`` (``python -m bench.lockwait``: 4 appliers racing over 20
files take 1.12x the time they took waiting in the lock queue). Same key and semantics as pgdbm's lock; the fleet's pair
(pgdbm's key shared + the schema's key exclusive) is tried as one statement. A try never jumps a queued request:
PostgreSQL refuses a try that conflicts with a waiting request, so a pgdbm waiting for its exclusive lock is not
starved by tenants' shared tries. A deadlock error while polling is retried within the same budget.

**Holding the lock for a concurrent index build** (:class:`FileLock`). pgdbm (what llmemory's ``initialize()``
runs at start-up) waits in ``pg_advisory_lock``, with a snapshot, and cannot be changed. For a no-transaction file
with a concurrent index statement the lock is therefore held by a second, idle connection (the *holder*), not by
the one that builds: PostgreSQL sees no cycle, kills nobody, and a guard thread watches the build (every 0.25 s,
one query). When the build is in its last phase (``waiting for old snapshots``: it waits for them one by one, so
a waiter for the module's lock may be waited for now or later) and a session waits for the module's lock (a
pgdbm starting up):

- the statement is the file's last: the file is complete once this wait ends (the index is built and validated;
  only the old snapshots' wait is left). The holder records the file and releases the lock; the waiter sees the
  file applied and goes on, its wait ends, and so does the build's. The in-flight record stays until the build
  returns: if it then fails (cancelled), the history row is deleted again with the invalid index; if the applier
  dies, the next run finds the record and finishes the index (``indexes``);
- else (statements follow that pgdbm would run concurrently with ours): the waiter the build waits for now has
  its statement cancelled (``pg_cancel_backend``), with an event naming it, since waiting on would never end.

This engine's own waiters are never in that position (they poll), and they do not go on while a live run of the
module has an in-flight record: they wait for it (bounded by ``lock_wait_timeout``), as they waited for its lock.
"""
from __future__ import annotations

import random
import re
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

import psycopg
from psycopg import sql

from . import diagnosis
from .errors import LockTimeoutError
from .progress import Event

if TYPE_CHECKING:  # pragma: no cover
    from .files import Migration
    from .history import HistoryStore

POLL_FIRST = 0.002  # seconds before the second try; x2 with jitter up to POLL_MAX
POLL_MAX = 0.1
GUARD_EVERY = 0.25  # how often the guard of a concurrent build looks for a waiter it waits for
HOLDER_APP = "llmemory-db lock for pid {pid}"
_HOLDER_APP = re.compile(r"^llmemory-db lock for pid (\d+)$")


def _rollback(conn: psycopg.Connection) -> None:
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass


def backoff(attempt: int) -> float:
    return min(POLL_MAX, POLL_FIRST * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)


def budget_of(timeout: float) -> Optional[float]:
    """lock_wait_timeout as a polling budget: 0 (or less) means no limit, as for PostgreSQL's lock_timeout."""
    return None if timeout <= 0 else timeout


def remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def poll(conn: psycopg.Connection, attempt: Callable[[], bool], budget: Optional[float]) -> bool:
    """Call ``attempt()`` (one short statement that never waits) until it returns True or ``budget`` seconds
    pass (None: no limit); a deadlock error (40P01) is retried within the budget. Returns whether it succeeded."""
    deadline = None if budget is None else time.monotonic() + budget
    tries = 0
    while True:
        tries += 1
        try:
            if attempt():
                return True
        except psycopg.errors.DeadlockDetected:
            _rollback(conn)
        left = remaining(deadline)
        if left is not None and left <= 0:
            return False
        time.sleep(backoff(tries) if left is None else min(backoff(tries), left))


# ------------------------------------------------------------------ the statements
def xact_try_sql(store: "HistoryStore") -> sql.Composed:
    if store.per_schema:
        return sql.SQL("SELECT pg_try_advisory_xact_lock_shared({}) AND pg_try_advisory_xact_lock({})").format(
            store.lock_key(), store.schema_key())
    return sql.SQL("SELECT pg_try_advisory_xact_lock({})").format(store.lock_key())


def session_try_sql(store: "HistoryStore") -> sql.Composed:
    """One statement: both locks of the pair, or neither."""
    if store.per_schema:
        return sql.SQL("SELECT CASE WHEN pg_try_advisory_lock_shared({k}) THEN CASE WHEN pg_try_advisory_lock({s}) "
                       "THEN true ELSE NOT pg_advisory_unlock_shared({k}) END ELSE false END").format(
            k=store.lock_key(), s=store.schema_key())
    return sql.SQL("SELECT pg_try_advisory_lock({})").format(store.lock_key())


def session_unlock_sql(store: "HistoryStore") -> sql.Composed:
    if store.per_schema:
        return sql.SQL("SELECT pg_advisory_unlock_shared({}), pg_advisory_unlock({})").format(
            store.lock_key(), store.schema_key())
    return sql.SQL("SELECT pg_advisory_unlock({})").format(store.lock_key())


def _ms(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


# ------------------------------------------------------------------ history.py's waits
def begin_locked(store: "HistoryStore", budget: Optional[float] = None) -> None:
    """BEGIN with the module's lock held for the transaction, polled for at most ``budget`` (default:
    lock_wait_timeout).
    The transaction then runs with lock_timeout = lock_wait_timeout (what the blocking wait left behind)."""
    conn = store.conn
    budget = budget_of(store.settings.lock_wait_timeout) if budget is None else budget
    head = sql.SQL("BEGIN; {}").format(xact_try_sql(store)).as_string(conn)

    def attempt() -> bool:
        try:
            cur = conn.execute(head)
            cur.nextset()
            if cur.fetchone()[0]:
                return True
        except BaseException:
            _rollback(conn)
            raise
        _rollback(conn)
        return False

    if not poll(conn, attempt, budget):
        raise store.lock_timeout_error()
    try:
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_ms(store.settings.lock_wait_timeout))))
    except BaseException:
        _rollback(conn)
        raise


def lock_session(store: "HistoryStore", conn: Optional[psycopg.Connection] = None,
                 budget: Optional[float] = None) -> None:
    """The module's lock for the session of ``conn`` (default: the store's), polled for at most ``budget``."""
    conn = store.conn if conn is None else conn
    budget = budget_of(store.settings.lock_wait_timeout) if budget is None else budget
    query = session_try_sql(store).as_string(conn)
    if not poll(conn, lambda: bool(conn.execute(query).fetchone()[0]), budget):
        raise store.lock_timeout_error()


# ------------------------------------------------------------------ who holds it
_HOLDER = """
SELECT a.pid, a.usename, a.application_name, coalesce(a.client_addr::text, 'local'), a.state,
       date_trunc('second', now() - coalesce(a.xact_start, a.backend_start)),
       left(regexp_replace(a.query, '\\s+', ' ', 'g'), 160)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext('pgdbm_migration_' || %s)::bigint
ORDER BY a.backend_start
LIMIT 1
"""
_ACTIVITY = ("SELECT state, left(regexp_replace(query, '\\s+', ' ', 'g'), 160), "
             "date_trunc('second', now() - query_start) FROM pg_stat_activity WHERE pid = %s")


def describe_holder(conn: psycopg.Connection, module: str) -> str:
    """The session that holds the module's lock and the statement it runs (for a holder connection of this
    engine: the statement of the applier it holds the lock for)."""
    try:
        row = conn.execute(_HOLDER, (module,)).fetchone()
        if not row:
            return "another session (it released the lock meanwhile)"
        pid, user, app, addr, state, age, query = row
        text = (f"pid {pid} (user {user}, application {app or '-'}, client {addr}, {state}, "
                f"transaction age {age}, statement: {query!r})")
        match = _HOLDER_APP.match(app or "")
        if match:
            applier = conn.execute(_ACTIVITY, (int(match.group(1)),)).fetchone()
            if applier:
                text = (f"pid {match.group(1)}, an applier of this engine running {applier[1]!r} for "
                        f"{applier[2]} ({applier[0]}; its lock is held by {text})")
        return text
    except psycopg.Error:
        _rollback(conn)
        return "another session (not identified: the catalog could not be read)"


# ------------------------------------------------------------------ the lock of one no-transaction file
# Sessions waiting for the module's lock while the build is in its last wait (for the transactions whose
# snapshots are older than its own); ``current``: the one it waits for right now (it waits for them one by one).
_WAITERS = """
SELECT w.pid, coalesce(nullif(w.application_name, ''), '-'), w.usename,
       left(regexp_replace(w.query, '\\s+', ' ', 'g'), 120), w.pid = p.current_locker_pid
FROM pg_stat_progress_create_index p
JOIN pg_locks l ON l.locktype = 'advisory' AND NOT l.granted AND l.objsubid = 1
     AND ((l.classid::bigint << 32) | l.objid::bigint) = {key}::bigint
JOIN pg_stat_activity w ON w.pid = l.pid
WHERE p.pid = {pid} AND p.phase = 'waiting for old snapshots'
"""


class FileLock:
    """The module's lock while one no-transaction file runs (see the module's docstring).

    ``separate``: hold it from a second connection (files with a concurrent index statement); else, or when that
    connection cannot be opened, from the store's own connection, as before. ``acquire`` waits (polling) for the
    lock and for any live run of the module to end; ``guard(...)`` watches one concurrent statement; ``finish``
    records the file (unless the guard did); ``undo`` deletes a row the guard wrote when the file then fails;
    ``release`` lets go."""

    def __init__(self, store: "HistoryStore", migration: "Migration", with_version: bool, separate: bool,
                 on_event: Callable[[str], None]) -> None:
        self.store, self.migration, self.with_version = store, migration, with_version
        self.separate, self.on_event = separate, on_event
        self.holder: Optional[psycopg.Connection] = None
        self.held = False
        self.recorded = False  # the history row is written (by the guard's hand-off, or an earlier run's)
        self.started = time.monotonic()
        self._mutex = threading.Lock()

    @property
    def conn(self) -> psycopg.Connection:
        return self.holder if self.holder is not None else self.store.conn

    def acquire(self) -> None:
        store = self.store
        if self.separate:
            try:
                params = {k: v for k, v in diagnosis._params_of(store.conn).items() if v}
                params.update(application_name=HOLDER_APP.format(pid=store.conn.info.backend_pid))
                self.holder = psycopg.connect(autocommit=True, **params)
            except psycopg.Error:
                self.holder = None  # e.g. max_connections: hold it from the building connection, as before
        limit = budget_of(store.settings.lock_wait_timeout)
        deadline = None if limit is None else time.monotonic() + limit
        tries = 0
        while True:
            try:
                lock_session(store, self.conn, budget=remaining(deadline))
            except BaseException:
                self.close()
                raise
            self.held = True
            live = self._live_runs()
            if not live:
                return
            self._unlock()
            tries += 1
            left = remaining(deadline)
            if left is not None and left <= 0:
                self.close()
                raise live_run_error(store, live)
            time.sleep(backoff(tries) if left is None else min(backoff(tries), left))

    def _live_runs(self) -> list:
        store = self.store
        return running(store.read_inflight(), store.conn) if store.tables_exist()[1] else []

    def _unlock(self) -> None:
        if self.held and not self.conn.closed:
            try:
                self.conn.execute(session_unlock_sql(self.store))
            except psycopg.Error:
                pass
        self.held = False

    @contextmanager
    def guard(self, statement_text: str, line: int, last: bool) -> Iterator[None]:
        """While a concurrent index statement runs on the store's connection: hand the lock over to a waiter the
        build waits for (``last``), else cancel that waiter. Only with a separate holder (else PostgreSQL's own
        deadlock detection decides, as before)."""
        if self.holder is None or not self.held:
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._guard, args=(stop, statement_text, line, last),
                                  name="index-build-guard", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)

    def _guard(self, stop: threading.Event, statement_text: str, line: int, last: bool) -> None:
        query = sql.SQL(_WAITERS).format(pid=sql.Literal(self.store.conn.info.backend_pid),
                                         key=self.store.lock_key()).as_string(self.holder)
        cancelled = set()
        try:
            while not stop.wait(GUARD_EVERY):
                with self._mutex:
                    if not self.held:
                        return
                    rows = [r[:4] for r in self.holder.execute(query).fetchall()
                            if r[0] not in cancelled and (last or r[4])]
                    if not rows:
                        continue
                    if last:
                        self._hand_off(rows, line)
                        return
                    for pid, app, user, waiting in rows:
                        cancelled.add(pid)
                        try:
                            self.holder.execute("SELECT pg_cancel_backend(%s)", (pid,))
                        except psycopg.Error as exc:  # another role's session, without pg_signal_backend
                            self.on_event(Event(
                                f"lock-cancel: {self.migration.filename}:{line}: the index build waits for pid "
                                f"{pid} (user {user}, application {app}: {waiting!r}), which waits for the "
                                f"migration lock this run holds, and its statement could not be cancelled "
                                f"({exc.diag.message_primary or exc}): the build waits until that session stops "
                                f"waiting (its lock_timeout), or end it: SELECT pg_cancel_backend({pid})",
                                "lock-cancel", self.migration.filename, line, pid=pid, application=app,
                                cancelled=False))
                            continue
                        self.on_event(Event(
                            f"lock-cancel: {self.migration.filename}:{line}: the index build waits for pid {pid} "
                            f"(user {user}, application {app}: {waiting!r}), which waits for the migration lock "
                            "this run holds: cancelled its statement (it would wait forever; more statements of "
                            "this file follow, so the lock cannot be handed over). Put each concurrent index "
                            "statement last in its file to let such appliers through",
                            "lock-cancel", self.migration.filename, line, pid=pid, application=app))
        except psycopg.Error:
            pass  # the guard is best effort; the build's own outcome is what counts

    def _hand_off(self, rows: List[tuple], line: int) -> None:
        store, migration = self.store, self.migration
        elapsed = int((time.monotonic() - self.started) * 1000)
        try:
            self.holder.execute(sql.SQL("BEGIN; {}; COMMIT").format(
                store.insert_sql(migration, self.with_version, elapsed)))
        except psycopg.Error as exc:
            _rollback(self.holder)
            if not store.is_history_violation(exc):
                return  # could not record: keep the lock (the waiter stays; nothing is lost)
        self.recorded = True
        self._unlock()
        who = "; ".join(f"pid {pid} (user {user}, application {app}: {waiting!r})" for pid, app, user, waiting in rows)
        self.on_event(Event(
            f"lock-handoff: {migration.filename}:{line}: the index is built and validated and waits for the "
            f"transactions older than it, and {who} waits for the migration lock (a deadlock if it waited on). "
            f"Recorded {migration.filename} and released the lock so that it goes on; the index becomes valid "
            "when the build's wait ends (checked before this run ends)", "lock-handoff", migration.filename, line, waiters=[r[0] for r in rows]))

    def finish(self, elapsed_ms: int) -> None:
        """Record the file and drop its in-flight record, in one transaction; when the row is there already (the
        hand-off, or a resumed run of a recorded file), only the in-flight record goes."""
        store, migration = self.store, self.migration
        with self._mutex:
            if not (self.recorded or store.already_applied(migration)):
                store.finish_inflight(migration, self.with_version, elapsed_ms)
                return
            s = store.settings
            store.conn.execute(sql.SQL("BEGIN; UPDATE {} SET execution_time_ms = {} WHERE filename = {} AND "
                                       "module_name = {}; DELETE FROM {} WHERE {}; COMMIT").format(
                s.history_ident, sql.Literal(max(1, elapsed_ms)), sql.Literal(migration.filename),
                sql.Literal(s.module_name), s.inflight_ident, store._inflight_where(migration.filename)))

    def undo(self) -> None:
        """The file failed after its row was written: delete the row (the file is not applied)."""
        store, migration = self.store, self.migration
        with self._mutex:
            if not (self.recorded or store.already_applied(migration)):
                return
            s = store.settings
            store.conn.execute(sql.SQL("DELETE FROM {} WHERE filename = {} AND module_name = {}").format(
                s.history_ident, sql.Literal(migration.filename), sql.Literal(s.module_name)))
            self.recorded = False

    def release(self) -> None:
        with self._mutex:
            self._unlock()
            self.close()

    def close(self) -> None:
        if self.holder is not None:
            try:
                self.holder.close()
            except psycopg.Error:
                pass
            self.holder = None


def running(records: list, conn: psycopg.Connection) -> list:
    """The in-flight records of runs still at work: their backend is connected, and they did not fail (a failed
    run's connection may live on: this very one, in a program that applies again)."""
    return [i for i in records if i.alive and not i.error and i.pid != conn.info.backend_pid]


def live_run_error(store: "HistoryStore", live: list) -> LockTimeoutError:
    s = store.settings
    running = "; ".join(f"{i.filename} by backend pid {i.pid} (started {i.started_at}, {i.done} of {i.total} "
                        f"statement(s) done, now at line {i.next_line})" for i in live)
    statement = ""
    try:
        row = store.conn.execute(_ACTIVITY, (live[0].pid,)).fetchone()
        if row:
            statement = f"; it runs {row[1]!r} for {row[2]}"
    except psycopg.Error:
        pass
    return LockTimeoutError(
        f"Timed out after {s.lock_wait_timeout:g}s waiting for another run of module {s.module_name!r} to finish: "
        f"{running}{statement}",
        remedy="wait for that run to finish (a concurrent index build on a large table takes minutes; its "
               "progress is in pg_stat_progress_create_index) and run again, or raise the lock wait timeout")

