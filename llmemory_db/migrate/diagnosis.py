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
    return "fix the statement and run again"


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
