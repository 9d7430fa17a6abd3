"""Running a concurrent index statement: the cleanup before it, the check after it, its progress, and what a failure
leaves (see :mod:`.indexes` for the rules). :func:`execute` runs one inside a no-transaction file; :func:`build` one
outside any file (an index a resource builds, such as an embedding provider's)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import parser, progress
from .diagnosis import failure, remedy_for
from .errors import IndexBuildError, IndexBusyError, MigrationError, StatementFailure, excerpt
from .events import Sink
from .files import Migration
from .indexes import LEFTOVER, IndexOp, concurrent_op
from .progress import Event

if TYPE_CHECKING:  # pragma: no cover
    from .filelock import FileLock
    from .settings import Settings


def _remedy(fail: StatementFailure, settings: "Settings", op: IndexOp, table: str) -> str:
    if fail.sqlstate == "23505" and op.kind == "create":
        probe = ""
        if op.columns:
            cols = ", ".join(op.columns)
            probe = f" (to list them: SELECT {cols}, count(*) FROM {table} GROUP BY {cols} HAVING count(*) > 1)"
        return ("the table holds rows with the same key (the detail above names one): remove or merge the "
                f"duplicates{probe}, or build the index without UNIQUE; then run again")
    if fail.sqlstate == "23505":
        return ("the table holds rows with the same key (the detail above names one): remove or merge them, then "
                "run again")
    if fail.sqlstate == "40P01":
        return ("another session: the build waited for a transaction that waited for it, and PostgreSQL ended the "
                "build; nothing of the index remains: run again (end long transactions that wait on a lock first)")
    if fail.sqlstate == "57014":
        return ("the build was cancelled (statement_timeout, or pg_cancel_backend); nothing of the index remains: "
                "raise statement_timeout for this file (SET statement_timeout = 0 as its first statement) and run "
                "again")
    if fail.sqlstate.startswith("53"):
        return ("the server ran out of a resource (disk space for the new index, memory or connections); free it, "
                "then run again (maintenance_work_mem sets the build's memory)")
    if not fail.sqlstate:
        return "run again; if it stays INVALID, rebuild it by hand with the SQL above and look at the server log"
    return remedy_for(fail, settings, "")


# --------------------------------------------------------------------------- the catalog
@dataclass
class _Index:
    oid: int
    schema: str
    name: str
    valid: bool
    table_oid: int
    building: str = ""  # "pid N (phase)" when another session builds it right now

    @property
    def qualified(self) -> sql.Composed:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class _Target:
    op: IndexOp
    table_oid: int
    table: str                # schema.table, for messages
    schema: str               # the table's schema: where a created index goes
    toast_oid: int = 0
    before: frozenset = frozenset()       # oids of the table's indexes before the statement
    dropped: List[str] = field(default_factory=list)


_TABLE = """
SELECT c.oid, n.nspname, c.relname, c.reltoastrelid::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s)
"""
_TABLE_OF_INDEX = """
SELECT t.oid, n.nspname, t.relname, t.reltoastrelid::int FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace WHERE i.indexrelid = to_regclass(%s)
"""
_INDEXES = """
SELECT c.oid::int, n.nspname, c.relname, i.indisvalid, i.indrelid::int,
       coalesce((SELECT 'pid ' || p.pid || ' (' || p.command || ', ' || p.phase || ')'
                 FROM pg_stat_progress_create_index p
                 WHERE p.pid <> pg_backend_pid() AND (p.index_relid = c.oid
                       OR (p.relid = i.indrelid AND p.command = 'REINDEX CONCURRENTLY' AND c.relname ~ '_cc(new|old)[0-9]*$'))
                 LIMIT 1), '')
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = ANY(%s)
"""


def _indexes(conn: psycopg.Connection, *tables: int) -> List[_Index]:
    return [_Index(*row) for row in conn.execute(_INDEXES, ([t for t in tables if t],)).fetchall()]


def _resolve(conn: psycopg.Connection, op: IndexOp) -> Optional[_Target]:
    name = sql.Identifier(*([op.schema] if op.schema else []), op.relation).as_string(conn)
    row = conn.execute(_TABLE_OF_INDEX if op.kind == "reindex-index" else _TABLE, (name,)).fetchone()
    if row is None:
        return None  # no such relation: the statement itself fails with the server's message
    oid, schema, table, toast = row
    target = _Target(op, oid, f"{schema}.{table}", schema, toast)
    target.before = frozenset(i.oid for i in _indexes(conn, oid))
    return target


def _mine(target: _Target, indexes: Sequence[_Index], after: bool) -> List[_Index]:
    """The indexes of the table this statement builds (or left behind)."""
    op = target.op
    if op.kind == "create":
        if op.name:
            return [i for i in indexes if i.name == op.name and i.schema == target.schema
                    and i.table_oid == target.table_oid]
        return [i for i in indexes if after and i.oid not in target.before and i.table_oid == target.table_oid]
    if op.kind == "reindex-index":
        return [i for i in indexes if i.name == op.relation and i.table_oid == target.table_oid]
    return [i for i in indexes if i.table_oid == target.table_oid]


def _leftovers(target: _Target, indexes: Sequence[_Index]) -> List[_Index]:
    """INVALID ``*_ccnew*`` / ``*_ccold*`` indexes a REINDEX CONCURRENTLY of this target left (the table's and its
    TOAST table's)."""
    op = target.op
    found = []
    for index in indexes:
        match = LEFTOVER.match(index.name)
        if index.valid or not match:
            continue
        if op.kind == "reindex-index" and not op.relation.startswith(match.group(1)):
            continue  # another index's leftover (names are truncated to 63 bytes: a prefix)
        found.append(index)
    return found


def _drop(conn: psycopg.Connection, index: _Index) -> None:
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index.qualified))


