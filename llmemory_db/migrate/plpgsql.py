"""The SQL statements inside PL/pgSQL: ``DO`` blocks and ``CREATE FUNCTION/PROCEDURE … LANGUAGE plpgsql`` bodies.

A migration often wraps DDL in a ``DO`` block (to make it idempotent with an ``EXCEPTION`` clause), and a
top-level parse sees one opaque string there. pglast parses PL/pgSQL too (``pglast.parse_plpgsql``, PostgreSQL's
own PL/pgSQL grammar): this module returns each SQL statement such a body contains, with

- its line in the FILE (the line where the body starts plus the statement's line inside the body),
- a context text for messages: "inside the DO block at line 12", "inside function lm.f() at line 30 (runs when
  the function is called)",
- the ``EXCEPTION`` conditions of the blocks around it (a statement whose error is caught does not fail the file).

Static SQL and ``EXECUTE 'a constant string'`` are returned as statements (the constant is the SQL). An
``EXECUTE`` of a string built at run time (``format(...)``, a variable, ...) cannot be analysed: it is returned
as an item with ``dynamic=True``, never dropped. A body pglast cannot parse is returned the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import pglast
from pglast import parser as pg_parser

from . import parser

# PL/pgSQL statement nodes and the key of the SQL they run: static SQL, and the string an EXECUTE runs
_STATIC = (("PLpgSQL_stmt_execsql", "sqlstmt"), ("PLpgSQL_stmt_call", "expr"), ("PLpgSQL_stmt_perform", "expr"),
           ("PLpgSQL_stmt_fors", "query"), ("PLpgSQL_stmt_return_query", "query"), ("PLpgSQL_stmt_open", "query"))
_DYNAMIC = (("PLpgSQL_stmt_dynexecute", "query"), ("PLpgSQL_stmt_dynfors", "query"),
            ("PLpgSQL_stmt_return_query", "dynquery"), ("PLpgSQL_stmt_open", "dynquery"))


@dataclass(frozen=True)
class Routine:
    """A DO block or a PL/pgSQL function/procedure of a file."""

    kind: str                     # "do", "function" or "procedure"
    line: int                     # line of the DO / CREATE statement in the file
    name: Optional[Tuple[Optional[str], str]] = None  # (schema as written or None, name) of a function/procedure
    display: str = ""             # "lm.f()" (the target schema filled in when unqualified)

    @property
    def runs_at_apply(self) -> bool:
        """A DO block runs when the file is applied; a function only when something calls it."""
        return self.kind == "do"

    def context(self, called_at: str = "") -> str:
        if self.kind == "do":
            return f"inside the DO block at line {self.line}"
        when = f"runs when the {self.kind} is called" + (f": {called_at} calls it" if called_at else "")
        return f"inside {self.kind} {self.display} at line {self.line} ({when})"


@dataclass(frozen=True)
class Embedded:
    """One SQL statement inside a routine (or an EXECUTE / body that cannot be analysed: ``dynamic``)."""

    routine: Routine
    line: int                          # line in the file
    text: str                          # the SQL (an EXECUTE constant: its value); the expression when dynamic
    dynamic: bool = False              # not analysable: a string built at run time, or a body that does not parse
    reason: str = ""                   # why not analysable
    constant: bool = False             # the SQL came from EXECUTE 'constant' (its lines are not the file's)
    handlers: Tuple[str, ...] = ()     # EXCEPTION conditions around it, innermost first ("others", "23505", ...)
    parsed: Optional[Tuple[Tuple[str, dict], ...]] = field(default=None, compare=False, repr=False)

    @property
    def context(self) -> str:
        return self.routine.context()


def routines_of(sql: str, parsed: Optional[Sequence[Tuple[str, dict, int, int]]] = None
                ) -> Iterator[Tuple[Routine, str, int]]:
    """(routine, the text pglast's PL/pgSQL parser takes, line of the body's first character) of each DO block
    and PL/pgSQL function/procedure of ``sql`` (``parsed``: its ``parser.parse``, reused when given)."""
    statements = parser.parse(sql) if parsed is None else parsed
    positions = parser.Positions(sql)
    encoded = sql.encode("utf-8")
    ascii_only = len(encoded) == len(sql)

    def char_offset(byte_offset: int) -> int:
        return byte_offset if ascii_only else len(encoded[:byte_offset].decode("utf-8", errors="ignore"))

    for kind, stmt, start, length in statements:
        if kind not in ("DoStmt", "CreateFunctionStmt"):
            continue
        options = stmt.get("args") if kind == "DoStmt" else stmt.get("options")
        options = {o["DefElem"]["defname"]: o["DefElem"] for o in options or () if "DefElem" in o}
        language = options.get("language", {}).get("arg", {}).get("String", {}).get("sval", "plpgsql")
        body_elem = options.get("as")
        if language.lower() != "plpgsql" or body_elem is None:
            continue
        arg = body_elem.get("arg", {})
        if "List" in arg:  # CREATE FUNCTION ... AS 'body' (a C function would have two items)
            items = arg["List"].get("items", [])
            if len(items) != 1:
                continue
            arg = items[0]
        body = arg.get("String", {}).get("sval")
        if body is None:
            continue
        text = sql[start:start + length]
        line = positions(start + len(text) - len(text.lstrip()))[0]
        body_line = _body_line(sql, positions, char_offset(body_elem.get("arg_location", -1)), line)
        if kind == "DoStmt":
            routine = Routine("do", line)
            tag = "$llmemory_db_do$"
            while tag in body:
                tag = tag[:-1] + "_$"
            source = f"CREATE FUNCTION pg_temp.llmemory_db_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}"
        else:
            parts = [p.get("String", {}).get("sval", "") for p in stmt.get("funcname") or ()]
            name = (parts[-2] if len(parts) > 1 else None, parts[-1])
            routine = Routine("procedure" if stmt.get("is_procedure") else "function", line, name, "")
            source = text
        yield routine, source, body_line


def _body_line(sql: str, positions: "parser._Positions", location: int, fallback: int) -> int:
    """Line of the body's first character: the string constant starts at ``location`` ($tag$, ' or E')."""
    if location < 0 or location >= len(sql):
        return fallback
    opening = 1
    if sql[location] == "$":
        opening = sql.index("$", location + 1) - location + 1
    elif sql[location] in "eE":
        opening = 2
    return positions(min(location + opening, len(sql) - 1))[0]


