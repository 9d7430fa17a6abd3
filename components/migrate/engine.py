"""Applying migrations: history table, advisory lock, one transaction per migration.

Interoperates with pgdbm: same history table layout, same checksum, same
advisory lock key (``hashtext('pgdbm_migration_' || module)``), taken per
transaction so that it is safe through a transaction-pooling pooler and
pgdbm instances queue behind this engine and the other way round.
"""
from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import psycopg
from psycopg import sql

from . import lint as lint_mod
from .errors import (ConnectionFailedError, ConnectionLostError, Inflight, InterruptedMigrationError, LintError,
                     LintIssue, LockTimeoutError, MigrationError, MigrationFileError, PoolerError, StatementError,
                     StatementFailure)
from .files import Migration, load
from .plan import Plan, plan
from .render import check_identifier, render

DEFAULT_MODULE = "aword_memory"
DEFAULT_HISTORY_TABLE = "public.schema_migrations"
EXTENSION_REMEDY = (
    "run with a user that has SUPERUSER, or create the extension beforehand as a superuser: "
    "CREATE EXTENSION IF NOT EXISTS vector; GRANT ALL ON SCHEMA <schema> TO <migration user>;")
POOL_MODES = ("auto", "session", "transaction")
CLIENT_CHECK_INTERVAL = "1s"  # how soon the server notices a dead client and rolls its migration back
# pgdbm's hints that a host is a transaction pooler, plus PgBouncer's default port
POOLER_HOST_HINTS = ("-pooler", "pgbouncer", "transaction-pool")
POOLER_PORT = 6432


@dataclass(frozen=True)
class Target:
    """Where and how migrations are applied."""

    migrations_dir: Union[str, Path]
    schema: Optional[str] = None            # None: standalone mode (default schema, usually public)
    module: str = DEFAULT_MODULE
    history_table: str = DEFAULT_HISTORY_TABLE
    lock_wait_timeout: float = 60.0          # seconds to wait for the module's advisory lock
    lock_timeout: Optional[float] = None     # seconds; PostgreSQL lock_timeout while a migration runs
    statement_timeout: Optional[float] = None  # seconds; PostgreSQL statement_timeout while a migration runs
    strict: bool = False                     # lint warnings are errors
    pool_mode: str = "auto"                  # the endpoint: auto (detect a pooler), session, transaction

    def __post_init__(self) -> None:
        if self.schema is not None:
            check_identifier(self.schema, "schema name")
        if not isinstance(self.module, str) or not re.match(r"^[A-Za-z0-9_.\-]{1,100}$", self.module):
            raise MigrationError(
                f"Invalid module name {self.module!r}: use 1 to 100 letters, digits, '_', '-' or '.'",
                remedy="choose a module name such as aword_memory")
        self.history_parts  # validates
        if self.pool_mode not in POOL_MODES:
            raise MigrationError(f"Invalid pool mode {self.pool_mode!r}: use one of {', '.join(POOL_MODES)}",
                                 remedy="auto detects a pooler; session or transaction declare the endpoint's mode")
        for name in ("lock_wait_timeout", "lock_timeout", "statement_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise MigrationError(f"Invalid {name} {value!r}: a number of seconds >= 0 is required",
                                     remedy=f"set {name} to a number of seconds, e.g. 30")

    @property
    def history_parts(self) -> tuple:
        parts = self.history_table.split(".")
        if len(parts) == 1:
            parts = ["public"] + parts
        if len(parts) != 2:
            raise MigrationError(f"Invalid history table {self.history_table!r}: use table or schema.table",
                                 remedy="for example public.schema_migrations")
        return (check_identifier(parts[0], "history table schema"),
                check_identifier(parts[1], "history table name"))

    @property
    def history_ident(self) -> sql.Composable:
        schema, table = self.history_parts
        return sql.Identifier(schema, table)

    @property
    def history_display(self) -> str:
        return ".".join(self.history_parts)

    @property
    def inflight_parts(self) -> tuple:
        """The table recording no-transaction migrations that started and have not finished (pgdbm ignores it)."""
        schema, table = self.history_parts
        return schema, table[:54] + "_inflight"

    @property
    def inflight_ident(self) -> sql.Composable:
        return sql.Identifier(*self.inflight_parts)


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

    def as_dict(self) -> dict:
        return {"applied": self.applied, "skipped": self.skipped, "pending": [],
                "checksums": self.checksums, "missing": self.missing,
                "warnings": [str(w) for w in self.warnings], "duration_ms": round(self.duration_ms, 1)}


