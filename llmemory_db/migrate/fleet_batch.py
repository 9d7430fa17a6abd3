"""A new tenant in one transaction and one round trip: set-up, every file, and the files' history rows in one
``INSERT`` (issue 24: "history rows written in one statement per tenant per wave where pgdbm compatibility allows").

What stays as it was:

- **each file commits with its history row**: the files and their rows commit together, in the tenant's one
  transaction (all of them or none); nothing is ever recorded that did not run, nor run without its row;
- **pgdbm's view of the history**: one row per file, the same table and columns (``filename``, ``checksum``,
  ``module_name``, ``execution_time_ms`` measured per file by the server, ``version``); ``applied_at`` is each
  file's start, so pgdbm's ``ORDER BY applied_at DESC, id DESC`` lists them in order;
- **pgdbm's lock**: the module's key shared and the tenant's key exclusive, taken first (if busy: the usual path,
  which waits for it);
- **a failure's report and the state it leaves**: on any error the transaction is rolled back and the tenant is
  applied the usual way (set-up, then one transaction per file): the same files commit as before the change, and
  the error names the same file and line.

Only where it cannot change a result:

- **new tenants only** (no history before this run): nobody reads their tables yet, so holding every file's locks
  until one commit blocks no one; a tenant with history keeps one transaction per file (live tables: short locks);
- **files that can share a transaction**: transactional files without ``SET``/``RESET``, ``SET CONSTRAINTS``,
  ``DISCARD``, transaction control or ``ALTER TYPE ... ADD VALUE`` (a value added in a transaction cannot be used
  before it commits); ``search_path`` is set again before each file;
- **an empty history**: if another applier (pgdbm) recorded anything meanwhile, the usual path re-plans file by file.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import psycopg
from psycopg import sql

from . import parser
from .events import Event, Sink
from .executor import settings_sql
from .files import Migration
from .history import APPLIED_MARK, BUSY_MARK, HistoryStore, marked, rollback
from .render import render
from .roundtrip import settings_select

# statements whose effect outlives them inside a transaction, or that cannot share one with what follows
UNBATCHABLE = frozenset({"VariableSetStmt", "ConstraintsSetStmt", "DiscardStmt", "TransactionStmt",
                         "AlterEnumStmt"})


def batchable(files: Sequence[Migration], probe_schema: str) -> bool:
    """May a new tenant's files run in one transaction? (Decided once per fleet: a tenant's name changes no
    statement's kind.)"""
    for migration in files:
        if migration.no_transaction:
            return False
        text = render(migration.sql, probe_schema, migration.filename)
        if any(kind in UNBATCHABLE for kind, _, _, _ in parser.parse(text)):
            return False
    return True


def tenant_sql(store: HistoryStore, setup: sql.Composable, files: Sequence[Migration], schema: str) -> str:
    """The whole of a new tenant's transaction (see the module's docstring)."""
    conn, s = store.conn, store.settings
    literal = lambda value: sql.Literal(value).as_string(conn)  # noqa: E731
    history = s.history_ident.as_string(conn)
    module = literal(s.module_name)
    settings = [t for t in (x.as_string(conn) for x in settings_select(store, settings_sql(s))) if not t.startswith(
        "set_config('search_path'")]
    search_path = sql.SQL("set_config('search_path', quote_ident({}) || ', public', true)").format(
        sql.Literal(schema)).as_string(conn)
    started = "current_setting('llmdb.t{}')::timestamptz"
    chunks = ["BEGIN", store.try_lock_sql().as_string(conn), setup.as_string(conn),
              # under the lock: an empty history (else another applier was here: the usual path re-plans)
              f"SELECT (SELECT ({literal(APPLIED_MARK + ' ')} || count(*))::int FROM {history} "
              f"WHERE module_name = {module} OR module_name IS NULL HAVING count(*) > 0), {', '.join(settings)}"]
    rows = []
    for index, migration in enumerate(files):
        # "\n" then the next "; " after the file end a last statement without a semicolon, or a -- comment
        chunks.append(f"SELECT {search_path}, set_config('llmdb.t{index}', clock_timestamp()::text, true);\n"
                      f"{render(migration.sql, schema, migration.filename)}\n")
        end = "clock_timestamp()" if index == len(files) - 1 else started.format(index + 1)
        rows.append(f"({literal(migration.filename)}, {literal(migration.checksum)}, {module}, "
                    f"greatest(1, (extract(epoch FROM {end} - {started.format(index)}) * 1000)::int), "
                    f"{literal(migration.version)}, ({started.format(index)})::timestamp)")
    chunks += [f"INSERT INTO {history} (filename, checksum, module_name, execution_time_ms, version, applied_at) "
               f"VALUES {', '.join(rows)}", "COMMIT"]
    return "; ".join(chunks)


def apply_new_tenant(store: HistoryStore, setup: sql.Composable, files: Sequence[Migration], schema: str,
                     on_event: Sink) -> Optional[List[str]]:
    """Run a new tenant in one transaction; the files applied, or None when the usual path must do it (the lock
    is busy, another applier recorded files meanwhile, or anything failed: rolled back, nothing left)."""
    conn = store.conn
    text = tenant_sql(store, setup, files, schema)
    try:
        conn.execute(text)
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise
        rollback(conn)
        if not (marked(exc, BUSY_MARK) or marked(exc, APPLIED_MARK)):
            on_event(Event("tenant", f"tenant {schema}: its files in one transaction failed "
                                     f"({exc.diag.sqlstate}): applying them one transaction per file"))
        return None
    except BaseException:
        rollback(conn)
        raise
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:  # a file swallowed COMMIT
        rollback(conn)
        return None
    return [m.filename for m in files]
