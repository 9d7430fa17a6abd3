"""Schema drift: a fingerprint of the objects a module's migrations manage, read from the catalog in one query.

``inspect`` returns ``{"<kind> <schema>.<name>": "<definition hash>"}``; ``compare`` turns two such maps
into readable lines (``index llmemory.idx_x: missing``, ``column llmemory.documents.extra: added``).
Managed objects: in schema mode everything in the schema (but the history table and extension members);
in standalone mode only the tables, sequences, views and functions the migrations create, so other
applications' objects in ``public`` are never drift.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import psycopg

from . import embedding_catalog
from .objects import ManagedObjects, managed_objects
from .parser import parse
from .settings import Settings

# the objects of ``schemas`` (the fleet's database digests build on it: fleet_prints)
OBJECTS_QUERY = """
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY(%(schemas)s)),
rels AS (
  SELECT c.oid, c.relname, c.relkind, ns.nspname FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND (%(all)s OR c.relname = ANY(%(names)s))
    AND NOT (c.relname = ANY(%(exclude)s))
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
    AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                    WHERE d.objid = c.oid AND d.deptype IN ('a', 'i') AND t.relname = ANY(%(exclude)s)))
)
SELECT nspname, 'table', relname, relkind::text FROM rels WHERE relkind IN ('r', 'p', 'f')
UNION ALL
SELECT r.nspname, 'column', r.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') || ' ' || a.attgenerated::text
       || ' ' || a.attidentity::text
  FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
  WHERE r.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT r.nspname, 'constraint', r.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
  FROM rels r JOIN pg_constraint con ON con.conrelid = r.oid
UNION ALL
SELECT r.nspname, 'index', i.relname, pg_get_indexdef(i.oid)
  FROM rels r JOIN pg_index x ON x.indrelid = r.oid JOIN pg_class i ON i.oid = x.indexrelid
UNION ALL
SELECT nspname, 'view', relname, pg_get_viewdef(oid) FROM rels WHERE relkind IN ('v', 'm')
UNION ALL
SELECT r.nspname, 'sequence', r.relname, format_type(s.seqtypid, NULL) || ' ' || s.seqincrement || ' '
       || s.seqmin || ' ' || s.seqmax || ' ' || s.seqcycle
  FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
UNION ALL
SELECT r.nspname, 'trigger', r.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
  FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
UNION ALL
SELECT ns.nspname, CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
       p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid)
  FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid
  WHERE p.prokind IN ('f', 'p') AND (%(all)s OR p.proname = ANY(%(functions)s))
    AND p.proname NOT LIKE 'llmemory\\_db\\_%%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                    AND d.deptype = 'e')
