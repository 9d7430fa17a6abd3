"""PostgreSQL's own parser (pglast) over migration text: statements with their lines, parse trees, and what a
statement changes. Every module that reads SQL goes through here, so a text is parsed once."""
from __future__ import annotations

import bisect
import functools
import json
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from pglast import parser as pg_parser

ParseError = pg_parser.ParseError


@dataclass(frozen=True)
class Statement:
    text: str
    line: int  # 1-based line of the statement's first character within the file


class Positions:
    """(line, column) of character offsets, in O(log n) each (a 10 MB file has 100,000 statements)."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __call__(self, index: int) -> Tuple[int, int]:
        line = bisect.bisect_right(self.starts, index)
        return line, index - self.starts[line - 1] + 1


def position(text: str, index: int) -> Tuple[int, int]:
    """(line, column), 1-based, of the character ``index`` of ``text``."""
    return Positions(text)(index)


def split(sql: str) -> List[Statement]:
    """Split SQL into statements with their line numbers (raises pglast's ParseError on bad syntax)."""
    position = Positions(sql)
    return [Statement(sql[piece], position(piece.start)[0])
            for piece in pg_parser.split(sql, with_parser=True, only_slices=True)]


def parse(sql: str) -> List[Tuple[str, dict, int, int]]:
    """(node type, node, start, length) of each statement; offsets in characters (pglast's JSON tree is ~10x
    cheaper than its Python AST). Raises pglast's ParseError on bad syntax. The same text is parsed once: lint,
    the managed objects, the drift scope and the risk analysis all read it (the trees are not to be changed).
    Files over 1 MB are parsed each time, so that memory stays bounded."""
    return list(_parse_cached(sql) if len(sql) <= CACHED_TEXT else _parse(sql))


CACHED_TEXT = 1 << 20


@functools.lru_cache(maxsize=64)
def _parse_cached(sql: str) -> Tuple[Tuple[str, dict, int, int], ...]:
    return _parse(sql)


def _parse(sql: str) -> Tuple[Tuple[str, dict, int, int], ...]:
    tree = json.loads(pg_parser.parse_sql_json(sql))
    encoded = sql.encode("utf-8")
    ascii_only = len(encoded) == len(sql)
    done = [0, 0]  # (byte, character) offsets converted so far: statements come in order, decode only the gap

    def chars(byte_offset: int) -> int:
        if ascii_only:
            return byte_offset
        if byte_offset < done[0]:
            return len(encoded[:byte_offset].decode("utf-8", errors="ignore"))
        done[1] += len(encoded[done[0]:byte_offset].decode("utf-8", errors="ignore"))
        done[0] = byte_offset
        return done[1]

    out = []
    for raw in tree.get("stmts", []):
        (kind, node), = raw["stmt"].items()
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0) or (len(encoded) - start)
        begin = chars(start)
        out.append((kind, node, begin, chars(start + length) - begin))
    return tuple(out)


def changed_relations(kind: str, stmt: dict) -> List[Tuple[Optional[str], str]]:
    """(schema, name) of the relations a statement changes: its ``relation``, TRUNCATE's relations, the objects
    DROP names (DROP INDEX: the index)."""
    if kind == "DropStmt":
        names = []
        for obj in stmt.get("objects") or ():
            parts = [item.get("String", {}).get("sval") for item in obj.get("List", {}).get("items", [])]
            if parts and all(parts):
                names.append((parts[-2] if len(parts) > 1 else None, parts[-1]))
        return names
    relations = [node.get("RangeVar", node) for node in stmt.get("relations") or ()] if kind == "TruncateStmt" \
        else [stmt.get("relation") or {}]
    return [(r.get("schemaname"), r["relname"]) for r in relations if r.get("relname")]
