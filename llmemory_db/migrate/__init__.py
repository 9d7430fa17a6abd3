"""The migration engine: pgdbm-compatible templated SQL migrations on psycopg 3. No Pulumi import anywhere.

One responsibility per module, in the order data flows (docs/architecture.md draws it):

- ``settings``     the one settings object (names, defaults, validation, props, CLI options, stack config)
- ``spelling``     settings named in the caller's terms (Python argument, YAML property, CLI option, config key)
- ``errors``       every typed error, each with its remedy; ``events``: what the engine reports while it works
- ``files``        migration files: order, versions, pgdbm's checksum; ``source``: files inside a package
- ``identifiers``  safe names; ``render``: ``{{tables.x}}`` templates, exactly as pgdbm renders them
- ``parser``       PostgreSQL's parser (pglast): statements, lines, trees; ``lint``: the rules on pending files
- ``plan``         files against history (pure); ``state``: the same, read from the database (``status()``)
- ``connection``   connection settings, connect with retries, secrets scrubbed, pooler detection
- ``history``      pgdbm's history table and advisory lock; ``inflight``: interrupted no-transaction files;
                   ``privileges``: what default privileges leaked onto the engine's tables; ``edits``: accepted
                   edits of applied files and their audit trail
- ``executor``     the apply loop and its two strategies; ``diagnosis``: where a file failed and the remedy;
                   ``watch``: who blocks a migration, read from a second connection
- ``risk``         squawk's findings with live table sizes; ``plpgsql``: the SQL inside DO blocks and
                   functions; ``violations``: existing rows that make a pending statement fail; ``drift``: catalog fingerprints; ``proof``: the files'
                   schema built in a scratch schema; ``adoption``: existing databases; ``objects``: what files create
- ``extensions``, ``startup``   prerequisites and the application's start-up role
- ``ops``          the operations every caller uses: preflight, apply, refresh, destroy, diff
- ``fleet``, ``fleet_settings``, ``fleet_state``, ``fleet_results``, ``fleet_batch``, ``fleet_prints``, ``fleet_ops``
                   one module over many tenant schemas, on one server or several: the executor (a pool per
                   server), a new tenant in one round trip, fingerprints digested in the database, the operations
- ``roundtrip``    a transactional file's round trip, its constant parts composed once per history store
- ``embeddings``, ``embedding_catalog``, ``embedding_steps``, ``embedding_ops``, ``embedding_errors``   llmemory's
                   embedding providers: a model's table, registry row and vector index, backfill, default switch
- ``cli``          ``python -m llmemory_db.migrate``
"""
from .adoption import BaselineResult, baseline, copy_history, refuse_unknown
from .connection import ConnectionSettings, connect, pooler, scrub
from .errors import (BaselineMismatchError, ChecksumMismatchError, ConnectionFailedError, ConnectionLostError,
                     DuplicateVersionError, EditedFileError, Inflight, InterruptedMigrationError,
                     InvalidIdentifierError, LintError, LintIssue, LockRetryError, LockTimeoutError, MigrationError,
                     MigrationFileError, MigrationsDirectoryError, PoolerError, RiskError, SchemaDriftError,
                     SettingError, StatementError, TemplateError, UnknownSchemaError)
from .events import Event
from .extensions import check_extensions
from .files import Migration, checksum, load, version_of
from .history import HistoryStore
from .inflight import InflightLog
from .lint import lint_pending, render_parsed
from .ops import ApplyResult, DriftReport, Preflight, apply, check_drift, preflight, refresh
from .plan import Plan, plan
from .render import render, render_files
from .risk import Finding, RiskReport, ViolationError, analyze
from .settings import DEFAULT_HISTORY_TABLE, DEFAULT_MODULE, POOL_MODES, Settings, Target
from .state import Status, status


def read_history(conn, settings: Settings):
    """filename -> checksum of the module's history rows."""
    return HistoryStore(conn, settings).read()


def read_inflight(conn, settings: Settings):
    return InflightLog(HistoryStore(conn, settings)).read()


def resolve(conn, settings: Settings, filename: str, action: str) -> str:
    return InflightLog(HistoryStore(conn, settings)).resolve(filename, action)


def forget(conn, settings: Settings, drop_tables=()) -> int:
    return HistoryStore(conn, settings).forget(drop_tables)


__all__ = [name for name in dir() if not name.startswith("_")]
