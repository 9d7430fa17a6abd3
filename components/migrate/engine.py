"""Applying migrations: history table, advisory lock, one transaction per migration.

Interoperates with pgdbm: same history table layout, same checksum, same
advisory lock key (``hashtext('pgdbm_migration_' || module)``), taken per
transaction so that it is safe through a transaction-pooling pooler and
pgdbm instances queue behind this engine and the other way round.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import psycopg
from psycopg import sql

from . import lint as lint_mod
from .errors import (ConnectionFailedError, LintError, LintIssue, LockTimeoutError, MigrationError,
                     MigrationFileError, StatementError, StatementFailure)
from .files import Migration, load
from .plan import Plan, plan
from .render import check_identifier, render

DEFAULT_MODULE = "aword_memory"
DEFAULT_HISTORY_TABLE = "public.schema_migrations"
EXTENSION_REMEDY = (
    "run with a user that has SUPERUSER, or create the extension beforehand as a superuser: "
    "CREATE EXTENSION IF NOT EXISTS vector; GRANT ALL ON SCHEMA <schema> TO <migration user>;")


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

    def __post_init__(self) -> None:
        if self.schema is not None:
            check_identifier(self.schema, "schema name")
        if not isinstance(self.module, str) or not re.match(r"^[A-Za-z0-9_.\-]{1,100}$", self.module):
            raise MigrationError(
                f"Invalid module name {self.module!r}: use 1 to 100 letters, digits, '_', '-' or '.'",
                remedy="choose a module name such as aword_memory")
        self.history_parts  # validates
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


@dataclass
class Status:
    """What is on disk compared with what the database recorded."""

    plan: Plan
    history_exists: bool
    warnings: List[LintIssue] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "applied": [m.filename for m in self.plan.applied],
            "pending": [m.filename for m in self.plan.pending],
            "missing": self.plan.missing,
            "checksums": self.plan.checksums,
            "warnings": [str(w) for w in self.warnings],
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
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                       (sql.Identifier(*target.history_parts).as_string(conn),)).fetchone()
    return bool(row[0])


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


def _lock_sql(target: Target) -> sql.Composed:
    return sql.SQL("SELECT pg_advisory_xact_lock(hashtext('pgdbm_migration_' || {}))").format(
        sql.Literal(target.module))


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
    exists = _history_exists(conn, target)
    recorded = read_history(conn, target) if exists else {}
    return Status(plan(files, recorded, module=target.module, history_table=target.history_display), exists)


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


def _run_statements(conn: psycopg.Connection, migration: Migration, rendered: str, committed: List[str],
                    target: Target) -> None:
    for statement in lint_mod.split(rendered):
        try:
            conn.execute(statement.text)
        except psycopg.Error as exc:
            failure = _failure(exc)
            raise StatementError(migration.filename, _line_in(statement, exc), statement.text, failure, committed,
                                 remedy=_remedy_for(failure, target),
                                 no_transaction=migration.no_transaction) from None


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
    rendered, warnings = lint_pending(current.plan.pending, target)
    if target.schema and current.plan.pending and not _schema_exists(conn, target.schema):
        raise MigrationError(
            f'schema "{target.schema}" does not exist',
            remedy=f"create it before migrating: CREATE SCHEMA IF NOT EXISTS {target.schema}; "
                   "(the MigratedSchema component does this), or give the user the CREATE SCHEMA permission")
    if not current.history_exists:
        _create_history_table(conn, target)
    with_version = _has_version_column(conn, target)
    applied: List[str] = []
    skipped: List[str] = [m.filename for m in current.plan.applied]
    for migration in current.plan.pending:
        if migration.no_transaction:
            done = _apply_no_transaction(conn, target, migration, rendered[migration.filename], applied,
                                         with_version)
        else:
            done = _apply_in_transaction(conn, target, migration, rendered[migration.filename], applied,
                                         with_version)
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
    return sql.SQL("SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext('pgdbm_migration_' || {})) THEN 1 "
                   "ELSE ({} || pg_backend_pid())::int END").format(sql.Literal(target.module),
                                                                     sql.Literal(BUSY_MARK + " "))


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
        sql.Literal(f"{int(target.lock_timeout * 1000)}ms" if target.lock_timeout is not None else "0"))]
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


def _apply_no_transaction(conn: psycopg.Connection, target: Target, migration: Migration, rendered: str,
                          applied: List[str], with_version: bool) -> bool:
    """pgdbm's no-transaction mode: session lock, statements one by one in autocommit.

    Returns False when the file turned out to be applied already."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(target.lock_wait_timeout * 1000)}ms")))
    try:
        conn.execute(sql.SQL("SELECT pg_advisory_lock(hashtext('pgdbm_migration_' || {}))").format(
            sql.Literal(target.module)))
    except psycopg.errors.LockNotAvailable:
        raise _lock_timeout_error(conn, target) from None
    finally:
        conn.execute("RESET lock_timeout")
    try:
        if target.schema:
            conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(target.schema)))
        if _already_applied(conn, target, migration):
            return False
        t0 = time.perf_counter()
        _run_statements(conn, migration, rendered, applied, target)
        conn.execute(_insert_sql(target, migration, with_version, int((time.perf_counter() - t0) * 1000)))
        return True
    finally:
        if target.schema:
            conn.execute("RESET search_path")
        conn.execute(sql.SQL("SELECT pg_advisory_unlock(hashtext('pgdbm_migration_' || {}))").format(
            sql.Literal(target.module)))


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
        return cur.rowcount
