"""What the database holds for one embedding provider, read from the catalog (no change here): llmemory's registry
row, the provider's table and its shape, its vector index, the coverage, and the server's build settings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import psycopg
from psycopg import sql

from .embeddings import KNOWN_OPCLASSES, EmbeddingSettings

REGISTRY = "embedding_providers"
QUEUE = "embedding_queue"
CHUNKS = "document_chunks"
# the comment on a table an EmbeddingProvider created: the schema's drift fingerprint and edit proofs leave such
# tables out (they are the provider's, not the migrations' objects)
MARK = "llmemory-db EmbeddingProvider"
PGVECTOR_DEFAULTS = {"m": 16, "ef_construction": 64, "lists": 100}  # what an index built without WITH (...) has


@dataclass
class Registered:
    """A row of llmemory's ``embedding_providers``."""

    provider_id: str
    provider_type: str
    model_name: str
    dimension: int
    table_name: str
    is_active: bool
    is_default: bool


@dataclass
class TableShape:
    exists: bool = False
    kind: str = ""                                         # relkind: r (a table), v, m, ...
    columns: Dict[str, str] = field(default_factory=dict)  # name -> format_type
    not_null: Dict[str, bool] = field(default_factory=dict)
    primary_key: Tuple[str, ...] = ()
    cascades_from_chunks: bool = False                     # chunk_id REFERENCES document_chunks ON DELETE CASCADE

    def problems(self, s: EmbeddingSettings) -> List[str]:
        """How this table differs from llmemory's shape for ``s`` (what makes it another provider's table)."""
        if not self.exists:
            return []
        if self.kind not in ("r", "p"):
            return [f"it is not a table (relkind {self.kind})"]
        found = []
        if self.columns.get("chunk_id") != "uuid" or self.primary_key != ("chunk_id",):
            found.append("its primary key is not chunk_id uuid" if "chunk_id" in self.columns else "no chunk_id column")
        embedding = self.columns.get("embedding")
        if embedding is None:
            found.append("no embedding column")
        elif embedding != s.column_type:
            found.append(f"embedding is {embedding}, not {s.column_type}")
        return found

    def notes(self) -> List[str]:
        """Differences from llmemory's shape that do not stop llmemory (said, not refused)."""
        if not self.exists:
            return []
        notes = [] if self.cascades_from_chunks else ["chunk_id does not reference document_chunks ON DELETE CASCADE "
                                                      "(deleted documents leave their vectors behind)"]
        notes += [f"no {c} column" for c in ("model_version", "created_at") if c not in self.columns]
        return notes


@dataclass
class IndexState:
    name: str
    exists: bool = False
    valid: bool = False
    method: str = ""
    opclass: str = ""
    column: str = ""
    options: Dict[str, str] = field(default_factory=dict)
    definition: str = ""
    building: str = ""   # "pid N (phase)": another session builds it right now

    def differences(self, s: EmbeddingSettings) -> List[str]:
        """How the index differs from what ``s`` asks (empty: as asked)."""
        if not self.exists:
            return []
        found = []
        if self.method != s.index_type:
            found.append(f"{self.method} instead of {s.index_type}")
        if self.opclass != s.opclass:
            found.append(f"operator class {self.opclass} instead of {s.opclass}")
        if self.column != "embedding":
            found.append(f"on {self.column or 'an expression'} instead of embedding")
        for key, value in s.index_options.items():
            built = self.options.get(key, str(PGVECTOR_DEFAULTS.get(key, "")))
            if self.method == s.index_type and built != str(value):
                found.append(f"{key}={built} instead of {key}={value}")
        return found


