"""Holding the module's lock while one no-transaction file runs, from a second connection when the file builds an
index concurrently, so that a waiting pgdbm deadlocks nobody.

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
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, List, Optional

import psycopg
from psycopg import sql

from .connection import rollback
from .events import Sink
from .inflight import InflightLog
from .lockwait import (HOLDER_APP, backoff, budget_of, live_run_error, lock_session, remaining, running,
                       session_unlock_sql)
from .progress import Event
from .watch import params_of

if TYPE_CHECKING:  # pragma: no cover
    from .files import Migration
    from .history import HistoryStore

GUARD_EVERY = 0.25  # how often the guard of a concurrent build looks for a waiter it waits for


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
                 on_event: Sink) -> None:
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
                params = {k: v for k, v in params_of(store.conn).items() if v}
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
        return running(InflightLog(store).read(), store.conn) if InflightLog(store).exists() else []

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
            rollback(self.holder)
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
                InflightLog(store).finish(migration, self.with_version, elapsed_ms)
                return
            s = store.settings
            store.conn.execute(sql.SQL("BEGIN; UPDATE {} SET execution_time_ms = {} WHERE filename = {} AND "
                                       "module_name = {}; DELETE FROM {} WHERE {}; COMMIT").format(
                s.history_ident, sql.Literal(max(1, elapsed_ms)), sql.Literal(migration.filename),
                sql.Literal(s.module_name), s.inflight_ident, InflightLog(store).where(migration.filename)))

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


