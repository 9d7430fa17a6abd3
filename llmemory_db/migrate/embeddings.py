"""An embedding provider of llmemory, as the engine sees it: its settings, its names and its SQL (no database here).

llmemory (0.5.0) keeps one table of vectors per embedding provider and finds them through its registry,
``embedding_providers`` (``provider_id``, ``provider_type`` openai|local, ``model_name``, ``dimension``,
``table_name``, ``is_active``, ``is_default``); its searches read the table of the default provider, and
``process_pending_embeddings()`` embeds what ``embedding_queue`` holds for any registered provider. Its migrations
create one provider (``embeddings_openai_3_small``); :class:`EmbeddingSettings` describes any other: the table in
llmemory's shape (``chunk_id`` UUID primary key referencing ``document_chunks`` ON DELETE CASCADE, ``embedding``,
``model_version``, ``created_at``) under the name llmemory derives (:func:`llmemory_table_name`) or a given one,
and its vector index, named as llmemory names it (``idx_<table>_embedding``). The operations on a live database
are in :mod:`.embedding_ops`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from psycopg import sql

from .embedding_errors import EmbeddingSettingError
from .identifiers import IDENTIFIER
from .spelling import STYLES, setting

PROVIDER_TYPES = ("openai", "local")               # llmemory's registry CHECK constraint
VECTOR_TYPES = ("vector", "halfvec")
INDEX_TYPES = ("hnsw", "ivfflat")
COLUMN_LIMIT = 16_000                               # pgvector: the most dimensions a vector/halfvec column holds
INDEX_LIMITS = {("hnsw", "vector"): 2_000, ("hnsw", "halfvec"): 4_000,      # pgvector 0.8: the most dimensions
                ("ivfflat", "vector"): 2_000, ("ivfflat", "halfvec"): 4_000}  # an index of each kind takes
# pgvector 0.8's operator classes by index type and column type (checked again in pg_opclass when connected)
KNOWN_OPCLASSES = {
    ("hnsw", "vector"): ("vector_cosine_ops", "vector_ip_ops", "vector_l1_ops", "vector_l2_ops"),
    ("hnsw", "halfvec"): ("halfvec_cosine_ops", "halfvec_ip_ops", "halfvec_l1_ops", "halfvec_l2_ops"),
    ("ivfflat", "vector"): ("vector_cosine_ops", "vector_ip_ops", "vector_l2_ops"),
    ("ivfflat", "halfvec"): ("halfvec_cosine_ops", "halfvec_ip_ops", "halfvec_l2_ops"),
}
PROVIDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,199}$")
MEMORY = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)?\s*$")
_UNITS = {"kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4, None: 1024}  # no unit: kB (PostgreSQL's)
AUTO_MEMORY_CAP = 1024 ** 3   # maintenance_work_mem "auto" raises the server's value to the estimate, at most 1 GB


def _meta(help: str, **extra: Any) -> Dict[str, Any]:
    return {"help": help, **extra}


@dataclass(frozen=True)
class EmbeddingSettings:
    """One embedding provider of one llmemory schema. Required: ``schema``, ``provider_id``, ``provider_type``,
    ``model_name``, ``dimension``; everything else has a default."""

    schema: str = field(metadata=_meta("the llmemory schema the provider belongs to (public in standalone mode)"))
    provider_id: str = field(metadata=_meta(
        "the provider's id in llmemory's registry (embedding_providers.provider_id), e.g. local-minilm"))
    provider_type: str = field(metadata=_meta("the provider type: openai or local (the two llmemory knows)"))
    model_name: str = field(metadata=_meta("the model's name, as llmemory's configuration names it"))
    dimension: int = field(metadata=_meta("the number of dimensions of the model's vectors"))
    vector_type: str = field(default="vector", metadata=_meta(
        "the column type: vector (4 bytes a dimension; indexes up to 2,000 dimensions) or halfvec (2 bytes; up to 4,000)"))
    table_name: Optional[str] = field(default=None, metadata=_meta(
        "the provider's table (default: the name llmemory derives: chunk_embeddings_<model>_<dimension> for a "
        "local model, chunk_embeddings_openai for openai)"))
    index_type: str = field(default="hnsw", metadata=_meta("the vector index: hnsw or ivfflat"))
    operator_class: Optional[str] = field(default=None, metadata=_meta(
        "the index's operator class (default: <vector_type>_cosine_ops: llmemory searches by cosine distance)"))
    m: int = field(default=16, metadata=_meta("HNSW links per node (2 to 100; llmemory's own index: 16)"))
    ef_construction: int = field(default=200, metadata=_meta(
        "HNSW candidate list size while building (4 to 1,000, at least 2 x m; llmemory's own index: 200)"))
    lists: int = field(default=100, metadata=_meta("IVFFlat lists (1 to 32,768)"))
    default: bool = field(default=False, metadata=_meta(
        "make this llmemory's default provider (its searches read the default's table); refused while coverage "
        "is below min_coverage"))
    min_coverage: float = field(default=100.0, metadata=_meta(
        "percent of the chunks that must have a vector in this provider's table before it may become the default"))
    backfill: bool = field(default=False, metadata=_meta(
        "queue every chunk without a vector in this provider's table into embedding_queue (the application's "
        "process_pending_embeddings() embeds them; this project never calls a model)"))
    backfill_batch_size: int = field(default=1000, metadata=_meta(
        "chunks queued per backfill transaction (short transactions, short locks)"))
    maintenance_work_mem: Optional[str] = field(default=None, metadata=_meta(
        "memory for the index build, its session only (e.g. 2GB); default: the server's setting, raised to the "
        "estimated graph size (at most 1GB) when it is smaller"))
    max_parallel_maintenance_workers: Optional[int] = field(default=None, metadata=_meta(
        "parallel workers for the index build, its session only (default: the server's setting)"))
    lock_timeout: float = field(default=2.0, metadata=_meta(
        "seconds each short transaction (table and registry row, default switch, backfill batch) may wait for a "
        "lock before it gives up and is retried; the index build itself waits without a limit (it never blocks "
        "the application's reads and writes)"))
    runtime_roles: Tuple[str, ...] = field(default=(), metadata=_meta(
        "roles that get SELECT, INSERT, UPDATE, DELETE on the provider's table (in a schema of MigratedSchema, its "
        "default privileges give them already)"))
    drop_on_destroy: bool = field(default=False, metadata=_meta(
        "removing the provider drops its table and forgets it entirely (default: unregister it, keep the table)"))
    spelling: str = field(default="python", metadata=_meta("how messages name arguments", internal=True))

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtime_roles", tuple(self.runtime_roles or ()))
        if self.table_name == "":
            object.__setattr__(self, "table_name", None)
        if self.operator_class == "":
            object.__setattr__(self, "operator_class", None)
        problems = self.problems()
        if problems:
            raise problems[0]

    # ------------------------------------------------------------------ validation
    def problems(self) -> List[EmbeddingSettingError]:
        """Every invalid argument, each an error naming it (as the caller spells it)."""
        found: List[EmbeddingSettingError] = []

        def bad(name: str, text: str, remedy: str) -> None:
            found.append(EmbeddingSettingError(f"Invalid value {getattr(self, name)!r} for {setting(name)}: {text}",
                                               setting=name, remedy=remedy))

        def whole(name: str, low: int, high: int, remedy: str) -> bool:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                bad(name, f"a whole number from {low:,} to {high:,} is required", remedy)
                return False
            return True

        for name, what in (("schema", "a schema name"), ("table_name", "a table name")):
            value = getattr(self, name)
            if (value is not None or name == "schema") and (not isinstance(value, str) or not IDENTIFIER.match(value)):
                bad(name, f"{what} starts with a letter or underscore and holds only letters, digits and "
                          "underscores, at most 63 characters", f"for example {setting(name, 'llmemory')}")
        if not isinstance(self.provider_id, str) or not PROVIDER_ID.match(self.provider_id):
            bad("provider_id", "1 to 200 letters, digits, '_', '.', ':', '/' or '-', starting with a letter or digit",
                f"for example {setting('provider_id', 'local-minilm')}")
        choices = (("provider_type", PROVIDER_TYPES), ("vector_type", VECTOR_TYPES), ("index_type", INDEX_TYPES),
                   ("spelling", STYLES))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                bad(name, f"use one of {', '.join(allowed)}", f"for example {setting(name, allowed[0])}")
        if not isinstance(self.model_name, str) or not self.model_name.strip() or len(self.model_name) > 200 \
                or any(ord(ch) < 32 for ch in self.model_name):
            bad("model_name", "a model name of 1 to 200 printable characters is required",
                f"for example {setting('model_name', 'all-MiniLM-L6-v2')}")
        if whole("dimension", 1, COLUMN_LIMIT, f"the model's vector size, e.g. {setting('dimension', 384)}"):
            limit = INDEX_LIMITS.get((self.index_type, self.vector_type))
            if limit and self.dimension > limit:
                found.append(self._over_limit(limit))
        if self.index_type == "hnsw":
            if whole("m", 2, 100, f"for example {setting('m', 16)}") and whole(
                    "ef_construction", 4, 1000, f"for example {setting('ef_construction', 200)}") \
                    and self.ef_construction < 2 * self.m:
                bad("ef_construction", f"pgvector needs at least 2 x m ({2 * self.m})",
                    f"raise it: {setting('ef_construction', max(2 * self.m, 64))}, or lower m")
        elif self.index_type == "ivfflat":
            whole("lists", 1, 32_768, f"about rows / 1000 for up to a million rows, e.g. {setting('lists', 100)}")
        if self.operator_class is not None:
            if not isinstance(self.operator_class, str) or not IDENTIFIER.match(self.operator_class):
                bad("operator_class", "an operator class name such as vector_cosine_ops",
                    f"for example {setting('operator_class', f'{self.vector_type}_cosine_ops')}")
            elif self.vector_type in VECTOR_TYPES and not self.operator_class.startswith(self.vector_type + "_"):
                bad("operator_class", f"the column is {self.vector_type}: its operator classes are named "
                                      f"{self.vector_type}_*_ops", f"use {setting('operator_class', self.opclass_default)}"
                                                                   f" (or change {setting('vector_type')})")
        for name in ("default", "backfill", "drop_on_destroy"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "true or false is required", f"for example {setting(name, False)}")
        value = self.min_coverage
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            bad("min_coverage", "a percentage from 0 to 100 is required", f"for example {setting('min_coverage', 100)}")
        whole("backfill_batch_size", 1, 100_000, f"for example {setting('backfill_batch_size', 1000)}")
        if self.maintenance_work_mem is not None and (not isinstance(self.maintenance_work_mem, str)
                                                      or not MEMORY.match(self.maintenance_work_mem)):
            bad("maintenance_work_mem", "a PostgreSQL memory size such as 512MB or 2GB",
                f"for example {setting('maintenance_work_mem', '1GB')}")
        if self.max_parallel_maintenance_workers is not None:
            whole("max_parallel_maintenance_workers", 0, 1024,
                  f"for example {setting('max_parallel_maintenance_workers', 2)}")
        value = self.lock_timeout
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            bad("lock_timeout", "a number of seconds >= 0 is required", f"for example {setting('lock_timeout', 2)}")
        for index, role in enumerate(self.runtime_roles):
            if not isinstance(role, str) or not IDENTIFIER.match(role):
                found.append(EmbeddingSettingError(
                    f"Invalid value {role!r} in {setting('runtime_roles')}: a role name starts with a letter or "
                    "underscore and holds only letters, digits and underscores", setting=f"runtime_roles[{index}]",
                    remedy="name an existing role, e.g. llmemory_app"))
        return found

    def _over_limit(self, limit: int) -> EmbeddingSettingError:
        other = "halfvec" if self.vector_type == "vector" else None
        other_limit = INDEX_LIMITS.get((self.index_type, other)) if other else None
        if other and other_limit and self.dimension <= other_limit:
            remedy = (f"store the vectors as half-precision floats: {setting('vector_type', 'halfvec')} (indexes up "
                      f"to {other_limit:,} dimensions, half the space; llmemory's vector inserts and searches cast "
                      "to it implicitly), or use a model with fewer dimensions")
        else:
            remedy = "use a model with fewer dimensions (or one that can shorten its vectors, as OpenAI's text-" \
                     f"embedding-3 models can: {setting('dimension', 1536)})"
        return EmbeddingSettingError(
            f"Invalid value {self.dimension!r} for {setting('dimension')}: over {self.index_type}'s limit of "
            f"{limit:,} dimensions for {self.vector_type} columns (pgvector cannot index it)",
            setting="dimension", remedy=remedy)

    # ------------------------------------------------------------------ names
    @property
    def table(self) -> str:
        """The provider's table: given, or derived as llmemory derives it."""
        return self.table_name or llmemory_table_name(self.provider_type, self.model_name, self.dimension)

    @property
    def index(self) -> str:
        """llmemory's name for the table's vector index (``configure_hnsw_indexes`` alters it by this name)."""
        return index_name(self.table)

    @property
    def opclass_default(self) -> str:
        return f"{self.vector_type}_cosine_ops"

    @property
    def opclass(self) -> str:
        return self.operator_class or self.opclass_default

    @property
    def column_type(self) -> str:
        return f"{self.vector_type}({self.dimension})"

    @property
    def index_options(self) -> Dict[str, int]:
        return {"m": self.m, "ef_construction": self.ef_construction} if self.index_type == "hnsw" \
            else {"lists": self.lists}

    def describe_index(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.index_options.items())
        return f"{self.index_type} ({self.opclass}, {options})"

    @property
    def cosine(self) -> bool:
        return self.opclass.endswith("_cosine_ops")

    # ------------------------------------------------------------------ SQL
    def qualified(self, name: Optional[str] = None) -> sql.Composed:
        return sql.Identifier(self.schema, name or self.table)

    def create_table_sql(self) -> sql.Composed:
        """llmemory's shape (its own provider table, 001_complete_schema.sql), for this provider."""
        return sql.SQL(
            "CREATE TABLE {table} (chunk_id UUID PRIMARY KEY REFERENCES {chunks}(chunk_id) ON DELETE CASCADE, "
            "embedding {type} NOT NULL, model_version TEXT DEFAULT {model}, created_at TIMESTAMPTZ DEFAULT NOW())"
        ).format(table=self.qualified(), chunks=self.qualified("document_chunks"),
                 type=sql.SQL(self.column_type), model=sql.Literal(self.model_name))

    def index_sql(self, name: Optional[str] = None, opclass_schema: Optional[str] = None) -> sql.Composed:
        """``CREATE INDEX CONCURRENTLY`` of the vector index (``name``: another name, for a rebuild beside it;
        ``opclass_schema``: pgvector's schema, so the operator class is found whatever the search_path)."""
        opclass = sql.Identifier(*([opclass_schema] if opclass_schema else []), self.opclass)
        options = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(v))
                                     for k, v in self.index_options.items())
        return sql.SQL("CREATE INDEX CONCURRENTLY {name} ON {table} USING {method} (embedding {opclass}) "
                       "WITH ({options})").format(name=sql.Identifier(name or self.index), table=self.qualified(),
                                                  method=sql.SQL(self.index_type), opclass=opclass, options=options)

    # ------------------------------------------------------------------ sizes
    @property
    def value_bytes(self) -> int:
        return self.dimension * (4 if self.vector_type == "vector" else 2) + 8

    def graph_bytes(self, rows: int) -> int:
        """The memory an index build needs to hold its whole graph (hnsw) or its samples (ivfflat): hnsw, per row,
        the vector + 32 bytes a link (2 x m links on the base layer, 16 bytes each) + 200 bytes of element; measured
        against pgvector 0.8.6's 'graph no longer fits into maintenance_work_mem after N tuples' within 1%
        (384 and 1,536 dimensions, vector and halfvec, m 8 to 32). ivfflat samples max(50 x lists, 10,000) rows."""
        if self.index_type == "hnsw":
            return rows * (self.value_bytes + 32 * self.m + 200)
        return min(rows, max(50 * self.lists, 10_000)) * self.value_bytes

    # ------------------------------------------------------------------ conversions
    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def public_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal"))

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    def replace(self, **changes: Any) -> "EmbeddingSettings":
        return dataclasses.replace(self, **changes)

    def to_props(self) -> Dict[str, Any]:
        props: Dict[str, Any] = {}
        for name in self.names():
            value = getattr(self, name)
            if value is not None:
                props[name] = list(value) if isinstance(value, tuple) else value
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> "EmbeddingSettings":
        """The inverse of :meth:`to_props` (numbers that went through JSON come back as floats)."""
        values: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = props.get(f.name)
            if value is None:
                continue
            if f.name in ("dimension", "m", "ef_construction", "lists", "backfill_batch_size",
                          "max_parallel_maintenance_workers") and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif f.name == "runtime_roles":
                value = tuple(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def problems_of(cls, values: Mapping[str, Any]) -> List[EmbeddingSettingError]:
        """Every invalid argument among ``values`` (a component checks them all at once before it builds
        anything); a missing required argument is one too."""
        missing = [name for name in ("schema", "provider_id", "provider_type", "model_name", "dimension")
                   if values.get(name) is None]
        found = [EmbeddingSettingError(f"{setting(name)} is required", setting=name,
                                       remedy=f"give {setting(name)} (see docs/embedding-models.md)")
                 for name in missing if name != "schema"]
        filled = {**{"schema": "placeholder", "provider_id": "p", "provider_type": "local", "model_name": "m",
                     "dimension": 1}, **cls.defaults(),
                  **{k: v for k, v in values.items() if v is not None and k in cls.names()}}
        probe = object.__new__(cls)  # unchecked: problems() then checks every value at once
        for name, value in filled.items():
            object.__setattr__(probe, name, tuple(value) if name == "runtime_roles" else value)
        return found + probe.problems()


def llmemory_table_name(provider_type: str, model_name: str, dimension: int) -> str:
    """The table llmemory 0.5.0 derives for a provider (``EmbeddingProvider._get_table_name``), exactly."""
    if provider_type == "openai":
        return "chunk_embeddings_openai"
    model_short = model_name.split("/")[-1].lower()
    model_short = model_short.replace("-", "_").replace(".", "_")
    return f"chunk_embeddings_{model_short}_{dimension}"


def index_name(table: str) -> str:
    """``idx_<table>_embedding``, as llmemory names it, cut to PostgreSQL's 63 bytes as the server cuts it."""
    return f"idx_{table}_embedding".encode()[:63].decode(errors="ignore")


def memory_bytes(text: str) -> int:
    """A PostgreSQL memory size (``64MB``; no unit: kB) in bytes."""
    match = MEMORY.match(text)
    if not match:
        raise ValueError(f"not a memory size: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def pretty_bytes(n: float) -> str:
    for unit, size in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("kB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:,.0f} {unit}"
    return f"{int(n)} bytes"


def auto_memory(graph: int, server: int) -> Optional[str]:
    """What maintenance_work_mem "auto" sets for a build of ``graph`` bytes when the server gives ``server``
    bytes: None (keep the server's) when it fits, else the estimate + 25% rounded up to a MB, at most 1 GB."""
    if graph <= server:
        return None
    wanted = min(int(math.ceil(graph * 1.25 / 1024 ** 2)) * 1024 ** 2, AUTO_MEMORY_CAP)
    return None if wanted <= server else f"{wanted // 1024 ** 2}MB"
