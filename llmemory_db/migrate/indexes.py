"""Concurrent index statements the engine understands, and INVALID indexes wherever they are.

``CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON table …`` and ``REINDEX (INDEX|TABLE) … CONCURRENTLY``
(pglast-parsed) in a no-transaction file run with their cleanup and their check:

- **before** the statement, an INVALID index of the same name on the same table (what an interrupted or failed
  build leaves, and what ``IF NOT EXISTS`` would silently accept) is dropped with ``DROP INDEX CONCURRENTLY``, and
  an event says so; for ``REINDEX … CONCURRENTLY`` the INVALID leftovers of an earlier one (``<name>_ccnew[N]``,
  ``<name>_ccold[N]``) likewise;
- **after** it, the index must be valid before the file goes on (and is recorded): an invalid result, or a failed
  build (the duplicate key of a UNIQUE build, a cancel, a deadlock), is an :class:`IndexBuildError` naming the
  index, the server's reason (its DETAIL) and the remedy; the INVALID index is dropped, so nothing of it remains
  and the file is not recorded;
- an index the same statement would build, found INVALID and being built right now by another session, is an
  error naming that session (never dropped under it).

The next run after a SIGKILL of the applier **resumes** the file by itself when its in-flight record allows it
safely (:func:`resume_point`): the run is dead (not failed), the file is unchanged (checksum) and the statement it
stopped at is such a concurrent index statement. The statements before it completed (the record says so), and the
interrupted one is re-run after the cleanup above, which is what ``resolve FILE --retry`` then an apply would do
for a one-statement file, without re-running the completed ones. A failed run (an error recorded) still waits for
``resolve``: its cause (duplicates, say) is still there.

:func:`invalid_indexes` lists every INVALID index of a schema with the SQL that rebuilds it, for ``status``,
``drift`` and a refresh. :func:`build` runs one such statement outside a migration file (an index a resource
builds), with the same cleanup, check and progress.
"""
from __future__ import annotations

import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import lint as lint_mod
from . import progress
from .diagnosis import failure, remedy_for
from .errors import Inflight, InterruptedMigrationError, LintIssue, MigrationError, StatementError, StatementFailure, \
    excerpt
from .files import Migration
from .history import rollback
from .lockwait import backoff, begin_locked, budget_of, live_run_error, remaining, running
from .progress import Event
from .render import render

if TYPE_CHECKING:  # pragma: no cover
    from .history import HistoryStore
    from .lockwait import FileLock
    from .settings import Settings

_LEFTOVER = re.compile(r"^(.*)_cc(new|old)[0-9]*$")


# --------------------------------------------------------------------------- the statements
@dataclass(frozen=True)
class IndexOp:
    """A concurrent index statement: ``kind`` create | reindex-index | reindex-table; ``relation`` the table
    (create, reindex-table) or the index (reindex-index), as written (``schema`` None: found by search_path)."""

    kind: str
    relation: str
    schema: Optional[str] = None
    name: Optional[str] = None       # create: the index's name (None: the server picks one)
    unique: bool = False
    if_not_exists: bool = False
    columns: tuple = ()              # create: the plain column names of the key, when they all are

    @property
    def written(self) -> str:
        return f"{self.schema}.{self.relation}" if self.schema else self.relation

    def describe(self) -> str:
        if self.kind == "create":
            what = "CREATE UNIQUE INDEX" if self.unique else "CREATE INDEX"
            return f"{what} CONCURRENTLY {self.name or '(unnamed)'} ON {self.written}"
        return f"REINDEX {'INDEX' if self.kind == 'reindex-index' else 'TABLE'} CONCURRENTLY {self.written}"


def _concurrently(params: Sequence[dict]) -> bool:
    for param in params or ():
        elem = param.get("DefElem", {})
        if elem.get("defname") == "concurrently":
            arg = elem.get("arg")
            if not arg:
                return True
            value = (arg.get("String", {}).get("sval") or arg.get("Boolean", {}).get("boolval")
                     or arg.get("Integer", {}).get("ival"))
            return str(value).lower() not in ("false", "off", "0", "no", "none")
    return False