@dataclass
class ProviderState:
    """One provider as the database holds it now."""

    registry: bool = False                  # llmemory's tables are there (its migrations ran)
    row: Optional[Registered] = None
    defaults: List[str] = field(default_factory=list)      # provider ids marked is_default (one, normally)
    sharing: List[str] = field(default_factory=list)       # other provider ids registered with the same table
    table: TableShape = field(default_factory=TableShape)
    index: IndexState = field(default_factory=lambda: IndexState(""))
    rebuild: IndexState = field(default_factory=lambda: IndexState(""))  # a rebuild beside it (see embedding_ops)
    chunks: int = 0
    vectors: int = 0
    queued: int = 0                         # queue entries of this provider pending or being processed
    unqueued: int = 0                       # chunks with neither a vector nor a pending entry (read for a backfill)
    vector_schema: Optional[str] = None     # where pgvector is installed (None: not in this database)
    vector_version: str = ""
    work_mem: int = 64 * 1024 ** 2          # the server's maintenance_work_mem, bytes
    workers: int = 2                        # the server's max_parallel_maintenance_workers

    @property
    def coverage(self) -> float:
        """Percent of the chunks with a vector in the provider's table (100 when there are no chunks)."""
        return 100.0 if self.chunks == 0 else round(100.0 * min(self.vectors, self.chunks) / self.chunks, 2)

    @property
    def is_default(self) -> bool:
        return self.row is not None and self.row.is_default


def rebuild_name(index: str) -> str:
    """The name of an index built beside ``index`` to replace it (then renamed to ``index``)."""
    return index[:54] + "_rebuild"


