"""The migration engine: pgdbm-compatible templated SQL migrations on psycopg 3.

No Pulumi import anywhere in this package: the command line
(``python -m components.migrate``) and the Pulumi layer both call it.
"""
from .engine import (DEFAULT_HISTORY_TABLE, DEFAULT_MODULE, POOL_MODES, ApplyResult, Status, Target, apply,
                     check_extensions, connect,
                     forget, lint_pending, pooler, read_history, read_inflight, resolve, status)
from .errors import (ChecksumMismatchError, ConnectionFailedError, ConnectionLostError, DuplicateVersionError, Inflight,
                     InterruptedMigrationError, InvalidIdentifierError, LintError, LintIssue, LockTimeoutError,
                     MigrationError, MigrationFileError, MigrationsDirectoryError, PoolerError, StatementError,
                     TemplateError)
from .files import Migration, checksum, load, version_of
from .plan import Plan, plan
from .render import render

__all__ = [name for name in dir() if not name.startswith("_")]
