"""The in-flight log of ``-- pgdbm:no-transaction`` files: a file that started and has not finished.

A no-transaction file runs statement by statement in autocommit; its progress is recorded as it goes (a table next
to the history, ``<history>_inflight``, which pgdbm ignores), so a run that dies half-way is reported by the next
one, which refuses to go on until someone settles it with ``resolve`` (retry, or mark applied).
"""
from __future__ import annotations

from typing import List, Optional

import psycopg
from psycopg import sql

from .errors import Inflight, InterruptedMigrationError, ResolveError
from .files import Migration, load


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

    def _where(self, filename: str) -> sql.Composed:
        return sql.SQL("module_name = {} AND filename = {}").format(sql.Literal(self.settings.module_name),
                                                                   sql.Literal(filename))

    def start(self, migration: Migration, total: int, first_line: int) -> None:
        self.conn.execute(sql.SQL("INSERT INTO {} (module_name, filename, checksum, total, next_line) "
                                  "VALUES (%s, %s, %s, %s, %s)").format(self.settings.inflight_ident),
                          (self.settings.module_name, migration.filename, migration.checksum, total, first_line))

    def progress(self, migration: Migration, done: int, next_line: int) -> None:
        self.conn.execute(sql.SQL("UPDATE {} SET done = %s, next_line = %s WHERE {}").format(
            self.settings.inflight_ident, self._where(migration.filename)), (done, next_line))

    def fail(self, migration: Migration, error: Optional[str]) -> None:
        """Record why the file stopped; ``None``: nothing of it ran, leave no trace."""
        if error is None:
            self.conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(
                self.settings.inflight_ident, self._where(migration.filename)))
        else:
            self.conn.execute(sql.SQL("UPDATE {} SET error = %s WHERE {}").format(
                self.settings.inflight_ident, self._where(migration.filename)), (error,))

    def finish(self, migration: Migration, with_version: bool, elapsed_ms: int) -> None:
        """Record the file as applied and drop its in-flight record, in one transaction."""
        self.conn.execute(sql.SQL("BEGIN; {}; DELETE FROM {} WHERE {}; COMMIT").format(
            self.store.insert_sql(migration, with_version, elapsed_ms), self.settings.inflight_ident,
            self._where(migration.filename)))

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
            conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(s.inflight_ident, self._where(filename)))
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