"""
# the database's extensions (no schema): part of every schema's fingerprint
EXTENSIONS_QUERY = ("SELECT NULL, 'extension', e.extname, e.extversion FROM pg_extension e "
                    "WHERE e.extname = ANY(%(extensions)s)")
_QUERY = OBJECTS_QUERY + "UNION ALL\n" + EXTENSIONS_QUERY + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def inspect(conn: psycopg.Connection, schema: Optional[str], managed: ManagedObjects,
            extensions: Sequence[str] = (), exclude: Sequence[str] = (), *, everything: Optional[bool] = None,
            rename: Optional[Tuple[str, Optional[str]]] = None) -> Dict[str, str]:
    """Live fingerprint of the managed objects (one query). ``everything``: every object of the schema (default:
    in schema mode); ``rename`` (scratch, target): report a scratch schema's objects under the target's name."""
    namespace = schema or "public"
    rows = [row[1:] for row in inspect_rows(conn, [namespace], managed, extensions, exclude,
                                            everything=bool(schema) if everything is None else everything)]
    found = {}
    shown = namespace
    if rename:  # (scratch, target schema or None for standalone: public)
        scratch, target = rename
        shown = target or "public"
        # read with an empty search_path (pg_catalog only), every name is schema-qualified, as the live schema's is
        replacements = [(scratch, conn.execute("SELECT quote_ident(%s)", (shown,)).fetchone()[0])]
    for kind, name, definition in rows:
        definition = definition or ""
        if rename:
            for old, new in replacements:
                definition = definition.replace(old, new)
        key = f"{kind} {name}" if kind == "extension" else f"{kind} {shown}.{name}"
        found[key] = digest(definition)
    return dict(sorted(found.items()))


def _params(schemas: Sequence[str], managed: ManagedObjects, extensions: Sequence[str], exclude: Sequence[str],
            everything: bool) -> dict:
    return {"schemas": list(schemas), "all": everything,
            "names": list(managed.tables) + list(managed.sequences) + list(managed.views),
            "functions": list(managed.functions), "exclude": list(exclude), "extensions": list(extensions)}


def inspect_rows(conn: psycopg.Connection, schemas: Sequence[str], managed: ManagedObjects,
                 extensions: Sequence[str] = (), exclude: Sequence[str] = (), *, everything: bool = True) -> List[tuple]:
    """(schema, kind, name, definition) of the managed objects of ``schemas`` (extensions: schema None), one query."""
    return conn.execute(_QUERY, _params(schemas, managed, extensions, exclude, everything)).fetchall()


def inspect_stream(conn: psycopg.Connection, schemas: Sequence[str], managed: ManagedObjects,
                   extensions: Sequence[str] = (), exclude: Sequence[str] = (), *, everything: bool = True):
    """The rows of :func:`inspect_rows`, the extensions' first, then schema by schema, streamed (a fleet's hundred
    thousand rows are never in memory at once)."""
    return conn.cursor().stream(_QUERY + " ORDER BY 1 NULLS FIRST",
                                _params(schemas, managed, extensions, exclude, everything))


def engine_tables(settings: Settings) -> List[str]:
    """The history table and its companions (in-flight log, edits' audit trail), when they live in the target
    schema: the engine's, not the migrations' objects."""
    history_schema, history_name = settings.history_parts
    return [history_name, settings.inflight_parts[1], settings.edits_parts[1]] \
        if history_schema == settings.schema_name else []


def unmanaged_tables(conn: psycopg.Connection, settings: Settings) -> List[str]:
    """The tables of the target schema that are not the migrations' objects: the engine's own
    (:func:`engine_tables`) and those an EmbeddingProvider created (they come and go with their resource)."""
    return engine_tables(settings) + embedding_catalog.provider_tables(conn, settings.schema_name)


def inspect_target(conn: psycopg.Connection, settings: Settings, managed: ManagedObjects) -> Dict[str, str]:
    """Live fingerprint of what the migrations of ``settings`` manage (the engine's own tables left out)."""
    return inspect(conn, settings.schema, managed, settings.extensions, unmanaged_tables(conn, settings))


def compare(recorded: Dict[str, str], live: Dict[str, str]) -> List[str]:
    """Readable differences between the recorded fingerprint and the live one."""
    lines = []
    for key in sorted(set(recorded) | set(live)):
        if key not in live:
            lines.append(f"{key}: missing")
        elif key not in recorded:
            lines.append(f"{key}: added")
        elif recorded[key] != live[key]:
            lines.append(f"{key}: changed")
    return lines


def created_by(rendered: Iterable[str], schema: Optional[str]) -> Set[str]:
    """Names of the relations, functions and indexes that ``rendered`` SQL creates in the target schema."""
    texts = list(rendered)
    objects = managed_objects(texts, schema)
    names = set(objects.tables) | set(objects.sequences) | set(objects.views) | set(objects.functions)
    for text in texts:  # (parse() remembers the trees managed_objects just read)
        for kind, stmt, _, _ in parse(text):
            if kind == "IndexStmt" and stmt.get("idxname"):
                names.add(stmt["idxname"])
    return names


def without_expected(differences: Sequence[str], created: Set[str]) -> List[str]:
    """Drop "added" objects that files applied since the fingerprint (or pending ones) create: their early
    appearance is another applier's work (pgdbm at start-up) or an interrupted run, not a manual change."""
    kept = []
    for line in differences:
        key, _, what = line.rpartition(": ")
        kind, _, qualified = key.partition(" ")
        name = qualified.split(".", 1)[-1]  # without the schema
        owner = name.split(".", 1)[0].split("(", 1)[0]  # a column's or constraint's table; a function's name
        if what == "added" and kind != "extension" and owner in created:
            continue
        kept.append(line)
    return kept


def fingerprint(objects: Dict[str, str]) -> str:
    return digest("\n".join(f"{k}={v}" for k, v in sorted(objects.items())))