def embedded(sql: str, parsed: Optional[Sequence[Tuple[str, dict, int, int]]] = None,
             schema: Optional[str] = None) -> List[Embedded]:
    """Every SQL statement inside the DO blocks and PL/pgSQL routines of ``sql`` (rendered), in file order.
    ``schema``: the schema an unqualified function name is created in (for the context text)."""
    out: List[Embedded] = []
    for routine, source, body_line in routines_of(sql, parsed):
        if routine.name is not None:
            routine = Routine(routine.kind, routine.line, routine.name,
                              f"{routine.name[0] or schema or 'public'}.{routine.name[1]}()")
        try:
            tree = pglast.parse_plpgsql(source)
        except pg_parser.ParseError as exc:
            message = exc.args[0] if exc.args else str(exc)
            out.append(Embedded(routine, routine.line, "", dynamic=True,
                                reason=f"its PL/pgSQL body does not parse here ({message}): its statements are "
                                       "not analysed"))
            continue
        for lineno, query, dynamic, handlers in _walk(tree, ()):
            line = body_line + max(lineno, 1) - 1
            out.append(_item(routine, line, query, dynamic, handlers))
    return out


def _item(routine: Routine, line: int, query: str, dynamic: bool, handlers: Tuple[str, ...]) -> Embedded:
    constant = False
    if dynamic:
        value = constant_string(query)
        if value is None:
            return Embedded(routine, line, query, dynamic=True, handlers=handlers,
                            reason="EXECUTE of a string built at run time cannot be analysed")
        query, constant = value, True
    try:
        parsed = tuple((kind, stmt) for kind, stmt, _, _ in parser.parse(query))
    except pg_parser.ParseError as exc:
        message = exc.args[0] if exc.args else str(exc)
        return Embedded(routine, line, query, dynamic=True, handlers=handlers, constant=constant,
                        reason=f"the statement does not parse on its own ({message})")
    return Embedded(routine, line, query, constant=constant, handlers=handlers, parsed=parsed)