def _relation(conn: psycopg.Connection, schema: str, name: str) -> Optional[Tuple[int, str]]:
    row = conn.execute("SELECT c.oid::int, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = "
                       "c.relnamespace WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
    return (row[0], row[1]) if row else None


def _shape(conn: psycopg.Connection, s: EmbeddingSettings) -> Tuple[TableShape, Optional[int]]:
    found = _relation(conn, s.schema, s.table)
    if found is None:
        return TableShape(), None
    oid, kind = found
    shape = TableShape(exists=True, kind=kind)
    for name, typ, not_null in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute WHERE attrelid = %s "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall():
        shape.columns[name], shape.not_null[name] = typ, not_null
    row = conn.execute("SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i JOIN pg_attribute a ON "
                       "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary",
                       (oid,)).fetchone()
    shape.primary_key = tuple(row[0] or ()) if row else ()
    chunks = _relation(conn, s.schema, CHUNKS)
    shape.cascades_from_chunks = bool(chunks) and bool(conn.execute(
        "SELECT 1 FROM pg_constraint WHERE conrelid = %s AND contype = 'f' AND confrelid = %s AND confdeltype = 'c'",
        (oid, chunks[0])).fetchone())
    return shape, oid


_INDEX = """
SELECT i.indisvalid, am.amname, coalesce(opc.opcname, ''), coalesce(a.attname, ''), coalesce(c.reloptions, '{}'),
       pg_get_indexdef(c.oid),
       coalesce((SELECT 'pid ' || p.pid || ' (' || p.phase || ')' FROM pg_stat_progress_create_index p
                 WHERE p.index_relid = c.oid AND p.pid <> pg_backend_pid() LIMIT 1), '')
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[0]
LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = %s AND c.relname = %s
"""


def _index(conn: psycopg.Connection, table_oid: Optional[int], name: str) -> IndexState:
    state = IndexState(name)
    row = conn.execute(_INDEX, (table_oid, name)).fetchone() if table_oid else None
    if row:
        valid, method, opclass, column, options, definition, building = row
        state = IndexState(name, True, valid, method, opclass, column,
                           dict(o.split("=", 1) for o in options if "=" in o), definition, building)
    return state


def read_state(conn: psycopg.Connection, s: EmbeddingSettings, count: bool = True) -> ProviderState:
    """The provider as the database holds it; ``count``: also the chunks, vectors and queued chunks (exact
    counts: a scan of each table)."""
    state = ProviderState()
    row = conn.execute("SELECT n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = "
                       "e.extnamespace WHERE e.extname = 'vector'").fetchone()
    if row:
        state.vector_schema, state.vector_version = row
    work_mem, workers = conn.execute("SELECT (SELECT setting::bigint FROM pg_settings WHERE name = "
                                     "'maintenance_work_mem'), current_setting('max_parallel_maintenance_workers')"
                                     ).fetchone()
    state.work_mem, state.workers = int(work_mem) * 1024, int(workers)
    state.registry = _relation(conn, s.schema, REGISTRY) is not None
    state.table, oid = _shape(conn, s)
    state.index = _index(conn, oid, s.index)
    state.rebuild = _index(conn, oid, rebuild_name(s.index))
    if not state.registry:
        return state
    registry = sql.Identifier(s.schema, REGISTRY)
    found = conn.execute(sql.SQL("SELECT provider_id, provider_type, model_name, dimension, table_name, "
                                 "coalesce(is_active, false), coalesce(is_default, false) FROM {} WHERE provider_id "
                                 "= %s").format(registry), (s.provider_id,)).fetchone()
    state.row = Registered(*found) if found else None
    state.defaults = [r[0] for r in conn.execute(sql.SQL("SELECT provider_id FROM {} WHERE is_default ORDER BY 1")
                                                 .format(registry)).fetchall()]
    state.sharing = [r[0] for r in conn.execute(sql.SQL("SELECT provider_id FROM {} WHERE table_name = %s AND "
                                                        "provider_id <> %s ORDER BY 1").format(registry),
                                                (s.table, s.provider_id)).fetchall()]
    if count:
        counts(conn, s, state)
    return state


def counts(conn: psycopg.Connection, s: EmbeddingSettings, state: ProviderState) -> ProviderState:
    """Chunks, vectors of this provider (for existing chunks) and chunks waiting in the queue for it."""
    chunks = sql.Identifier(s.schema, CHUNKS)
    if _relation(conn, s.schema, CHUNKS) is None:
        return state
    state.chunks = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(chunks)).fetchone()[0]
    if state.table.exists and not state.table.problems(s):
        query = sql.SQL("SELECT count(*) FROM {}") if state.table.cascades_from_chunks else \
            sql.SQL("SELECT count(*) FROM {} e WHERE EXISTS (SELECT 1 FROM {} c WHERE c.chunk_id = e.chunk_id)")
        state.vectors = conn.execute(query.format(s.qualified(), chunks)).fetchone()[0]
    if state.registry and _relation(conn, s.schema, QUEUE) is not None:
        state.queued = conn.execute(sql.SQL(
            "SELECT count(*) FROM {} q WHERE q.provider_id = %s AND q.status IN ('pending', 'processing')")
            .format(sql.Identifier(s.schema, QUEUE)), (s.provider_id,)).fetchone()[0]
        if s.backfill and state.table.exists and not state.table.problems(s):
            state.unqueued = conn.execute(sql.SQL(
                "SELECT count(*) FROM {chunks} c WHERE NOT EXISTS (SELECT 1 FROM {table} e WHERE e.chunk_id = "
                "c.chunk_id) AND NOT EXISTS (SELECT 1 FROM {queue} q WHERE q.chunk_id = c.chunk_id AND q.provider_id "
                "= %s AND q.status IN ('pending', 'processing'))").format(
                chunks=chunks, table=s.qualified(), queue=sql.Identifier(s.schema, QUEUE)),
                (s.provider_id,)).fetchone()[0]
    return state


def provider_tables(conn: psycopg.Connection, schema: str) -> List[str]:
    """The tables of ``schema`` an EmbeddingProvider created (marked with :data:`MARK`)."""
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_description d ON "
        "d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0 WHERE n.nspname = %s AND "
        "c.relkind = 'r' AND d.description LIKE %s", (schema, MARK + " %")).fetchall()]