def op_of(kind: str, stmt: dict) -> Optional[IndexOp]:
    """The concurrent index statement of a parse-tree node (lint.parse), or None."""
    if kind == "IndexStmt" and stmt.get("concurrent"):
        relation = stmt.get("relation") or {}
        elems = [e.get("IndexElem", {}) for e in stmt.get("indexParams") or ()]
        columns = tuple(e["name"] for e in elems if e.get("name"))
        return IndexOp("create", relation.get("relname", ""), relation.get("schemaname"), stmt.get("idxname"),
                       bool(stmt.get("unique")), bool(stmt.get("if_not_exists")),
                       columns if len(columns) == len(elems) else ())
    if kind == "ReindexStmt" and _concurrently(stmt.get("params")) and stmt.get("relation"):
        target = {"REINDEX_OBJECT_INDEX": "reindex-index", "REINDEX_OBJECT_TABLE": "reindex-table"}.get(
            stmt.get("kind", ""))
        if target:
            relation = stmt["relation"]
            return IndexOp(target, relation.get("relname", ""), relation.get("schemaname"))
    return None


def concurrent_op(text: str) -> Optional[IndexOp]:
    """The concurrent index statement ``text`` is, or None (also when it does not parse)."""
    try:
        parsed = lint_mod.parse(text)
    except Exception:  # pglast's ParseError: the server will say
        return None
    return op_of(parsed[0][0], parsed[0][1]) if len(parsed) == 1 else None


def has_concurrent(statements: Sequence[lint_mod.Statement]) -> bool:
    return any(concurrent_op(s.text) for s in statements)


def lint(filename: str, rendered: str) -> List[LintIssue]:
    """A concurrent statement in a transactional file cannot run (PostgreSQL refuses it in a transaction block):
    an error before anything runs, with the remedy."""
    try:
        parsed = lint_mod.parse(rendered)
    except Exception:
        return []  # the syntax check reports it
    issues = []
    position = lint_mod._Positions(rendered)
    for kind, stmt, start, length in parsed:
        concurrent = op_of(kind, stmt) is not None or (kind == "DropStmt" and stmt.get("concurrent"))
        if concurrent:
            text = rendered[start:start + length]
            line, column = position(start + len(text) - len(text.lstrip()))
            issues.append(LintIssue(
                filename, line, column,
                "a CONCURRENTLY statement cannot run inside a transaction block, and this file runs in one: put "
                "'-- pgdbm:no-transaction' on a line of its own in the file (ideally one concurrent statement per "
                "file, last in it)", excerpt(text)))
    return issues


# --------------------------------------------------------------------------- errors
class IndexBuildError(StatementError):
    """A concurrent index statement failed or left an INVALID index; what it left was dropped."""

    def __init__(self, file: str, line: int, statement: str, fail: StatementFailure, committed: Sequence[str],
                 remedy: str, notes: Sequence[str], earlier: bool, index: str = "") -> None:
        self.index, self.notes = index, list(notes)
        super().__init__(file, line, statement, fail, committed, remedy=remedy, no_transaction=True)
        lines = [f"Migration {file} failed at line {line}: {fail.message}"
                 + (f" (SQLSTATE {fail.sqlstate})" if fail.sqlstate else "")]
        if fail.detail:
            lines.append(f"  detail: {fail.detail}")
        if fail.hint:
            lines.append(f"  hint: {fail.hint}")
        lines.append(f"  statement: {excerpt(statement)}")
        lines.extend(f"  {note}" for note in self.notes)
        if earlier:
            lines.append(f"  the statements of {file} before line {line} stayed committed: the file is recorded as "
                         f"failed there; once the cause is fixed, python -m llmemory_db.migrate resolve {file} "
                         "--retry re-runs it whole (or --mark-applied after finishing it by hand)")
        else:
            lines.append(f"  nothing of {file} ran before it: the file is not recorded and the next run runs it")
        lines.append("  committed earlier in this run: " + (", ".join(self.committed) if self.committed else "none"))
        self.message = "\n".join(lines)
        self.args = (str(self),)


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


