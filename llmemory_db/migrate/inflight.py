"""The in-flight log of ``-- pgdbm:no-transaction`` files: a file that started and has not finished.

A no-transaction file runs statement by statement in autocommit; its progress is recorded as it goes (a table next
to the history, ``<history>_inflight``, which pgdbm ignores), so a run that dies half-way is reported by the next
one, which refuses to go on until someone settles it with ``resolve`` (retry, or mark applied).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import parser, progress
from .connection import rollback
from .errors import Inflight, InterruptedMigrationError, ResolveError
from .files import Migration, load
from .indexes import concurrent_op
from .lockwait import backoff, begin_locked, budget_of, live_run_error, remaining, running
from .events import Sink
from .progress import Event
from .render import render

if TYPE_CHECKING:  # pragma: no cover
    from .history import HistoryStore
    from .settings import Settings


class InflightLog:
    """The in-flight records of one module (``store``: its :class:`~.history.HistoryStore`)."""

    def __init__(self, store) -> None:
        self.store, self.conn, self.settings = store, store.conn, store.settings

    def exists(self) -> bool:
        return self.store.tables_exist()[1]

    def read(self) -> List[Inflight]:
        """No-transaction migrations of this module that started and did not finish; ``alive`` when the backend
        that started them is still connected (pid reuse is told apart by the backend's start time)."""
        rows = self.conn.execute(sql.SQL(
            "SELECT i.filename, i.checksum, to_char(i.started_at, 'YYYY-MM-DD HH24:MI:SS TZ'), i.pid, i.done, "
            "       i.total, i.next_line, coalesce(i.error, ''), EXISTS (SELECT 1 FROM pg_stat_activity a "
            "       WHERE a.pid = i.pid AND (a.backend_start IS NULL OR a.backend_start <= i.started_at)) "
            "FROM {} i WHERE i.module_name = %s ORDER BY i.filename").format(self.settings.inflight_ident),
            (self.settings.module_name,)).fetchall()
        return [Inflight(*row) for row in rows]

    def raise_if_any(self) -> None:
        if self.exists():
            inflight = self.read()
            if inflight:
                raise InterruptedMigrationError(inflight, self.settings.module_name)

    def create(self) -> None:
        try:
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " module_name VARCHAR(100) NOT NULL,"
                " filename VARCHAR(255) NOT NULL,"
                " checksum VARCHAR(64) NOT NULL,"
                " started_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                " pid INTEGER NOT NULL DEFAULT pg_backend_pid(),"
                " done INTEGER NOT NULL DEFAULT 0,"
                " total INTEGER NOT NULL,"
                " next_line INTEGER NOT NULL,"
                " error TEXT,"
                " PRIMARY KEY (module_name, filename))").format(self.settings.inflight_ident))
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            pass  # another module sharing this history table created it meanwhile

    def where(self, filename: str) -> sql.Composed:
        return sql.SQL("module_name = {} AND filename = {}").format(sql.Literal(self.settings.module_name),
                                                                   sql.Literal(filename))

    def start(self, migration: Migration, total: int, first_line: int) -> None:
        self.conn.execute(sql.SQL("INSERT INTO {} (module_name, filename, checksum, total, next_line) "
                                  "VALUES (%s, %s, %s, %s, %s)").format(self.settings.inflight_ident),
                          (self.settings.module_name, migration.filename, migration.checksum, total, first_line))

    def progress(self, migration: Migration, done: int, next_line: int) -> None:
        self.conn.execute(sql.SQL("UPDATE {} SET done = %s, next_line = %s WHERE {}").format(
            self.settings.inflight_ident, self.where(migration.filename)), (done, next_line))

    def fail(self, migration: Migration, error: Optional[str]) -> None:
        """Record why the file stopped; ``None``: nothing of it ran, leave no trace."""
        if error is None:
            self.conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(
                self.settings.inflight_ident, self.where(migration.filename)))
        else:
            self.conn.execute(sql.SQL("UPDATE {} SET error = %s WHERE {}").format(
                self.settings.inflight_ident, self.where(migration.filename)), (error,))

    def finish(self, migration: Migration, with_version: bool, elapsed_ms: int) -> None:
        """Record the file as applied and drop its in-flight record, in one transaction."""
        self.conn.execute(sql.SQL("BEGIN; {}; DELETE FROM {} WHERE {}; COMMIT").format(
            self.store.insert_sql(migration, with_version, elapsed_ms), self.settings.inflight_ident,
            self.where(migration.filename)))

    def resolve(self, filename: str, action: str) -> str:
        """Settle an interrupted no-transaction migration: ``retry`` (the next run re-runs the whole file) or
        ``mark-applied`` (finished by hand: record it with the checksum of the file on disk)."""
        s, conn = self.settings, self.conn
        if action not in ("retry", "mark-applied"):
            raise ResolveError(f"Unknown action {action!r}", remedy="use retry or mark-applied")
        with self.store.locked():
            inflight = {i.filename: i for i in self.read()} if self.exists() else {}
            if filename not in inflight:
                raise ResolveError(f"{filename} is not recorded as interrupted for module {s.module_name!r}",
                                     remedy="run status to list interrupted migrations", file=filename)
            conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(s.inflight_ident, self.where(filename)))
            if action == "retry":
                return f"{filename}: the next run re-runs it from its first statement"
            migration = next((m for m in load(s.migrations_dir) if m.filename == filename), None)
            if migration is None:
                raise ResolveError(f"{filename} is not in {s.migrations_dir}", file=filename,
                                     remedy="run from the directory the migration came from (--dir)")
            if migration.checksum != inflight[filename].checksum:
                raise ResolveError(f"{filename} changed since it was interrupted (checksum "
                                     f"{inflight[filename].checksum} then, {migration.checksum} now)", file=filename,
                                     remedy="restore the file as it ran, or use --retry to run the new content")
            conn.execute(self.store.insert_sql(migration, self.store.has_version_column()))
            return f"{filename}: recorded as applied"