def _busy(index: _Index, target: _Target) -> IndexBusyError:
    return IndexBusyError(
        f"index {index.display} on {target.table} is INVALID and being built right now by {index.building}; "
        "this run does not drop an index under another session's build",
        remedy="wait for that build to end (pg_stat_progress_create_index shows it) and run again, or end it with "
               "SELECT pg_cancel_backend(<pid>)")


# --------------------------------------------------------------------------- before, after, failed
def prepare(conn: psycopg.Connection, op: IndexOp, file: str, line: int, on_event: Sink,
            resuming: bool = False) -> Optional[_Target]:
    """Before the statement: drop the INVALID index it would build (or REINDEX's leftovers), saying so. Returns
    the target (None when the relation does not exist: the statement fails on its own)."""
    target = _resolve(conn, op)
    if target is None:
        return None
    indexes = _indexes(conn, target.table_oid, target.toast_oid)
    stale = [i for i in _mine(target, indexes, after=False) if not i.valid] if op.kind == "create" else []
    stale += _leftovers(target, indexes) if op.kind != "create" else []
    for index in stale:
        if index.building:
            raise _busy(index, target)
        _drop(conn, index)
        target.dropped.append(index.display)
        on_event(Event(
            f"index-cleanup: {file}:{line}: dropped the INVALID index {index.display} on {target.table} that an "
            f"earlier build left (DROP INDEX CONCURRENTLY), before {op.describe()}",
            "index-cleanup", file, line, index=index.display, table=target.table))
    target.before = frozenset(i.oid for i in _indexes(conn, target.table_oid))
    return target


def _check(conn: psycopg.Connection, target: _Target) -> List[_Index]:
    """The INVALID indexes this statement leaves (its own, or REINDEX's leftovers); [] when all is valid."""
    indexes = _indexes(conn, target.table_oid, target.toast_oid)
    bad = [i for i in _mine(target, indexes, after=True) if not i.valid]
    if target.op.kind != "create":
        bad += [i for i in _leftovers(target, indexes) if i not in bad]
    return bad


def _clean(conn: psycopg.Connection, target: _Target, bad: Sequence[_Index]) -> List[str]:
    """Drop what the statement left INVALID (never an index another session is building, nor, for REINDEX TABLE,
    an INVALID index it only skipped); returns notes for the message."""
    notes = []
    for index in bad:
        if index.building:
            notes.append(f"index {index.display} is INVALID and being built by {index.building}: left alone")
            continue
        if target.op.kind == "reindex-table" and not LEFTOVER.match(index.name):
            notes.append(f"index {index.display} on {target.table} is INVALID (REINDEX TABLE CONCURRENTLY skips "
                         f"INVALID indexes): rebuild it with REINDEX INDEX CONCURRENTLY {index.display}, or drop it")
            continue
        try:
            _drop(conn, index)
            notes.append(f"index {index.display} on {target.table}: the build left it INVALID; it was dropped "
                         "(DROP INDEX CONCURRENTLY), nothing of it remains")
        except psycopg.Error as exc:
            fail = failure(exc)
            notes.append(f"index {index.display} on {target.table} is INVALID and could not be dropped "
                         f"({fail.message}): drop it with DROP INDEX CONCURRENTLY {index.display}")
    return notes


