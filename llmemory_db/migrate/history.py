"""The history store: pgdbm's history table, the in-flight records of no-transaction files, pgdbm's lock.

Same table layout, same checksum, same advisory lock key (``hashtext('pgdbm_migration_' || module)``) as pgdbm,
taken per transaction, so pgdbm instances queue behind this engine and the other way round, also through a
transaction-pooling pooler.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple, Union

import psycopg
from psycopg import sql

from . import lockwait
from .connection import rollback  # noqa: F401 (the callers of history take it from here)
from .errors import LockTimeoutError
from .files import Migration
from .identifiers import check_identifier
from .plan import plan
from .settings import Settings

# Markers raised by the head of a migration, as failed casts (cheaper than a PL/pgSQL block; never folded at
# plan time because the text is not a constant): "already recorded" and "the migration lock is busy".
APPLIED_MARK = "llmdb:already-applied"
BUSY_MARK = "llmdb:lock-busy"


def marked(exc: psycopg.Error, mark: str) -> bool:
    """Is ``exc`` the failed cast of one of our markers? (SQLSTATE 22P02 and the marker, which is data.)"""
    return exc.diag.sqlstate == "22P02" and mark in (exc.diag.message_primary or "")


class HistoryStore:
    """One module's rows in the history table, its in-flight records and its advisory lock."""

    def __init__(self, conn: psycopg.Connection, settings: Settings) -> None:
        self.conn, self.settings = conn, settings

    # ------------------------------------------------------------------ the tables
    def tables_exist(self) -> Tuple[bool, bool]:
        """(history table exists, in-flight table exists), in one query."""
        s = self.settings
        row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                                (s.history_ident.as_string(self.conn),
                                 s.inflight_ident.as_string(self.conn))).fetchone()
        return bool(row[0]), bool(row[1])

    def exists(self) -> bool:
        return self.tables_exist()[0]

    def schema_exists(self, schema: str) -> bool:
        return bool(self.conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                                      (schema,)).fetchone()[0])

    def create(self) -> None:
        """Create the history table (pgdbm's columns plus ``version``).

        Serialised by a lock on the table's name (several modules can share one history table); a concurrent
        creator that takes no lock (pgdbm creates its table before locking) makes CREATE ... IF NOT EXISTS fail
        with a duplicate in the catalog, which means the table is there: fine.
        """
        conn, s = self.conn, self.settings
        schema, table = s.history_parts
        conn.execute(sql.SQL("BEGIN; SELECT pg_advisory_xact_lock(hashtext({}))").format(
            sql.Literal(f"llmemory_db_history_{schema}.{table}")))
        try:
            if not self.schema_exists(schema):
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id SERIAL PRIMARY KEY,"
                " filename VARCHAR(255) NOT NULL,"
                " checksum VARCHAR(64) NOT NULL,"
                " module_name VARCHAR(100),"
                " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
                " applied_by VARCHAR(100) DEFAULT CURRENT_USER,"
                " execution_time_ms INTEGER,"
                " version VARCHAR(255),"
                " UNIQUE(filename, module_name))").format(s.history_ident))
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (module_name, filename)").format(
                sql.Identifier(f"idx_{table}_module"), s.history_ident))
            conn.execute("COMMIT")
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.DuplicateObject):
            rollback(conn)
            if not self.exists():
                raise
        except BaseException:
            rollback(conn)
            raise

    def has_version_column(self) -> bool:
        schema, table = self.settings.history_parts
        row = self.conn.execute(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attname = 'version' AND NOT a.attisdropped",
            (schema, table)).fetchone()
        return bool(row[0])

    # ------------------------------------------------------------------ rows
    def read(self) -> Dict[str, str]:
        """filename -> checksum for this module (and rows without a module, as pgdbm reads them)."""
        rows = self.conn.execute(
            sql.SQL("SELECT filename, checksum FROM {} WHERE module_name = %s OR module_name IS NULL "
                    "ORDER BY filename").format(self.settings.history_ident), (self.settings.module_name,)).fetchall()
        return {filename: checksum for filename, checksum in rows}

    def already_applied(self, migration: Migration) -> bool:
        """Re-plan of one file: recorded (by anyone) with the same checksum? A different one is an error."""
        s = self.settings
        row = self.conn.execute(sql.SQL(
            "SELECT checksum FROM {} WHERE filename = %s AND (module_name = %s OR module_name IS NULL)"
        ).format(s.history_ident), (migration.filename, s.module_name)).fetchone()
        if row is not None and row[0] != migration.checksum:
            plan([migration], {migration.filename: row[0]}, module=s.module_name,
                 history_table=s.history_display).raise_for_mismatch()
        return row is not None

    def insert_sql(self, migration: Migration, with_version: bool,
                   elapsed: Union[int, sql.Composable] = 1) -> sql.Composed:
        s = self.settings
        columns = ["filename", "checksum", "module_name", "execution_time_ms"]
        values = [sql.Literal(migration.filename), sql.Literal(migration.checksum), sql.Literal(s.module_name),
                  elapsed if isinstance(elapsed, sql.Composable) else sql.Literal(max(1, elapsed))]
        if with_version:
            columns.append("version")
            values.append(sql.Literal(migration.version))
        return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            s.history_ident, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(values))

    def check_sql(self, migration: Migration) -> sql.Composed:
        """Raises the APPLIED marker when the file is recorded already (part of a migration's round trip)."""
        s = self.settings
        return sql.SQL("SELECT ({} || checksum)::int FROM {} WHERE filename = {} "
                       "AND (module_name = {} OR module_name IS NULL)").format(
            sql.Literal(APPLIED_MARK + " "), s.history_ident, sql.Literal(migration.filename),
            sql.Literal(s.module_name))

    def is_history_violation(self, exc: psycopg.Error) -> bool:
        """A unique violation on the history table: another applier recorded the file first."""
        schema, name = self.settings.history_parts
        return (exc.diag.sqlstate == "23505" and exc.diag.table_name == name and exc.diag.schema_name == schema)

    # ------------------------------------------------------------------ pgdbm's advisory lock
    # lock_scope "module": pgdbm's key, exclusive (what pgdbm takes). "schema" (fleets): pgdbm's key *shared*, plus
    # an exclusive key of (module, schema): schemas of one module migrate in parallel, pgdbm's exclusive request on
    # the module waits for all of them, and a shared request that comes after a queued exclusive one waits behind
    # it (PostgreSQL grants lock requests in order), so pgdbm is never starved.
    def lock_key(self) -> sql.Composed:
        return sql.SQL("hashtext('pgdbm_migration_' || {})").format(sql.Literal(self.settings.module_name))

    def schema_key(self) -> sql.Composed:
        return sql.SQL("hashtext('llmemory_db_schema_' || {})").format(
            sql.Literal(f"{self.settings.module_name}.{self.settings.schema_name}"))

    @property
    def per_schema(self) -> bool:
        return self.settings.lock_scope == "schema"

    def lock_sql(self) -> sql.Composed:
        """Wait for the module's lock for this transaction (bounded by the lock_timeout set before it)."""
        if self.per_schema:
            return sql.SQL("SELECT pg_advisory_xact_lock_shared({}), pg_advisory_xact_lock({})").format(
                self.lock_key(), self.schema_key())
        return sql.SQL("SELECT pg_advisory_xact_lock({})").format(self.lock_key())

    def try_lock_sql(self) -> sql.Composed:
        """Take the lock if it is free, else raise the BUSY marker."""
        free = sql.SQL("pg_try_advisory_xact_lock({})").format(self.lock_key())
        if self.per_schema:
            free = sql.SQL("pg_try_advisory_xact_lock_shared({}) AND pg_try_advisory_xact_lock({})").format(
                self.lock_key(), self.schema_key())
        return sql.SQL("SELECT CASE WHEN {} THEN 1 ELSE ({} || pg_backend_pid())::int END").format(
            free, sql.Literal(BUSY_MARK + " "))

    def begin_locked(self) -> None:
        """BEGIN and the module's lock for the transaction, polled for at most lock_wait_timeout (never waiting
        inside a statement, with a snapshot a concurrent index build would wait for: see lockwait)."""
        lockwait.begin_locked(self)

    def lock_session(self) -> None:
        """Take the module's lock for the session (no-transaction files), polled for at most lock_wait_timeout."""
        lockwait.lock_session(self)

    def unlock_session(self) -> None:
        if self.per_schema:
            self.conn.execute(sql.SQL("SELECT pg_advisory_unlock_shared({}), pg_advisory_unlock({})").format(
                self.lock_key(), self.schema_key()))
        else:
            self.conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(self.lock_key()))

    def locked(self) -> "_Locked":
        """``with store.locked():`` BEGIN + the module's lock (bounded wait) ... COMMIT, or ROLLBACK on error."""
        return _Locked(self)

    def lock_holder(self) -> str:
        return lockwait.describe_holder(self.conn, self.settings.module_name)

    def lock_timeout_error(self) -> LockTimeoutError:
        s = self.settings
        return LockTimeoutError(
            f"Timed out after {s.lock_wait_timeout:g}s waiting for the migration lock of module "
            f"{s.module_name!r}; held by {self.lock_holder()}",
            remedy="wait for that migration run to finish and run again, raise the lock wait timeout, "
                   "or end the stuck session with SELECT pg_terminate_backend(<pid>)")

    def forget(self, drop_tables: Sequence[str] = ()) -> int:
        """Delete this module's history rows (the spec's development reset); returns how many.

        ``drop_tables`` (standalone mode, where there is no schema to drop) are dropped in the same transaction.
        """
        s, conn = self.settings, self.conn
        if not self.exists():
            return 0
        with self.locked():
            for table in drop_tables:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                    sql.Identifier(s.schema_name, check_identifier(table, "table name"))))
            cur = conn.execute(sql.SQL("DELETE FROM {} WHERE module_name = %s").format(s.history_ident),
                               (s.module_name,))
            if self.tables_exist()[1]:  # and any record of an interrupted no-transaction file
                conn.execute(sql.SQL("DELETE FROM {} WHERE module_name = %s").format(s.inflight_ident),
                             (s.module_name,))
            return cur.rowcount


class _Locked:
    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    def __enter__(self) -> HistoryStore:
        self.store.begin_locked()
        return self.store

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.store.conn.execute("COMMIT")
        else:
            rollback(self.store.conn)
