"""Watching a running migration from a second connection: who blocks it (``pg_blocking_pids``), cheaply.

Every file of every tenant arms a :class:`BlockerWatch`, so arming costs a heap push in the process's one scheduler
thread; a connection is opened only for a migration still running after its delay, and shared by every watch of
the same database.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from typing import List, Optional

import psycopg

# a connection's parameters (for the watch's own connection), read once per connection: libpq's PQconninfo costs
# about as much as a small query's round trip
_PARAMS: "weakref.WeakKeyDictionary[psycopg.Connection, dict]" = weakref.WeakKeyDictionary()


def params_of(conn: psycopg.Connection) -> dict:
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


SCHEDULER = _Scheduler()

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


WATCH_CONNECTIONS = _WatchConnections()


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
        self.params = params_of(conn)
        self.blockers: List[tuple] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        SCHEDULER.arm(self)

    def _fire(self) -> None:
        """The delay has passed (called by the scheduler): watch from a thread of its own, unless stopped."""
        with self._lock:
            if self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._watch, name="lock-watch", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        try:
            with WATCH_CONNECTIONS.borrow(self.params) as shared:
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
