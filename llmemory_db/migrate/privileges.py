"""Privileges on the engine's own tables that nobody meant to give.

Default privileges meant for the migrations' tables (runtime roles' CRUD) also cover the history table, its id
sequence and the in-flight table when the engine creates them in that schema: a runtime role could then rewrite the
history. Every apply revokes them; a refresh reports them as drift.
"""
from __future__ import annotations

from typing import List, Tuple

import psycopg
from psycopg import sql

from .settings import Settings

# The engine's relations (history table, its sequences, the in-flight table) and the privileges on them that match
# a default privilege of their schema and owner: granted by ALTER DEFAULT PRIVILEGES, not on purpose.
_LEAKS = """
WITH engine AS (
  SELECT c.oid, c.relkind, c.relowner, c.relnamespace, c.relacl, n.nspname || '.' || c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid IN (to_regclass(%(history)s), to_regclass(%(inflight)s), to_regclass(%(edits)s))
     OR c.oid IN (SELECT d.objid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.refobjid IN (to_regclass(%(history)s), to_regclass(%(inflight)s), to_regclass(%(edits)s)) AND d.deptype IN ('a', 'i'))
), granted AS (
  SELECT e.*, a.grantee, a.privilege_type FROM engine e, aclexplode(e.relacl) a WHERE a.grantee <> e.relowner
)
SELECT CASE g.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, g.name,
       CASE g.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END,
       array_agg(g.privilege_type ORDER BY g.privilege_type)
FROM granted g
WHERE NOT (g.oid = to_regclass(%(history)s) AND g.privilege_type = 'SELECT')
  AND EXISTS (SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a
              WHERE d.defaclrole = g.relowner AND d.defaclnamespace IN (0, g.relnamespace)
                AND d.defaclobjtype = CASE g.relkind WHEN 'S' THEN 'S' ELSE 'r' END
                AND a.grantee = g.grantee AND a.privilege_type = g.privilege_type)
GROUP BY 1, 2, 3 ORDER BY 2, 3
"""


def leaks(conn: psycopg.Connection, settings: Settings) -> List[Tuple[str, str, str, List[str]]]:
    """What the schema's default privileges gave other roles on the engine's own tables: (TABLE or SEQUENCE,
    qualified name, grantee, privileges). SELECT on the history table is left alone (runtime roles are granted
    it explicitly)."""
    rows = conn.execute(_LEAKS, {"history": settings.history_ident.as_string(conn),
                                 "inflight": settings.inflight_ident.as_string(conn),
                                 "edits": settings.edits_ident.as_string(conn)}).fetchall()
    return [(kind, name, grantee, list(privileges)) for kind, name, grantee, privileges in rows]


def strip(conn: psycopg.Connection, settings: Settings) -> List[str]:
    """Revoke :func:`leaks`; returns what was revoked, in words."""
    done = []
    for kind, name, grantee, privileges in leaks(conn, settings):
        schema, table = name.split(".", 1)
        conn.execute(sql.SQL("REVOKE {} ON {} {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in privileges if p.replace(" ", "").isalpha()),
            sql.SQL(kind), sql.Identifier(schema, table),
            sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)))
        done.append(f"revoked {', '.join(privileges)} on {kind.lower()} {name} from {grantee} (given by default "
                    "privileges)")
    return done


def drift(conn: psycopg.Connection, settings: Settings) -> List[str]:
    """:func:`leaks` in the drift check's words; the next apply revokes them."""
    return [f"privilege {', '.join(privileges)} on {kind.lower()} {name} to {grantee}: added"
            for kind, name, grantee, privileges in leaks(conn, settings)]