# --------------------------------------------------------------------------- connection

def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove passwords from a message: explicit secrets and password=/:pw@ forms."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "******")
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1******", text, flags=re.IGNORECASE)
    text = re.sub(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", r"\1******@", text)
    return text


def connect(conninfo: str = "", *, retries: int = 3, backoff: float = 0.5, connect_timeout: int = 10,
            **params) -> psycopg.Connection:
    """Open an autocommit connection, retrying transient failures with exponential backoff."""
    try:
        password = params.get("password") or psycopg.conninfo.conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        raise ConnectionFailedError("The connection string is malformed",
                                    remedy="use postgresql://user@host:port/database or key=value pairs") from None
    params.setdefault("connect_timeout", connect_timeout)
    params.setdefault("application_name", "llmemory-db-migrate")
    params.setdefault("prepare_threshold", None)  # no server-side prepared statements: safe through PgBouncer
    last: Optional[Exception] = None
    for attempt in range(retries + 1):
        try:
            return psycopg.connect(conninfo, autocommit=True, **params)
        except psycopg.OperationalError as exc:
            last = exc
            text = str(exc)
            if "password authentication failed" in text or "does not exist" in text or "no password" in text:
                break  # retrying cannot help
            if attempt < retries:
                time.sleep(backoff * (2 ** attempt))
    message = scrub(str(last).strip(), [password or ""])
    raise ConnectionFailedError(
        f"Cannot connect to PostgreSQL: {message}",
        remedy="check host, port, database, user and password (postgresql:* stack config or --dsn), "
               "and that the server is running and reachable")


# --------------------------------------------------------------------------- history

def _history_exists(conn: psycopg.Connection, target: Target) -> bool:
    return _tables_exist(conn, target)[0]


def _tables_exist(conn: psycopg.Connection, target: Target) -> tuple:
    """(history table exists, in-flight table exists), in one query."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                       (target.history_ident.as_string(conn), target.inflight_ident.as_string(conn))).fetchone()
    return bool(row[0]), bool(row[1])


def read_inflight(conn: psycopg.Connection, target: Target) -> List[Inflight]:
    """No-transaction migrations of this module that started and did not finish; ``alive`` when the backend
    that started them is still connected (pid reuse is told apart by the backend's start time)."""
    rows = conn.execute(sql.SQL(
        "SELECT i.filename, i.checksum, to_char(i.started_at, 'YYYY-MM-DD HH24:MI:SS TZ'), i.pid, i.done, i.total, "
        "       i.next_line, coalesce(i.error, ''), EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = i.pid "
        "       AND (a.backend_start IS NULL OR a.backend_start <= i.started_at)) "
        "FROM {} i WHERE i.module_name = %s ORDER BY i.filename").format(target.inflight_ident),
        (target.module,)).fetchall()
    return [Inflight(*row) for row in rows]


def _has_version_column(conn: psycopg.Connection, target: Target) -> bool:
    schema, table = target.history_parts
    row = conn.execute(
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attname = 'version' AND NOT a.attisdropped",
        (schema, table)).fetchone()
    return bool(row[0])


def read_history(conn: psycopg.Connection, target: Target) -> Dict[str, str]:
    """filename -> checksum for this module (and rows without a module, as pgdbm reads them)."""
    rows = conn.execute(
        sql.SQL("SELECT filename, checksum FROM {} WHERE module_name = %s OR module_name IS NULL "
                "ORDER BY filename").format(target.history_ident), (target.module,)).fetchall()
    return {filename: checksum for filename, checksum in rows}


def _lock_key(target: Target) -> sql.Composed:
    """pgdbm's advisory lock key of the module."""
    return sql.SQL("hashtext('pgdbm_migration_' || {})").format(sql.Literal(target.module))


def _lock_sql(target: Target) -> sql.Composed:
    return sql.SQL("SELECT pg_advisory_xact_lock({})").format(_lock_key(target))


def _create_history_table(conn: psycopg.Connection, target: Target) -> None:
    """Create the history table (pgdbm's columns plus ``version``).

    Serialised by a lock on the table's name (several modules can share one history table); a concurrent
    creator that takes no lock (pgdbm creates its table before locking) makes CREATE ... IF NOT EXISTS fail
    with a duplicate in the catalog, which means the table is there: fine.
    """
    schema, table = target.history_parts
    conn.execute(sql.SQL("BEGIN; SELECT pg_advisory_xact_lock(hashtext({}))").format(
        sql.Literal(f"llmemory_db_history_{schema}.{table}")))
    try:
        if not _schema_exists(conn, schema):
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
            " UNIQUE(filename, module_name))").format(target.history_ident))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (module_name, filename)").format(
            sql.Identifier(f"idx_{table}_module"), target.history_ident))
        conn.execute("COMMIT")
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.DuplicateObject):
        _rollback(conn)
        if not _history_exists(conn, target):
            raise
    except BaseException:
        _rollback(conn)
        raise


