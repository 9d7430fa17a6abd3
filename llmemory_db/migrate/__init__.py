"""The migration engine: pgdbm-compatible templated SQL migrations on psycopg 3. No Pulumi import anywhere.

One responsibility per module, in the order data flows:

- ``settings``    the one settings object (names, defaults, conversions to props, CLI options, stack config)
- ``files``       migration files: order, versions, pgdbm's checksum
- ``render``      ``{{tables.x}}`` templates, exactly as pgdbm renders them
- ``lint``        PostgreSQL's parser (pglast): syntax errors as file:line:col, dangerous constructs
- ``plan``        files against history (a pure function)
- ``connection``  connect with retries, secrets scrubbed, pooler detection
- ``history``     the history store: table, rows, in-flight records, pgdbm's advisory lock, forget, resolve
- ``executor``    the apply loop and its two strategies (in a transaction, no-transaction)
- ``diagnosis``   where a migration failed and the remedy, by SQLSTATE
- ``risk``        squawk's findings on pending files, with live table sizes; the deny policy
- ``plpgsql``     the SQL inside DO blocks and PL/pgSQL functions (their lines, context, EXECUTE)
- ``violations``  the data preflight: existing rows that make a pending statement fail
- ``drift``       catalog fingerprints, the drift check, the files' schema proven on a scratch schema
- ``adoption``    existing databases: refuse the unknown, a proven baseline, copying a pgdbm history
- ``objects``     which objects the migrations create (grants, drift scope)
- ``extensions``  extensions present or creatable, else the remedy
- ``source``      migrations shipped inside an installed package (a pgdbm library)
- ``startup``     the role an application's pgdbm runs its start-up check as, and its guard
- ``cli``         ``python -m llmemory_db.migrate``
"""
from .adoption import (BaselineMismatchError, BaselineResult, UnknownSchemaError, baseline, copy_history,
                       refuse_unknown)
from .connection import connect, pooler, scrub
from .drift import DriftReport, SchemaDriftError, check_drift
from .errors import (ChecksumMismatchError, ConnectionFailedError, ConnectionLostError, DuplicateVersionError, Inflight,
                     InterruptedMigrationError, InvalidIdentifierError, LintError, LintIssue, LockRetryError,
                     LockTimeoutError,
                     MigrationError, MigrationFileError, MigrationsDirectoryError, PoolerError, StatementError,
                     TemplateError)
from .executor import ApplyResult, Status, apply, lint_pending, render_all, render_parsed, status
from .extensions import check_extensions
from .files import Migration, checksum, load, version_of
from .history import HistoryStore
from .plan import Plan, plan
from .risk import Finding, RiskError, RiskReport, ViolationError, analyze
from .render import render
from .settings import DEFAULT_HISTORY_TABLE, DEFAULT_MODULE, POOL_MODES, Settings, Target


def read_history(conn, settings: Settings):
    """filename -> checksum of the module's history rows."""
    return HistoryStore(conn, settings).read()


def read_inflight(conn, settings: Settings):
    return HistoryStore(conn, settings).read_inflight()


def resolve(conn, settings: Settings, filename: str, action: str) -> str:
    return HistoryStore(conn, settings).resolve(filename, action)


def forget(conn, settings: Settings, drop_tables=()) -> int:
    return HistoryStore(conn, settings).forget(drop_tables)


__all__ = [name for name in dir() if not name.startswith("_")]
