"""Which objects do the migrations create?  Read from the rendered SQL with PostgreSQL's parser.

Used to grant runtime roles exactly the tables and sequences a module manages
(standalone mode shares ``public`` with other applications).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

from pglast import parser as pg_parser

SERIAL_TYPES = {"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"}


@dataclass
class ManagedObjects:
    tables: List[str] = field(default_factory=list)
    sequences: List[str] = field(default_factory=list)
    views: List[str] = field(default_factory=list)
    functions: List[str] = field(default_factory=list)


def _in_target(rangevar, schema: Optional[str]) -> bool:
    owner = getattr(rangevar, "schemaname", None)
    return owner == schema if schema else owner in (None, "public")


def managed_objects(rendered: Iterable[str], schema: Optional[str]) -> ManagedObjects:
    """Tables and sequences created in ``schema`` (None: standalone, i.e. public) by ``rendered`` SQL texts."""
    found = ManagedObjects()
    for sql_text in rendered:
        for raw in pg_parser.parse_sql(sql_text):
            stmt = raw.stmt
            kind = type(stmt).__name__
            if kind == "CreateStmt" and _in_target(stmt.relation, schema):
                table = stmt.relation.relname
                _add(found.tables, table)
                for element in stmt.tableElts or ():
                    if type(element).__name__ != "ColumnDef" or element.typeName is None:
                        continue
                    type_name = element.typeName.names[-1].sval.lower()
                    identity = any(getattr(c, "contype", None) is not None and c.contype.name == "CONSTR_IDENTITY"
                                   for c in (element.constraints or ()))
                    if type_name in SERIAL_TYPES or identity:
                        _add(found.sequences, f"{table}_{element.colname}_seq")
            elif kind == "CreateSeqStmt" and _in_target(stmt.sequence, schema):
                _add(found.sequences, stmt.sequence.relname)
            elif kind == "ViewStmt" and _in_target(stmt.view, schema):
                _add(found.views, stmt.view.relname)
            elif kind == "CreateTableAsStmt" and _in_target(stmt.into.rel, schema):
                _add(found.views if stmt.objtype.name == "OBJECT_MATVIEW" else found.tables, stmt.into.rel.relname)
            elif kind == "CreateFunctionStmt":
                names = [n.sval for n in stmt.funcname]
                if (names[0] == schema if len(names) > 1 else True) or (not schema and names[0] == "public"):
                    _add(found.functions, names[-1])
    return found


def _add(items: List[str], name: str) -> None:
    if name not in items:
        items.append(name)