def _schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0])


class _locked_transaction:
    """BEGIN + the module's advisory xact lock (bounded wait) + settings ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: psycopg.Connection, target: Target) -> None:
        self.conn, self.target = conn, target

    def __enter__(self) -> None:
        target = self.target
        head = [sql.SQL("BEGIN"), sql.SQL("SET LOCAL lock_timeout = {}").format(
            sql.Literal(f"{int(target.lock_wait_timeout * 1000)}ms")), _lock_sql(target)] + _settings_sql(target)
        try:
            self.conn.execute(sql.SQL("; ").join(head))
        except psycopg.errors.LockNotAvailable:
            _rollback(self.conn)
            raise _lock_timeout_error(self.conn, target) from None
        except BaseException:
            _rollback(self.conn)
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            _rollback(self.conn)


def _lock_holder(conn: psycopg.Connection, target: Target) -> str:
    try:
        row = conn.execute(
            "SELECT a.pid, a.usename, a.application_name, coalesce(a.client_addr::text, 'local'), a.state, "
            "       now() - a.xact_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "  AND ((l.classid::bigint << 32) | l.objid::bigint) = "
            "      hashtext('pgdbm_migration_' || %s)::bigint "
            "LIMIT 1", (target.module,)).fetchone()
    except psycopg.Error:
        row = None
    if not row:
        return "another session (it released the lock meanwhile)"
    pid, user, app, addr, state, age = row
    return f"pid {pid} (user {user}, application {app or '-'}, client {addr}, {state}, transaction age {age})"


# --------------------------------------------------------------------------- status / lint / apply

def render_all(migrations: Sequence[Migration], target: Target) -> Dict[str, str]:
    return {m.filename: render(m.sql, target.schema, m.filename) for m in migrations}


def lint_pending(migrations: Sequence[Migration], target: Target) -> tuple:
    """Render and parse ``migrations``; raise LintError on errors. Returns (rendered, warnings)."""
    rendered = render_all(migrations, target)
    issues: List[LintIssue] = []
    for m in migrations:
        issues.extend(lint_mod.lint(m.filename, rendered[m.filename], schema_mode=bool(target.schema),
                                    history=target.history_parts))
    errors = [i for i in issues if i.severity == "error" or target.strict]
    if errors:
        raise LintError(errors)
    return rendered, issues


def status(conn: psycopg.Connection, target: Target, files: Optional[Sequence[Migration]] = None) -> Status:
    files = load(target.migrations_dir) if files is None else files
    exists, inflight_exists = _tables_exist(conn, target)
    recorded = read_history(conn, target) if exists else {}
    return Status(plan(files, recorded, module=target.module, history_table=target.history_display), exists,
                  inflight=read_inflight(conn, target) if inflight_exists else [])


def _failure(exc: psycopg.Error) -> StatementFailure:
    diag = exc.diag
    return StatementFailure(sqlstate=diag.sqlstate or "", message=diag.message_primary or str(exc).strip(),
                            detail=diag.message_detail or "", hint=diag.message_hint or "")


def _remedy_for(failure: StatementFailure, target: Target) -> str:
    if failure.sqlstate == "42501" and "create extension" in failure.message:
        return EXTENSION_REMEDY
    if failure.sqlstate == "3F000" and target.schema:
        return f"create the schema first: CREATE SCHEMA IF NOT EXISTS {target.schema}; " \
               "or give the migration user the CREATE privilege on the database"
    if failure.sqlstate == "55P03":
        return "another session holds a lock on an object this migration changes; retry later or raise lock_timeout"
    if failure.sqlstate == "57014":
        return "the statement ran longer than statement_timeout; raise it or split the migration"
    return "fix the statement and run again"


def _line_in(statement: lint_mod.Statement, exc: psycopg.Error) -> int:
    """Line within the file of an error raised by ``statement`` sent on its own."""
    position = exc.diag.statement_position
    return statement.line + (statement.text[: int(position) - 1].count("\n") if position else 0)


def _already_applied(conn: psycopg.Connection, target: Target, migration: Migration) -> bool:
    """Re-plan of one file: recorded (by anyone) with the same checksum? A different one is an error."""
    row = conn.execute(sql.SQL(
        "SELECT checksum FROM {} WHERE filename = %s AND (module_name = %s OR module_name IS NULL)"
    ).format(target.history_ident), (migration.filename, target.module)).fetchone()
    if row is not None and row[0] != migration.checksum:
        plan([migration], {migration.filename: row[0]}, module=target.module,
             history_table=target.history_display).raise_for_mismatch()
    return row is not None


def apply(conn: psycopg.Connection, target: Target, *,
          on_progress: Optional[Callable[[str], None]] = None) -> ApplyResult:
    """Apply every pending migration of ``target``; each with its history row in one transaction."""
    try:
        return _apply(conn, target, on_progress)
    except psycopg.Error as exc:  # outside a migration's statements: history table, lock, catalog queries
        failure = _failure(exc)
        raise MigrationError(
            f"Database error while reading or writing the migration history {target.history_display}: "
            f"{failure.message}" + (f" (SQLSTATE {failure.sqlstate})" if failure.sqlstate else ""),
            remedy=_remedy_for(failure, target) if failure.sqlstate != "" else "check the server log") from None


def _apply(conn: psycopg.Connection, target: Target, on_progress: Optional[Callable[[str], None]]) -> ApplyResult:
    started = time.perf_counter()
    files = load(target.migrations_dir)
    current = status(conn, target, files)
    current.plan.raise_for_mismatch()
    if current.inflight:  # under the lock, a marker left is a dead run's (a live one holds the lock)
        with _locked_transaction(conn, target):
            _raise_for_inflight(conn, target)
    rendered, warnings = lint_pending(current.plan.pending, target)
    if target.schema and current.plan.pending and not _schema_exists(conn, target.schema):
        raise MigrationError(
            f'schema "{target.schema}" does not exist',
            remedy=f"create it before migrating: CREATE SCHEMA IF NOT EXISTS {target.schema}; "
                   "(the MigratedSchema component does this), or give the user the CREATE SCHEMA permission")
    no_transaction = [m for m in current.plan.pending if m.no_transaction]
    if no_transaction:
        why = pooler(conn, target)
        if why:
            raise PoolerError(
                f"{no_transaction[0].filename} is a no-transaction migration and this connection goes through a "
                f"transaction-pooling endpoint ({why}); nothing was applied",
                file=no_transaction[0].filename,
                remedy="apply it over a direct PostgreSQL connection or a session-pooled endpoint; if this endpoint "
                       "is direct or pools sessions, declare it: pool mode 'session' (--pool-mode session, "
                       "llmemory-db:poolMode)")
    if not current.history_exists:
        _create_history_table(conn, target)
    with_version = _has_version_column(conn, target)
    applied: List[str] = []
    skipped: List[str] = [m.filename for m in current.plan.applied]
    for migration in current.plan.pending:
        try:
            if migration.no_transaction:
                done = _apply_no_transaction(conn, target, migration, rendered[migration.filename], applied,
                                             with_version)
            else:
                done = _apply_in_transaction(conn, target, migration, rendered[migration.filename], applied,
                                             with_version)
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise ConnectionLostError(migration.filename, str(exc).strip() or type(exc).__name__, applied,
                                          migration.no_transaction) from None
            raise
        (applied if done else skipped).append(migration.filename)
        if done and on_progress:
            on_progress(migration.filename)
    return ApplyResult(applied, skipped, current.plan.checksums, current.plan.missing, warnings,
                       (time.perf_counter() - started) * 1000)


# Markers raised by the head of a migration, as failed casts (cheaper than a PL/pgSQL block; never folded at
# plan time because the text is not a constant): "already recorded" and "the migration lock is busy".
APPLIED_MARK = "llmdb:already-applied"
BUSY_MARK = "llmdb:lock-busy"


def _check_sql(target: Target, migration: Migration) -> sql.Composed:
    return sql.SQL("SELECT ({} || checksum)::int FROM {} WHERE filename = {} "
                   "AND (module_name = {} OR module_name IS NULL)").format(
        sql.Literal(APPLIED_MARK + " "), target.history_ident, sql.Literal(migration.filename),
        sql.Literal(target.module))


def _try_lock_sql(target: Target) -> sql.Composed:
    return sql.SQL("SELECT CASE WHEN pg_try_advisory_xact_lock({}) THEN 1 "
                   "ELSE ({} || pg_backend_pid())::int END").format(_lock_key(target), sql.Literal(BUSY_MARK + " "))


def _marked(exc: psycopg.Error, mark: str) -> bool:
    return exc.diag.sqlstate == "22P02" and mark in (exc.diag.message_primary or "")


def _apply_in_transaction(conn: psycopg.Connection, target: Target, migration: Migration, rendered: str,
                          committed: List[str], with_version: bool) -> bool:
    """One migration and its history row in one transaction, in one round trip when the lock is free:

    BEGIN; take the module's advisory lock if it is free; re-plan under the lock (is the file recorded
    already?); the settings; the file; its history row (execution time measured by the server); COMMIT.
    When another applier holds the lock, wait for it (bounded) in a round trip of its own, then go on.
    Returns False when the file turned out to be applied already (by pgdbm or another applier).
    """
    body = _check_sql(target, migration).as_string(conn) + "; " + \
        sql.SQL("; ").join(_settings_sql(target)).as_string(conn) + ";\n"
    # "\n;" ends a last statement without a semicolon and a trailing -- comment alike
    tail = sql.SQL("\n; {}; COMMIT").format(_insert_sql(target, migration, with_version, elapsed=sql.SQL(
        "greatest(1, (extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::int)"))).as_string(conn)
    head = "BEGIN; " + _try_lock_sql(target).as_string(conn) + "; " + body
    for attempt in (1, 2):
        if attempt == 2:  # the lock was busy: wait for it in a round trip of its own, bounded by lock_wait_timeout
            try:
                conn.execute(sql.SQL("BEGIN; SET LOCAL lock_timeout = {}; {}").format(
                    sql.Literal(f"{int(target.lock_wait_timeout * 1000)}ms"), _lock_sql(target)))
            except psycopg.errors.LockNotAvailable:
                _rollback(conn)
                raise _lock_timeout_error(conn, target) from None
            except BaseException:
                _rollback(conn)
                raise
            head = body
        try:
            conn.execute(head + rendered + tail)  # no parameters: the text is sent as it is
            break
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise
            _rollback(conn)
            if attempt == 1 and _marked(exc, BUSY_MARK):
                continue
            history_schema, history_name = target.history_parts
            if _marked(exc, APPLIED_MARK) or (
                    exc.diag.sqlstate == "23505" and exc.diag.table_name == history_name
                    and exc.diag.schema_name == history_schema):
                _already_applied(conn, target, migration)  # raises if recorded with another checksum
                return False
            raise _statement_error(conn, target, migration, rendered, exc, committed, offset=len(head)) from None
        except BaseException:
            _rollback(conn)
            raise
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:  # the file must not swallow COMMIT
        _rollback(conn)
        raise MigrationError(f"Migration {migration.filename} left its transaction open; nothing of it was applied",
                             remedy="check the file for an unterminated statement, quote or comment",
                             file=migration.filename)
    return True


def _settings_sql(target: Target) -> List[sql.Composable]:
    settings = [sql.SQL("SET LOCAL lock_timeout = {}").format(
        sql.Literal(f"{int(target.lock_timeout * 1000)}ms" if target.lock_timeout is not None else "0")),
        # a client killed mid-migration: the server notices within a second and rolls back (instead of running
        # the rest of the file and holding its locks for nobody)
        sql.SQL("SET LOCAL client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL))]
    if target.statement_timeout is not None:
        settings.append(sql.SQL("SET LOCAL statement_timeout = {}").format(
            sql.Literal(f"{int(target.statement_timeout * 1000)}ms")))
    if target.schema:
        settings.append(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(target.schema)))
    return settings


def _insert_sql(target: Target, migration: Migration, with_version: bool,
                elapsed: Union[int, sql.Composable] = 1) -> sql.Composed:
    columns = ["filename", "checksum", "module_name", "execution_time_ms"]
    values = [sql.Literal(migration.filename), sql.Literal(migration.checksum), sql.Literal(target.module),
              elapsed if isinstance(elapsed, sql.Composable) else sql.Literal(max(1, elapsed))]
    if with_version:
        columns.append("version")
        values.append(sql.Literal(migration.version))
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        target.history_ident, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(values))


def _rollback(conn: psycopg.Connection) -> None:
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass


def _statement_error(conn: psycopg.Connection, target: Target, migration: Migration, rendered: str,
                     exc: psycopg.Error, committed: List[str], offset: int = 0) -> StatementError:
    """Locate the failing statement: by the server's error position, else by replaying the file statement by
    statement in a transaction that is rolled back."""
    failure = _failure(exc)
    statements = lint_mod.split(rendered)
    position = exc.diag.statement_position
    failing = None
    line = 1
    if position and 0 <= int(position) - 1 - offset < len(rendered):
        index = int(position) - 1 - offset
        line = rendered.count("\n", 0, index) + 1
        failing = next((s for s in reversed(statements) if s.line <= line), None)
    else:
        try:
            conn.execute(sql.SQL("; ").join([sql.SQL("BEGIN")] + _settings_sql(target)))
            for statement in statements:
                try:
                    conn.execute(statement.text)
                except psycopg.Error as replay:
                    failing, line, failure = statement, _line_in(statement, replay), _failure(replay)
                    break
        finally:
            _rollback(conn)
    text = failing.text if failing else (statements[0].text if statements else rendered)
    return StatementError(migration.filename, line, text, failure, committed,
                          remedy=_remedy_for(failure, target), no_transaction=migration.no_transaction)


def _lock_timeout_error(conn: psycopg.Connection, target: Target) -> LockTimeoutError:
    return LockTimeoutError(
        f"Timed out after {target.lock_wait_timeout:g}s waiting for the migration lock of module "
        f"{target.module!r}; held by {_lock_holder(conn, target)}",
        remedy="wait for that migration run to finish and run again, raise the lock wait timeout, "
               "or end the stuck session with SELECT pg_terminate_backend(<pid>)")


def pooler(conn: psycopg.Connection, target: Target) -> str:
    """Why this connection looks like a transaction-pooling endpoint ('' when it does not).

    Beyond pgdbm's host-name hints, compare the address this client uses with the address the server sees for
    it: a pooler or proxy in between shows up as a different peer. pool_mode declares the endpoint instead."""
    if target.pool_mode == "session":
        return ""
    if target.pool_mode == "transaction":
        return "pool mode 'transaction' was declared"
    host, port = (conn.info.host or "").lower(), conn.info.port
    if any(hint in host for hint in POOLER_HOST_HINTS) or port == POOLER_PORT:
        return f"host {host} port {port} looks like a pooler"
    seen = conn.execute("SELECT host(client_addr), client_port FROM pg_stat_activity "
                        "WHERE pid = pg_backend_pid()").fetchone()
    try:
        sock = socket.socket(fileno=socket.dup(conn.pgconn.socket))
        try:
            local = sock.getsockname()
        finally:
            sock.close()
    except OSError:
        return ""
    if isinstance(local, tuple):  # TCP: the server must see this very address and port
        mine = (local[0].removeprefix("::ffff:"), local[1])
        theirs = ((seen[0] or "").removeprefix("::ffff:"), seen[1]) if seen else None
        if theirs != mine:
            peer = f"{theirs[0] or 'a Unix socket'}:{theirs[1]}" if theirs and theirs[1] else "a Unix socket"
            return f"this client is {mine[0]}:{mine[1]} but the server sees {peer}: a pooler or proxy is in between"
    elif seen and seen[0]:  # a Unix socket here, TCP at the server
        return f"this client uses a Unix socket but the server sees {seen[0]}:{seen[1]}"
    return ""


def _raise_for_inflight(conn: psycopg.Connection, target: Target) -> None:
    if _tables_exist(conn, target)[1]:
        inflight = read_inflight(conn, target)
        if inflight:
            raise InterruptedMigrationError(inflight, target.module)


def _create_inflight_table(conn: psycopg.Connection, target: Target) -> None:
    try:
        conn.execute(sql.SQL(
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
            " PRIMARY KEY (module_name, filename))").format(target.inflight_ident))
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
        pass  # another module sharing this history table created it meanwhile


def _apply_no_transaction(conn: psycopg.Connection, target: Target, migration: Migration, rendered: str,
                          applied: List[str], with_version: bool) -> bool:
    """pgdbm's no-transaction mode: session lock, statements one by one in autocommit.

    Progress is recorded in the in-flight table as it goes, so that a run that dies half-way is reported by the
    next one (which refuses to go on) instead of being re-run blindly or skipped. Returns False when the file
    turned out to be applied already."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(target.lock_wait_timeout * 1000)}ms")))
    try:
        conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(_lock_key(target)))
    except psycopg.errors.LockNotAvailable:
        raise _lock_timeout_error(conn, target) from None
    finally:
        conn.execute("RESET lock_timeout")
    try:
        conn.execute(sql.SQL("SET client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL)))
        if target.schema:
            conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(target.schema)))
        if _already_applied(conn, target, migration):
            return False
        _raise_for_inflight(conn, target)
        _create_inflight_table(conn, target)
        statements = lint_mod.split(rendered)
        marker = sql.SQL("module_name = {} AND filename = {}").format(sql.Literal(target.module),
                                                                      sql.Literal(migration.filename))
        conn.execute(sql.SQL("INSERT INTO {} (module_name, filename, checksum, total, next_line) "
                             "VALUES (%s, %s, %s, %s, %s)").format(target.inflight_ident),
                     (target.module, migration.filename, migration.checksum, len(statements),
                      statements[0].line if statements else 1))
        t0 = time.perf_counter()
        for index, statement in enumerate(statements):
            try:
                conn.execute(statement.text)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                failure = _failure(exc)
                error = StatementError(migration.filename, _line_in(statement, exc), statement.text, failure,
                                       applied, remedy=_remedy_for(failure, target), no_transaction=True)
                if index == 0:  # nothing of the file ran: no trace
                    conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(target.inflight_ident, marker))
                else:
                    conn.execute(sql.SQL("UPDATE {} SET error = %s WHERE {}").format(target.inflight_ident, marker),
                                 (f"line {error.line}: {failure.message}",))
                raise error from None
            following = statements[index + 1].line if index + 1 < len(statements) else statement.line
            conn.execute(sql.SQL("UPDATE {} SET done = %s, next_line = %s WHERE {}").format(
                target.inflight_ident, marker), (index + 1, following))
        elapsed = int((time.perf_counter() - t0) * 1000)
        conn.execute(sql.SQL("BEGIN; {}; DELETE FROM {} WHERE {}; COMMIT").format(
            _insert_sql(target, migration, with_version, elapsed), target.inflight_ident, marker))
        return True
    finally:
        if not (conn.broken or conn.closed):
            _rollback(conn)
            conn.execute("RESET client_connection_check_interval")
            if target.schema:
                conn.execute("RESET search_path")
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(_lock_key(target)))


