"""Which objects do the migrations create?  Read from the rendered SQL with PostgreSQL's parser.

Used to grant runtime roles exactly the tables and sequences a module manages
(standalone mode shares ``public`` with other applications).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Optional

from .lint import parse

SERIAL_TYPES = {"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"}


@dataclass
class ManagedObjects:
    tables: List[str] = field(default_factory=list)
    sequences: List[str] = field(default_factory=list)
    views: List[str] = field(default_factory=list)
    functions: List[str] = field(default_factory=list)


def _in_target(rangevar: Optional[dict], schema: Optional[str]) -> bool:
    owner = (rangevar or {}).get("schemaname")
    return owner == schema if schema else owner in (None, "public")


def managed_objects(rendered: Iterable[str], schema: Optional[str]) -> ManagedObjects:
    """Tables, sequences, views and functions created in ``schema`` (None: standalone, i.e. public)."""
    found = ManagedObjects()
    for sql_text in rendered:
        for kind, stmt, _, _ in parse(sql_text):
            if kind == "CreateStmt" and _in_target(stmt.get("relation"), schema):
                table = stmt["relation"]["relname"]
                _add(found.tables, table)
                for element in stmt.get("tableElts") or ():
                    column = element.get("ColumnDef")
                    if not column or not column.get("typeName"):
                        continue
                    type_name = column["typeName"]["names"][-1]["String"]["sval"].lower()
                    identity = any(c.get("Constraint", {}).get("contype") == "CONSTR_IDENTITY"
                                   for c in column.get("constraints") or ())
                    if type_name in SERIAL_TYPES or identity:
                        _add(found.sequences, f"{table}_{column['colname']}_seq")
            elif kind == "CreateSeqStmt" and _in_target(stmt.get("sequence"), schema):
                _add(found.sequences, stmt["sequence"]["relname"])
            elif kind == "ViewStmt" and _in_target(stmt.get("view"), schema):
                _add(found.views, stmt["view"]["relname"])
            elif kind == "CreateTableAsStmt" and _in_target(stmt.get("into", {}).get("rel"), schema):
                target = found.views if stmt.get("objtype") == "OBJECT_MATVIEW" else found.tables
                _add(target, stmt["into"]["rel"]["relname"])
            elif kind == "CreateFunctionStmt":
                names = [n["String"]["sval"] for n in stmt["funcname"]]
                if len(names) == 1 or names[0] == (schema or "public"):
                    _add(found.functions, names[-1])
    return found


def _add(items: List[str], name: str) -> None:
    if name not in items:
        items.append(name)