def constant_string(expression: str) -> Optional[str]:
    """The value of an EXECUTE expression that is a string constant ('...', $q$...$q$, E'...', a '||' of them,
    a cast of one), else None."""
    try:
        tree = json.loads(pg_parser.parse_sql_json(f"SELECT {expression}"))
        [stmt] = tree["stmts"]
        [target] = stmt["stmt"]["SelectStmt"]["targetList"]
        node = target["ResTarget"]["val"]
    except (pg_parser.ParseError, KeyError, ValueError):
        return None
    return _constant(node)


def _constant(node: dict) -> Optional[str]:
    if "A_Const" in node:
        value = node["A_Const"].get("sval")
        return value.get("sval", "") if isinstance(value, dict) else None
    if "TypeCast" in node:
        return _constant(node["TypeCast"].get("arg", {}))
    if "A_Expr" in node:
        expr = node["A_Expr"]
        names = [n.get("String", {}).get("sval") for n in expr.get("name") or ()]
        if expr.get("kind") == "AEXPR_OP" and names == ["||"]:
            left, right = _constant(expr.get("lexpr", {})), _constant(expr.get("rexpr", {}))
            if left is not None and right is not None:
                return left + right
    return None


def _walk(node, handlers: Tuple[str, ...], lineno: int = 0) -> Iterator[Tuple[int, str, bool, Tuple[str, ...]]]:
    """(line in the body, SQL text, dynamic, EXCEPTION conditions around it) of each statement, in order."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, handlers, lineno)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if isinstance(value, list):
            yield from _walk(value, handlers, lineno)
            continue
        if not isinstance(value, dict) or key == "PLpgSQL_expr":  # expressions: read by their statement
            continue
        here = value.get("lineno", lineno) if key.startswith("PLpgSQL_stmt") else lineno
        if key == "PLpgSQL_stmt_block":
            exceptions = (value.get("exceptions") or {}).get("PLpgSQL_exception_block", {}).get("exc_list", [])
            caught = tuple(cond.get("PLpgSQL_condition", {}).get("condname", "")
                           for exc in exceptions for cond in exc.get("PLpgSQL_exception", {}).get("conditions", []))
            yield from _walk(value.get("body", []), caught + handlers, here)
            for exc in exceptions:  # a handler's own statements are not covered by its block
                yield from _walk(exc.get("PLpgSQL_exception", {}).get("action", []), handlers, here)
            continue
        for kinds, dynamic in ((_STATIC, False), (_DYNAMIC, True)):
            for stmt_kind, expr_key in kinds:
                if key == stmt_kind and isinstance(value.get(expr_key), dict):
                    query = value[expr_key].get("PLpgSQL_expr", {}).get("query")
                    if query is not None:
                        yield here, query, dynamic, handlers
        yield from _walk(value, handlers, here)  # nested statement lists: IF / LOOP / CASE bodies, ...


def catches(handlers: Sequence[str], sqlstate: str) -> Optional[str]:
    """The EXCEPTION condition among ``handlers`` that catches an error of ``sqlstate`` (``others``, its exact
    name or code, or its class), else None."""
    from psycopg import errors as pg_errors

    for condition in handlers:
        if condition == "others":
            return condition
        code = condition.upper() if len(condition) == 5 and condition[:2].isalnum() and \
            any(c.isdigit() for c in condition) else None
        if code is None:
            try:
                code = pg_errors.lookup(condition.upper()).sqlstate
            except KeyError:
                continue
        if code == sqlstate or (code.endswith("000") and code[:2] == sqlstate[:2]):
            return condition
    return None