def resolve(conn: psycopg.Connection, target: Target, filename: str, action: str) -> str:
    """Settle an interrupted no-transaction migration: ``retry`` (the next run re-runs the whole file) or
    ``mark-applied`` (finished by hand: record it with the checksum of the file on disk)."""
    if action not in ("retry", "mark-applied"):
        raise MigrationError(f"Unknown action {action!r}", remedy="use retry or mark-applied")
    with _locked_transaction(conn, target):
        inflight = {i.filename: i for i in read_inflight(conn, target)} if _tables_exist(conn, target)[1] else {}
        if filename not in inflight:
            raise MigrationError(f"{filename} is not recorded as interrupted for module {target.module!r}",
                                 remedy="run status to list interrupted migrations", file=filename)
        conn.execute(sql.SQL("DELETE FROM {} WHERE module_name = %s AND filename = %s").format(
            target.inflight_ident), (target.module, filename))
        if action == "retry":
            return f"{filename}: the next run re-runs it from its first statement"
        migration = next((m for m in load(target.migrations_dir) if m.filename == filename), None)
        if migration is None:
            raise MigrationError(f"{filename} is not in {target.migrations_dir}", file=filename,
                                 remedy="run from the directory the migration came from (--dir)")
        if migration.checksum != inflight[filename].checksum:
            raise MigrationError(f"{filename} changed since it was interrupted (checksum "
                                 f"{inflight[filename].checksum} then, {migration.checksum} now)", file=filename,
                                 remedy="restore the file as it ran, or use --retry to run the new content")
        conn.execute(_insert_sql(target, migration, _has_version_column(conn, target)))
        return f"{filename}: recorded as applied"