class IndexBusyError(MigrationError):
    """Raised inside :func:`execute`; turned into an IndexBuildError there."""


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
        match = _LEFTOVER.match(index.name)
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
def prepare(conn: psycopg.Connection, op: IndexOp, file: str, line: int, on_event: Callable[[str], None],
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
        if target.op.kind == "reindex-table" and not _LEFTOVER.match(index.name):
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


def execute(conn: psycopg.Connection, settings: "Settings", migration: Migration, statement: lint_mod.Statement,
            lock: Optional["FileLock"], on_event: Callable[[str], None], committed: Sequence[str], *,
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
          on_event: Callable[[str], None] = progress.discard, line: int = 1) -> None:
    """One concurrent index statement outside a migration file (an index a resource builds): the same cleanup,
    check, errors and progress events as in a file; ``name`` stands for the file in them. ``conn``: autocommit,
    its search_path and settings (maintenance_work_mem, statement_timeout) set by the caller."""
    if concurrent_op(text) is None:
        raise MigrationError(f"{name}: not a concurrent index statement: {excerpt(text)}",
                             remedy="use CREATE [UNIQUE] INDEX CONCURRENTLY … or REINDEX (INDEX|TABLE) CONCURRENTLY …")
    execute(conn, settings, _Named(name), lint_mod.Statement(text, line), None, on_event, [])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- interrupted runs
def resumable(record: Inflight, migration: Optional[Migration], statements: Sequence[lint_mod.Statement]) -> bool:
    """May the next run go on by itself? The run died (not failed), the file is the one that ran, and the
    statement it stopped at is a concurrent index statement (which :func:`execute` cleans up and re-runs)."""
    if migration is None or record.error or record.alive or record.checksum != migration.checksum:
        return False
    if record.total != len(statements) or not 0 <= record.done < len(statements):
        return False
    return concurrent_op(statements[record.done].text) is not None


def resume_point(store: "HistoryStore", migration: Migration, statements: Sequence[lint_mod.Statement],
                 on_event: Callable[[str], None]) -> Optional[int]:
    """Under the module's lock, before a no-transaction file runs: the statement to resume it at (its in-flight
    record taken over by this run), or None to run it as usual (which refuses an interrupted record)."""
    if not store.tables_exist()[1]:
        return None
    record = next((i for i in store.read_inflight() if i.filename == migration.filename), None)
    if record is None or not resumable(record, migration, statements):
        return None
    s = store.settings
    store.conn.execute(sql.SQL("UPDATE {} SET pid = pg_backend_pid(), started_at = now(), error = NULL "
                               "WHERE {}").format(s.inflight_ident, store._inflight_where(migration.filename)))
    statement = statements[record.done]
    on_event(Event(
        f"index-resume: {migration.filename}:{statement.line}: resuming the run that was interrupted (backend pid "
        f"{record.pid} is gone) at its statement {record.done + 1} of {record.total}, a concurrent index statement "
        f"({progress.label_of(statement.text)}); the {record.done} statement(s) before it completed",
        "index-resume", migration.filename, statement.line, done=record.done, total=record.total, pid=record.pid))
    return record.done


def settle_inflight(store: "HistoryStore", files: Sequence[Migration], recorded: Sequence[str]) -> List[Migration]:
    """What ``apply`` does first when in-flight records exist, under the module's lock (polled): wait (bounded by
    lock_wait_timeout) while a live run of the module has one; refuse (InterruptedMigrationError) those that need
    a decision; return the *recorded* files whose interrupted concurrent build this run resumes (a pending one is
    resumed by its own run)."""
    settings, conn = store.settings, store.conn
    by_name = {m.filename: m for m in files}
    limit = budget_of(settings.lock_wait_timeout)
    deadline = None if limit is None else time.monotonic() + limit
    tries = 0
    while True:
        begin_locked(store, remaining(deadline))
        try:
            records = store.read_inflight() if store.tables_exist()[1] else []
            live = running(records, conn)
            if not live:
                blocked = [i for i in records if not resumable(i, by_name.get(i.filename), _statements(
                    by_name.get(i.filename), settings))]
                if blocked:
                    raise InterruptedMigrationError(blocked, settings.module_name)
                conn.execute("COMMIT")
                return [by_name[i.filename] for i in records if i.filename in set(recorded)]
        except BaseException:
            rollback(conn)
            raise
        conn.execute("ROLLBACK")
        tries += 1
        left = remaining(deadline)
        if left is not None and left <= 0:
            raise live_run_error(store, live)
        time.sleep(backoff(tries) if left is None else min(backoff(tries), left))


def _statements(migration: Optional[Migration], settings: "Settings") -> List[lint_mod.Statement]:
    if migration is None:
        return []
    try:
        return lint_mod.split(render(migration.sql, settings.schema, migration.filename))
    except Exception:
        return []


# --------------------------------------------------------------------------- INVALID indexes of a schema
@dataclass
class InvalidIndex:
    schema: str
    name: str
    table: str            # schema.table
    definition: str       # pg_get_indexdef
    leftover: bool        # a REINDEX CONCURRENTLY leftover (*_ccnew, *_ccold): the original index exists
    partitioned: bool
    building: str = ""    # "pid N (command, phase)" when a session builds it right now

    @property
    def qualified(self) -> str:
        return sql.Identifier(self.schema, self.name).as_string(None)

    @property
    def rebuild_sql(self) -> str:
        """The SQL that rebuilds it (or removes a leftover), concurrently, for a no-transaction file or psql."""
        if self.leftover:
            return f"DROP INDEX CONCURRENTLY IF EXISTS {self.qualified};"
        if self.partitioned:
            return (f"-- a partitioned index is INVALID until every partition has its index attached: CREATE INDEX "
                    f"CONCURRENTLY on each partition, then ALTER INDEX {self.qualified} ATTACH PARTITION <index>;")
        create = re.sub(r"^CREATE (UNIQUE )?INDEX ", lambda m: f"CREATE {m.group(1) or ''}INDEX CONCURRENTLY ",
                        self.definition, count=1)
        return f"DROP INDEX CONCURRENTLY IF EXISTS {self.qualified}; {create};"

    def describe(self) -> str:
        if self.building:
            return f"index {self.schema}.{self.name} on {self.table}: being built now by {self.building}"
        why = "a REINDEX CONCURRENTLY leftover" if self.leftover else "never used by the planner, enforces nothing"
        return f"index {self.schema}.{self.name} on {self.table}: INVALID ({why}); rebuild: {self.rebuild_sql}"

    def as_dict(self) -> dict:
        return {"index": f"{self.schema}.{self.name}", "table": self.table, "definition": self.definition,
                "leftover": self.leftover, "building": self.building, "rebuild": self.rebuild_sql}


_INVALID = """
SELECT n.nspname, c.relname, tn.nspname || '.' || t.relname, pg_get_indexdef(c.oid), c.relkind = 'I',
       coalesce((SELECT 'pid ' || p.pid || ' (' || p.command || ', ' || p.phase || ')'
                 FROM pg_stat_progress_create_index p
                 WHERE p.index_relid = c.oid OR (p.relid = t.oid AND p.command LIKE '%%CONCURRENTLY%%')
                 LIMIT 1), '')
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE NOT i.indisvalid AND n.nspname = ANY(%s)
ORDER BY 1, 2
"""


def invalid_indexes(conn: psycopg.Connection, schemas: Sequence[str]) -> List[InvalidIndex]:
    """Every INVALID index in ``schemas``, whoever made it, with the SQL that rebuilds it; those being built right
    now (a CONCURRENTLY build in progress is INVALID until it ends) say so in ``building``."""
    rows = conn.execute(_INVALID, (list(schemas),)).fetchall()
    return [InvalidIndex(schema, name, table, definition, bool(_LEFTOVER.match(name)), partitioned, building)
            for schema, name, table, definition, partitioned, building in rows]


def invalid_lines(found: Sequence[InvalidIndex]) -> List[str]:
    return [i.describe() for i in found]