# --------------------------------------------------------------------------- interrupted concurrent index builds
def resumable(record: Inflight, migration: Optional[Migration], statements: Sequence[parser.Statement]) -> bool:
    """May the next run go on by itself? The run died (not failed), the file is the one that ran, and the
    statement it stopped at is a concurrent index statement (which :func:`execute` cleans up and re-runs)."""
    if migration is None or record.error or record.alive or record.checksum != migration.checksum:
        return False
    if record.total != len(statements) or not 0 <= record.done < len(statements):
        return False
    return concurrent_op(statements[record.done].text) is not None


def resume_point(store: "HistoryStore", migration: Migration, statements: Sequence[parser.Statement],
                 on_event: Sink) -> Optional[int]:
    """Under the module's lock, before a no-transaction file runs: the statement to resume it at (its in-flight
    record taken over by this run), or None to run it as usual (which refuses an interrupted record)."""
    if not InflightLog(store).exists():
        return None
    record = next((i for i in InflightLog(store).read() if i.filename == migration.filename), None)
    if record is None or not resumable(record, migration, statements):
        return None
    s = store.settings
    store.conn.execute(sql.SQL("UPDATE {} SET pid = pg_backend_pid(), started_at = now(), error = NULL "
                               "WHERE {}").format(s.inflight_ident, InflightLog(store).where(migration.filename)))
    statement = statements[record.done]
    on_event(Event(
        f"index-resume: {migration.filename}:{statement.line}: resuming the run that was interrupted (backend pid "
        f"{record.pid} is gone) at its statement {record.done + 1} of {record.total}, a concurrent index statement "
        f"({progress.label_of(statement.text)}); the {record.done} statement(s) before it completed",
        "index-resume", migration.filename, statement.line, done=record.done, total=record.total, pid=record.pid))
    return record.done


def settle_inflight(store: "HistoryStore", files: Sequence[Migration], recorded: Sequence[str]) -> List[Migration]:
    """What ``apply`` does first when in-flight records exist, under the module's lock (polled): wait (bounded by
    lock_wait_timeout) while a live run of the module has one; refuse (InterruptedMigrationError) those that need
    a decision; return the *recorded* files whose interrupted concurrent build this run resumes (a pending one is
    resumed by its own run)."""
    settings, conn = store.settings, store.conn
    by_name = {m.filename: m for m in files}
    limit = budget_of(settings.lock_wait_timeout)
    deadline = None if limit is None else time.monotonic() + limit
    tries = 0
    while True:
        begin_locked(store, remaining(deadline))
        try:
            records = InflightLog(store).read() if InflightLog(store).exists() else []
            live = running(records, conn)
            if not live:
                blocked = [i for i in records if not resumable(i, by_name.get(i.filename), _statements(
                    by_name.get(i.filename), settings))]
                if blocked:
                    raise InterruptedMigrationError(blocked, settings.module_name)
                conn.execute("COMMIT")
                return [by_name[i.filename] for i in records if i.filename in set(recorded)]
        except BaseException:
            rollback(conn)
            raise
        conn.execute("ROLLBACK")
        tries += 1
        left = remaining(deadline)
        if left is not None and left <= 0:
            raise live_run_error(store, live)
        time.sleep(backoff(tries) if left is None else min(backoff(tries), left))


def _statements(migration: Optional[Migration], settings: "Settings") -> List[parser.Statement]:
    if migration is None:
        return []
    try:
        return parser.split(render(migration.sql, settings.schema, migration.filename))
    except Exception:
        return []