def _not_built(conn: psycopg.Connection, target: _Target) -> Optional[str]:
    """CREATE … IF NOT EXISTS that skipped because the name belongs to another relation: what it found."""
    op = target.op
    if op.kind != "create" or not op.name:
        return None
    if _mine(target, _indexes(conn, target.table_oid), after=True):
        return None
    row = conn.execute("SELECT c.relkind, coalesce(t.relname, '') FROM pg_class c JOIN pg_namespace n ON "
                       "n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON "
                       "t.oid = i.indrelid WHERE n.nspname = %s AND c.relname = %s",
                       (target.schema, op.name)).fetchone()
    if row is None:
        return f"index {target.schema}.{op.name} does not exist after the statement"
    return (f"no index {op.name} was built on {target.table}: a relation of that name exists already in "
            f"{target.schema}" + (f" (an index on {row[1]})" if row[1] else f" (relkind {row[0]})")
            + " and IF NOT EXISTS skipped the statement")


def execute(conn: psycopg.Connection, settings: "Settings", migration: Migration, statement: parser.Statement,
            lock: Optional["FileLock"], on_event: Sink, committed: Sequence[str], *,
            last: bool = False, earlier: bool = False, resuming: bool = False) -> None:
    """Run one statement of a no-transaction file, with progress events while it runs. A concurrent index statement
    gets its cleanup before and its check after (see the module's docstring) and raises :class:`IndexBuildError`
    (a StatementError) after dropping what it left INVALID. Any other failure is psycopg's error, as before.
    ``earlier``: statements of the file ran before this one; ``resuming``: the statement an interrupted run
    stopped at (an index it finds built and valid is what that run completed)."""
    label = progress.label_of(statement.text)
    op = concurrent_op(statement.text)
    if op is None:
        with progress.watching(conn, on_event, migration.filename, statement.line, label):
            conn.execute(statement.text)
        return
    file, line = migration.filename, statement.line

    def error(fail: StatementFailure, notes: Sequence[str], target: Optional[_Target]) -> IndexBuildError:
        table = target.table if target else op.written
        index = (f"{target.schema}.{op.name}" if target and op.name else op.written) if op.kind != "reindex-table" \
            else table
        return IndexBuildError(file, line, statement.text, fail, committed, _remedy(fail, settings, op, table),
                               notes, earlier, index)

    try:
        target = prepare(conn, op, file, line, on_event, resuming)
    except IndexBusyError as exc:
        raise error(StatementFailure(message=exc.message), [], None) from None
    if resuming and target is not None and op.kind == "create" and op.name:
        done = [i for i in _mine(target, _indexes(conn, target.table_oid), after=True) if i.valid]
        if done:  # the interrupted run built it, then died before recording its progress
            on_event(Event(f"index-resume: {file}:{line}: index {done[0].display} on {target.table} is valid: the "
                           "interrupted run completed it; going on", "index-resume", file, line,
                           index=done[0].display))
            return
    try:
        with (lock.guard(statement.text, line, last) if lock is not None else nullcontext()), \
                progress.watching(conn, on_event, file, line, label):
            conn.execute(statement.text)
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise
        fail = failure(exc)
        notes = _clean(conn, target, _check(conn, target)) if target is not None else []
        raise error(fail, notes or ["no INVALID index was left behind"], target) from None
    if target is None:
        return
    skipped = _not_built(conn, target)
    if skipped:
        raise error(StatementFailure(message=skipped), [], target)
    bad = _check(conn, target)
    if bad:
        names = ", ".join(i.display for i in bad)
        fail = StatementFailure(message=f"the statement ended but left INVALID index(es): {names}",
                                detail="PostgreSQL's planner never uses an INVALID index, and an INVALID unique index "
                                       "enforces nothing")
        raise error(fail, _clean(conn, target, bad), target)


@dataclass(frozen=True)
class _Named:
    filename: str


def build(conn: psycopg.Connection, settings: "Settings", text: str, name: str,
          on_event: Sink = progress.discard, line: int = 1) -> None:
    """One concurrent index statement outside a migration file (an index a resource builds): the same cleanup,
    check, errors and progress events as in a file; ``name`` stands for the file in them. ``conn``: autocommit,
    its search_path and settings (maintenance_work_mem, statement_timeout) set by the caller."""
    if concurrent_op(text) is None:
        raise MigrationError(f"{name}: not a concurrent index statement: {excerpt(text)}",
                             remedy="use CREATE [UNIQUE] INDEX CONCURRENTLY … or REINDEX (INDEX|TABLE) CONCURRENTLY …")
    execute(conn, settings, _Named(name), parser.Statement(text, line), None, on_event, [])  # type: ignore[arg-type]
