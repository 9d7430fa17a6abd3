"""``EmbeddingProvider``: one of llmemory's embedding providers as infrastructure - its table in llmemory's shape, its
registry row, its vector index built concurrently, the backfill of its queue and the default switch
(:mod:`llmemory_db.migrate.embedding_ops` does the work; docs/embedding-models.md tells the story).

    db = MigratedSchema("llmemory", MigratedSchemaArgs(schema="llmemory", migrations_package="llmemory", ...))
    minilm = EmbeddingProvider("minilm", EmbeddingProviderArgs(
        schema=db.schema_name, provider_id="local-minilm", provider_type="local", model_name="all-MiniLM-L6-v2",
        dimension=384, backfill=True))
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import pulumi
from pulumi.dynamic import Resource

from .embedding_provider import EmbeddingProviderAdapter
from .migrate.embedding_errors import EmbeddingConflictError
from .migrate.embeddings import EmbeddingSettings
from .migrate.spelling import setting
from .migrations import ConnectionArgs
from .program import Program

_D = EmbeddingSettings.defaults()


@dataclass
class EmbeddingProviderArgs:
    """Arguments of :class:`EmbeddingProvider`; names, defaults and meaning are
    :class:`~llmemory_db.migrate.embeddings.EmbeddingSettings`' (``schema``: the ``schema_name`` output of the
    ``MigratedSchema`` that deploys llmemory, so the provider waits for its migrations; ``connection``: as
    ``MigratedSchema``'s, gaps filled from the stack's ``postgresql:`` config)."""

    schema: pulumi.Input[str]
    provider_id: str
    provider_type: str
    model_name: str
    dimension: int
    vector_type: str = _D["vector_type"]
    table_name: Optional[str] = None
    index_type: str = _D["index_type"]
    operator_class: Optional[str] = None
    m: int = _D["m"]
    ef_construction: int = _D["ef_construction"]
    lists: int = _D["lists"]
    default: bool = _D["default"]
    min_coverage: float = _D["min_coverage"]
    backfill: bool = _D["backfill"]
    backfill_batch_size: int = _D["backfill_batch_size"]
    maintenance_work_mem: Optional[str] = None
    max_parallel_maintenance_workers: Optional[int] = None
    lock_timeout: float = _D["lock_timeout"]
    runtime_roles: Sequence[str] = ()
    drop_on_destroy: bool = _D["drop_on_destroy"]
    connection: Optional[ConnectionArgs] = None
    spelling: str = _D["spelling"]

    def values(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "connection"}


class EmbeddingProviderTable(Resource):
    """The dynamic resource: the provider's table, registry row and index (one per ``EmbeddingProvider``)."""

    table_name_out: pulumi.Output[str]
    index_name: pulumi.Output[str]
    coverage: pulumi.Output[float]
    chunks: pulumi.Output[int]
    vectors: pulumi.Output[int]
    queued: pulumi.Output[int]
    is_default: pulumi.Output[bool]
    drift: pulumi.Output[list]

    def __init__(self, name: str, props: Dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"]))
        super().__init__(EmbeddingProviderAdapter(), name, props, opts)


class EmbeddingProvider(pulumi.ComponentResource):
    """One llmemory embedding provider (see the module). Outputs: ``table_name``, ``index_name``, ``coverage``
    (percent of the chunks with a vector in its table), ``chunks``, ``vectors``, ``queued``, ``is_default``,
    ``drift`` (what a refresh found changed by hand)."""

    table_name: pulumi.Output[str]
    index_name: pulumi.Output[str]
    coverage: pulumi.Output[float]
    chunks: pulumi.Output[int]
    vectors: pulumi.Output[int]
    queued: pulumi.Output[int]
    is_default: pulumi.Output[bool]
    drift: pulumi.Output[list]

    _table_class = EmbeddingProviderTable   # the package serves it as a custom resource instead

    def __init__(self, name: str, args: EmbeddingProviderArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("llmemory-db:index:EmbeddingProvider", name, None, opts)
        values = args.values()
        problems = EmbeddingSettings.problems_of(dict(values, schema=values["schema"] if isinstance(
            values["schema"], str) else "placeholder"))
        if problems:
            raise pulumi.RunError(problems[0].render(args.spelling))
        conn = ConnectionArgs.from_config(args.connection)
        props: Dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()
                                 if v is not None}
        props["runtime_roles"] = list(args.runtime_roles)
        props.update(host=conn.host, port=conn.port, username=conn.username, password=conn.password,
                     database=conn.database, sslmode=conn.sslmode, sslrootcert=conn.sslrootcert,
                     from_config=[f.name for f in dataclasses.fields(ConnectionArgs)
                                  if getattr(args.connection or ConnectionArgs(), f.name) is None],
                     conflict=_claims(name, args, conn), table_name_out=None, index_name=None, coverage=None,
                     chunks=None, vectors=None, queued=None, is_default=None, drift=None)
        table = self._table_class(f"{name}-table", props, opts=pulumi.ResourceOptions(parent=self))
        self.table_name = table.table_name_out
        self.index_name = table.index_name
        self.coverage = table.coverage
        self.chunks = table.chunks
        self.vectors = table.vectors
        self.queued = table.queued
        self.is_default = table.is_default
        self.drift = table.drift
        self.register_outputs({"table_name": self.table_name, "index_name": self.index_name,
                               "coverage": self.coverage, "chunks": self.chunks, "vectors": self.vectors,
                               "queued": self.queued, "is_default": self.is_default, "drift": self.drift})


def _claims(name: str, args: EmbeddingProviderArgs, conn: ConnectionArgs) -> pulumi.Output[str]:
    """What this provider collides with among the other EmbeddingProviders of the program: the same provider id or
    table in one llmemory schema, or a second ``default=True`` there ('' when nothing). Decided once the schema
    is known; the dynamic provider's check reports it at preview, naming the argument."""
    program = Program.current()
    spelled = args.spelling

    def claim(values) -> str:
        schema, database, host, port = values
        place = ("embedding", str(database), str(host), str(port), schema)
        table = args.table_name or EmbeddingSettings.from_props(dict(args.values(), schema=schema)).table
        for kind, key, what in (("provider id", args.provider_id, "provider_id"), ("table", table, "table_name")):
            other = program.claim(place + (kind, key), name, key)
            if other:
                return EmbeddingConflictError(
                    f"EmbeddingProvider {name!r} and {other[0]!r} both declare {kind} {key!r} in schema {schema}",
                    setting=what, remedy="give each provider its own provider_id and table").render(spelled)
        if args.default:
            other = program.claim(place + ("default",), name, args.provider_id)
            if other:
                return EmbeddingConflictError(
                    f"EmbeddingProvider {name!r} ({args.provider_id}) and {other[0]!r} ({other[1]}) are both "
                    f"{setting('default', True)} in schema {schema}: llmemory has one default provider",
                    setting="default", remedy=f"set {setting('default', True)} on one of them only (the switch moves "
                                              "the default from the other in one transaction)").render(spelled)
        return ""

    return pulumi.Output.all(args.schema, conn.database, conn.host, conn.port).apply(claim)
