"""Live table sizes: estimated rows and bytes of many tables in one catalog query, and in words."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import psycopg


_SIZES = """
SELECT q.schema, q.name, c.oid IS NOT NULL, c.relkind::text, c.reltuples::bigint,
       CASE WHEN c.oid IS NULL THEN NULL
            WHEN has_table_privilege(c.oid, 'SELECT') OR pg_has_role(c.relowner, 'USAGE')
            THEN pg_total_relation_size(c.oid) END,
       CASE WHEN c.oid IS NULL THEN NULL
            WHEN has_table_privilege(c.oid, 'SELECT') OR pg_has_role(c.relowner, 'USAGE')
            THEN pg_relation_size(c.oid) END,
       (SELECT n2.nspname || '.' || t.relname FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n2 ON n2.oid = t.relnamespace WHERE x.indexrelid = c.oid)
FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q(schema, name, n)
LEFT JOIN pg_namespace ns ON ns.nspname = q.schema
LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = q.name
ORDER BY q.n
"""


def live_sizes(conn: psycopg.Connection, tables: Sequence[Tuple[str, str]]) -> Dict[Tuple[str, str], tuple]:
    """(schema, name) -> (exists, kind, rows estimate or None, bytes or None, heap bytes or None, table of an
    index), in one query; sizes are None where this role may not read the table."""
    if not tables:
        return {}
    rows = conn.execute(_SIZES, ([s for s, _ in tables], [n for _, n in tables])).fetchall()
    return {(schema, name): (exists, kind, None if rows_ is None or rows_ < 0 else rows_, size, heap, owner)
            for schema, name, exists, kind, rows_, size, heap, owner in rows}


def human_rows(rows: Optional[int]) -> str:
    if rows is None:
        return "rows not estimated (never analyzed)"
    for limit, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if rows >= limit:
            return f"~{rows / limit:.1f}{unit} rows".replace(".0", "")
    return f"~{rows} rows"


def human_bytes(size: Optional[int]) -> str:
    if size is None:
        return "size unknown"
    for limit, unit in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "kB")):
        if size >= limit:
            return f"{size / limit:.0f} {unit}" if size >= 10 * limit else f"{size / limit:.1f} {unit}"
    return f"{size} bytes"
