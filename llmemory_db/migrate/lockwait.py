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

This engine's own waiters are never in that position (they poll), and they do not go on while a live run of the
module has an in-flight record: they wait for it (bounded by ``lock_wait_timeout``), as they waited for its lock.
"""
from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING, Callable, Optional

import psycopg
from psycopg import sql

from .connection import rollback
from .errors import LockTimeoutError
from .settings import duration

if TYPE_CHECKING:  # pragma: no cover
    from .history import HistoryStore

POLL_FIRST = 0.002  # seconds before the second try; x2 with jitter up to POLL_MAX
POLL_MAX = 0.1
HOLDER_APP = "llmemory-db lock for pid {pid}"
_HOLDER_APP = re.compile(r"^llmemory-db lock for pid (\d+)$")


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
            rollback(conn)
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


# ------------------------------------------------------------------ history.py's waits
def begin_locked(store: "HistoryStore", budget: Optional[float] = None) -> None:
    """BEGIN with the module's lock held for the transaction, polled for at most ``budget`` (default:
    lock_wait_timeout). The transaction then runs with lock_timeout = lock_wait_timeout (what the blocking wait
    left behind)."""
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
            rollback(conn)
            raise
        rollback(conn)
        return False

    if not poll(conn, attempt, budget):
        raise store.lock_timeout_error()
    try:
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
            sql.Literal(duration(store.settings.lock_wait_timeout))))
    except BaseException:
        rollback(conn)
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
        rollback(conn)
        return "another session (not identified: the catalog could not be read)"


# ------------------------------------------------------------------ the lock of one no-transaction file
# Sessions waiting for the module's lock while the build is in its last wait (for the transactions whose
# snapshots are older than its own); ``current``: the one it waits for right now (it waits for them one by one).
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