def opclasses(conn: psycopg.Connection, index_type: str, vector_type: str) -> Optional[List[str]]:
    """The operator classes the server has for ``index_type`` on ``vector_type`` columns (None: pgvector is not
    installed, so the server cannot tell; the known list of pgvector 0.8 stands in)."""
    rows = conn.execute("SELECT opc.opcname FROM pg_opclass opc JOIN pg_am am ON am.oid = opc.opcmethod "
                        "JOIN pg_type t ON t.oid = opc.opcintype WHERE am.amname = %s AND t.typname = %s ORDER BY 1",
                        (index_type, vector_type)).fetchall()
    if not rows and conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
        return None
    return [r[0] for r in rows]


def known_opclasses(index_type: str, vector_type: str) -> List[str]:
    return list(KNOWN_OPCLASSES.get((index_type, vector_type), ()))


def drift_of(s: EmbeddingSettings, state: ProviderState) -> List[str]:
    """How the database differs from the provider as deployed, in words (each repaired by the next update, or,
    for a dimension or table of another shape, refused by it with the remedy)."""
    found: List[str] = []
    row, where = state.row, f"{s.schema}.{REGISTRY}"
    if not state.registry:
        return [f"{where} is gone (llmemory's tables are not in schema {s.schema})"]
    if row is None:
        found.append(f"{s.provider_id} is not registered in {where} (deleted by hand?)")
    else:
        for name, expected in (("provider_type", s.provider_type), ("model_name", s.model_name),
                               ("dimension", s.dimension), ("table_name", s.table), ("is_active", True)):
            if getattr(row, name) != expected:
                found.append(f"registry row of {s.provider_id} changed by hand: {name} {getattr(row, name)!r} "
                             f"(deployed: {expected!r})")
        if s.default and not row.is_default:
            found.append(f"{s.provider_id} is not the default any more (default now: "
                         f"{', '.join(state.defaults) or 'none'})")
    if s.backfill and state.unqueued:
        found.append(f"{state.unqueued:,} chunk(s) without a vector in {s.schema}.{s.table} are not queued for "
                     f"{s.provider_id} (backfill queues them)")
    if len(state.defaults) > 1:
        found.append(f"{where} marks {len(state.defaults)} defaults ({', '.join(state.defaults)}): llmemory picks "
                     "one of them at random")
    if not state.table.exists:
        found.append(f"table {s.schema}.{s.table} is missing")
    else:
        embedding = state.table.columns.get("embedding")
        if embedding != s.column_type:
            found.append(f"dimension differs: {s.schema}.{s.table}.embedding is {embedding or 'missing'}, the "
                         f"provider's vectors are {s.column_type}")
        index = state.index
        if not index.exists:
            found.append(f"index {s.schema}.{index.name} is missing (searches scan the whole table)")
        elif index.building:
            pass  # a build in progress is not drift
        elif not index.valid:
            found.append(f"index {s.schema}.{index.name} is INVALID (never used by the planner)")
        elif index.differences(s):
            found.append(f"index {s.schema}.{index.name} differs: {'; '.join(index.differences(s))}")
    return found


def lock_holders(conn: psycopg.Connection, relations: List[sql.Composable]) -> str:
    """The sessions holding a lock on ``relations`` (for a message after lock_timeout ran out), '' when none."""
    names = [r.as_string(conn) for r in relations]
    rows = conn.execute(
        "SELECT DISTINCT l.pid, a.usename, a.application_name, a.state, l.mode, "
        "left(regexp_replace(a.query, '\\s+', ' ', 'g'), 120) FROM pg_locks l JOIN pg_stat_activity a ON "
        "a.pid = l.pid WHERE l.granted AND l.pid <> pg_backend_pid() AND l.relation = ANY("
        "SELECT to_regclass(x)::oid FROM unnest(%s::text[]) x) ORDER BY 1 LIMIT 3", (names,)).fetchall()
    return "; ".join(f"pid {pid} (user {user}, application {app or '-'}, {state}, holds {mode}: {query!r})"
                     for pid, user, app, state, mode, query in rows)
