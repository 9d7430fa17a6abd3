"""Diagnosis: where a migration failed (file, line, statement) and what to do about it, by SQLSTATE.

Remedies are chosen from the SQLSTATE and from the failing statement's parse tree, never from the server's
message text (it is translated when the server runs with another ``lc_messages``).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import psycopg
from psycopg import errors as pg_errors

from . import parser
from .errors import StatementError, StatementFailure
from .files import Migration
from .settings import Settings

EXTENSION_REMEDY = (
    "run with a user that has SUPERUSER, or create the extension beforehand as a superuser: "
    "CREATE EXTENSION IF NOT EXISTS vector; GRANT ALL ON SCHEMA <schema> TO <migration user>;")


def failure(exc: psycopg.Error) -> StatementFailure:
    diag = exc.diag
    return StatementFailure(sqlstate=diag.sqlstate or "", message=diag.message_primary or str(exc).strip(),
                            detail=diag.message_detail or "", hint=diag.message_hint or "")


def statement_kind(text: str) -> str:
    """The parse-tree node of a statement (``CreateExtensionStmt``), '' when it does not parse."""
    try:
        parsed = parser.parse(text)
    except Exception:  # pglast's ParseError: the server found the statement anyway
        return ""
    return parsed[0][0] if parsed else ""


def extension_name(text: str) -> str:
    try:
        parsed = parser.parse(text)
    except Exception:
        return ""
    return parsed[0][1].get("extname", "") if parsed and parsed[0][0] == "CreateExtensionStmt" else ""


def remedy_for(fail: StatementFailure, settings: Settings, statement: str = "") -> str:
    """What to do about a failed statement, from its SQLSTATE (psycopg's error classes) and its kind."""
    error_class = pg_errors.lookup(fail.sqlstate) if fail.sqlstate else None
    if error_class is pg_errors.InsufficientPrivilege and statement_kind(statement) == "CreateExtensionStmt":
        return EXTENSION_REMEDY.replace("vector", extension_name(statement) or "vector")
    if error_class is pg_errors.InvalidSchemaName and settings.schema:
        return f"create the schema first: CREATE SCHEMA IF NOT EXISTS {settings.schema}; " \
               "or give the migration user the CREATE privilege on the database"
    if error_class is pg_errors.LockNotAvailable:
        return "another session holds a lock on an object this migration changes; retry later or raise lock_timeout"
    if error_class is pg_errors.QueryCanceled:
        return "the statement ran longer than statement_timeout; raise it or split the migration"
    data = data_remedy(fail, error_class, settings, statement)
    if data:
        return data
    if error_class in (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.TransactionRollback):
        return concurrency_remedy(error_class)
    return "fix the statement and run again"


def data_remedy(fail: StatementFailure, error_class, settings: Settings, statement: str) -> str:
    """An integrity violation (class 23), or a data exception (class 22) of a type change: the rows the table holds
    are what must change, not the statement; names the key from the server's DETAIL, and the query that lists the
    violating rows when the statement is one the data preflight knows."""
    from . import violation_checks, violation_reads  # noqa: PLC0415 - pglast's AST is needed only on this path

    if not statement or error_class is None or \
            not issubclass(error_class, (psycopg.IntegrityError, psycopg.DataError)):
        return ""  # (without the statement: the engine's own queries on the history, not the user's data)
    queries = violation_reads.failure_queries(statement, fail.sqlstate, settings.schema_name)
    if issubclass(error_class, psycopg.DataError) and not queries:  # class 22 of any other statement
        return ""
    detail = f" ({fail.detail.rstrip('.')})" if fail.detail else ""
    text = f"rows the table holds violate what the statement needs{detail}: the statement is not what must change, " \
           "the data is"
    if queries:
        check, query = queries[0]
        text += f": {violation_checks.remedy(check)}; list them with: {query}"
    else:
        text += ": change or remove the rows the detail names (or the rows this statement writes that conflict " \
                "with them)"
    return text + "; then run again"


def concurrency_remedy(error_class) -> str:
    """Deadlock (40P01) and serialization failure (40001): another session's work, not this statement's fault."""
    if error_class is pg_errors.DeadlockDetected:
        return ("another session: it and this migration each waited for a lock the other held, and PostgreSQL "
                "ended this one (deadlock). The statement is not at fault: run again. If it repeats, look for what "
                "takes locks on these tables at the same time (pg_stat_activity, pg_locks): another applier, the "
                "application's own migrations at start-up, a long transaction, a CREATE INDEX CONCURRENTLY waiting "
                "for older snapshots")
    return ("another session: a concurrent transaction changed what this one read or wrote (serialization "
            "failure). The statement is not at fault: run again; if it repeats, run the migration when fewer "
            "sessions write these tables")


def line_in(statement: parser.Statement, exc: psycopg.Error) -> int:
    """Line within the file of an error raised by ``statement`` sent on its own."""
    position = exc.diag.statement_position
    return statement.line + (statement.text[: int(position) - 1].count("\n") if position else 0)


def statement_error(conn: psycopg.Connection, settings: Settings, migration: Migration, rendered: str,
                    exc: psycopg.Error, committed: Sequence[str], offset: int = 0,
                    replay: Optional[Callable[[], None]] = None,
                    rollback: Optional[Callable[[], None]] = None) -> StatementError:
    """Locate the failing statement: by the server's error position (``offset`` characters of the batch came
    before the file), else by replaying the file statement by statement after ``replay()`` opened a
    transaction with the migration's settings; ``rollback()`` ends it."""
    fail = failure(exc)
    statements = parser.split(rendered)
    position = exc.diag.statement_position
    failing: Optional[parser.Statement] = None
    line = 1
    if position and 0 <= int(position) - 1 - offset < len(rendered):
        index = int(position) - 1 - offset
        line = rendered.count("\n", 0, index) + 1
        failing = next((s for s in reversed(statements) if s.line <= line), None)
    elif replay is not None:
        try:
            replay()
            if fail.sqlstate == "55P03":
                # the statement that waited for a lock fails again at once, without queueing the application a
                # second time behind its lock request
                conn.execute("SET LOCAL lock_timeout = '10ms'")
            for statement in statements:
                try:
                    conn.execute(statement.text)
                except psycopg.Error as again:
                    failing, line, fail = statement, line_in(statement, again), failure(again)
                    break
        finally:
            if rollback is not None:
                rollback()
    text = failing.text if failing else (statements[0].text if statements else rendered)
    return StatementError(migration.filename, line, text, fail, list(committed),
                          remedy=remedy_for(fail, settings, text), no_transaction=migration.no_transaction)


def no_transaction_error(migration: Migration, settings: Settings, statement: parser.Statement,
                         exc: psycopg.Error, committed: List[str]) -> StatementError:
    fail = failure(exc)
    return StatementError(migration.filename, line_in(statement, exc), statement.text, fail, committed,
                          remedy=remedy_for(fail, settings, statement.text), no_transaction=True)
