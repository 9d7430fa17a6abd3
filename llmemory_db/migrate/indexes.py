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
from dataclasses import dataclass
from typing import List, Optional, Sequence

import psycopg
from psycopg import sql

from . import parser
from .errors import LintIssue, excerpt

LEFTOVER = re.compile(r"^(.*)_cc(new|old)[0-9]*$")


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
        parsed = parser.parse(text)
    except Exception:  # pglast's ParseError: the server will say
        return None
    return op_of(parsed[0][0], parsed[0][1]) if len(parsed) == 1 else None


def has_concurrent(statements: Sequence[parser.Statement]) -> bool:
    return any(concurrent_op(s.text) for s in statements)


def lint(filename: str, rendered: str) -> List[LintIssue]:
    """A concurrent statement in a transactional file cannot run (PostgreSQL refuses it in a transaction block):
    an error before anything runs, with the remedy."""
    try:
        parsed = parser.parse(rendered)
    except Exception:
        return []  # the syntax check reports it
    issues = []
    position = parser.Positions(rendered)
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
    return [InvalidIndex(schema, name, table, definition, bool(LEFTOVER.match(name)), partitioned, building)
            for schema, name, table, definition, partitioned, building in rows]


def invalid_lines(found: Sequence[InvalidIndex]) -> List[str]:
    return [i.describe() for i in found]