def check_extensions(conn: psycopg.Connection, names: Sequence[str]) -> None:
    """Refuse, with the remedy, extensions that are missing and that this user cannot create (checked before
    pulumi-postgresql tries, whose error would say only "permission denied")."""
    rows = conn.execute(
        "SELECT n.name, EXISTS (SELECT 1 FROM pg_extension x WHERE x.extname = n.name), "
        "       EXISTS (SELECT 1 FROM pg_available_extensions a WHERE a.name = n.name), "
        "       coalesce((SELECT bool_or(v.trusted) FROM pg_available_extension_versions v "
        "                 WHERE v.name = n.name), false), "
        "       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "       has_database_privilege(current_database(), 'CREATE'), current_user, current_database() "
        "FROM unnest(%s::text[]) AS n(name)", (list(names),)).fetchall()
    for name, installed, available, trusted, superuser, can_create, user, database in rows:
        if installed:
            continue
        if not available:
            raise MigrationError(
                f'extension "{name}" is not installed in database {database} and the server does not ship it',
                remedy=f"install it on the server (for pgvector: the postgresql-<version>-pgvector package), or "
                       "use a server that has it (the embedded PostgreSQL does)")
        if not (superuser or (trusted and can_create)):
            raise MigrationError(
                f'permission denied to create extension "{name}": user {user} is not a superuser and the '
                f"extension is not installed in database {database}; nothing was created",
                remedy=EXTENSION_REMEDY.replace("vector", name))


def forget(conn: psycopg.Connection, target: Target, drop_tables: Sequence[str] = ()) -> int:
    """Delete this module's history rows (the spec's development reset); returns how many.

    ``drop_tables`` (standalone mode, where there is no schema to drop) are dropped in the same transaction.
    """
    if not _history_exists(conn, target):
        return 0
    with _locked_transaction(conn, target):
        for table in drop_tables:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                sql.Identifier(target.schema or "public", check_identifier(table, "table name"))))
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE module_name = %s").format(target.history_ident),
                           (target.module,))
        if _tables_exist(conn, target)[1]:  # and any record of an interrupted no-transaction file
            conn.execute(sql.SQL("DELETE FROM {} WHERE module_name = %s").format(target.inflight_ident),
                         (target.module,))
        return cur.rowcount
