"""What the package serves: ``MigratedSchema`` with plain, typed arguments, and its children as custom resources.

The annotations below are the package's schema (``pulumi.provider.experimental`` reads them at run time: no
``from __future__ import annotations`` in this module). A property without a docstring here gets the description
of the engine's :class:`~llmemory_db.migrate.Settings` field of the same name (``server.complete_schema``), and
every default is the Python component's (``Settings``' for the settings): arguments left out are not passed on.
"""
import sys
from typing import Any, Dict, List, Optional, Tuple, TypedDict

import pulumi
import pulumi_postgresql as postgresql
from pulumi.dynamic import Resource as DynamicResource
from pulumi.errors import InputPropertiesError

from .. import embeddings as native_embeddings
from .. import migrations as native_migrations
from .. import schema as native_schema
from ..migrate.embeddings import EmbeddingSettings
from ..migrate.settings import Settings
from ..migrate.spelling import camel
from . import PACKAGE, VERSION

if sys.version_info >= (3, 11):
    from typing import Required
else:  # pragma: no cover
    from typing_extensions import Required


# --- the children, registered as custom resources of this package ------------------------------------------------


class _ServedByPackage(DynamicResource):
    """Mixed in after one of llmemory_db's dynamic resource classes: the same properties are registered as the
    custom resource ``TYPE_TOKEN`` of this package instead of ``pulumi-python:dynamic:Resource`` with a pickled
    provider. The engine then sends its Check/Diff/Create/Read/Update/Delete to this package's plugin (the same
    process), which runs the provider class named in ``server.RESOURCE_PROVIDERS``."""

    TYPE_TOKEN = ""

    def __init__(self, _provider: Any, name: str, props: Dict[str, Any],
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=VERSION))
        pulumi.CustomResource.__init__(self, self.TYPE_TOKEN, name, props, opts)


class Migrations(native_migrations.Migrations, _ServedByPackage):
    TYPE_TOKEN = f"{PACKAGE}:index:Migrations"


class ExtensionCheck(native_migrations.ExtensionCheck, _ServedByPackage):
    TYPE_TOKEN = f"{PACKAGE}:index:ExtensionCheck"


class EmbeddingProviderTable(native_embeddings.EmbeddingProviderTable, _ServedByPackage):
    TYPE_TOKEN = f"{PACKAGE}:index:EmbeddingProviderTable"


# --- the component as every language sees it ----------------------------------------------------------------------


class Connection(TypedDict, total=False):
    """How to reach PostgreSQL. A field left out comes from the stack's postgresql: config (the keys the
    pulumi-postgresql provider reads). When connection is given, the schema, extension and grant resources use a
    pulumi-postgresql provider made from the same fields."""

    host: pulumi.Input[str]
    """Server host (default: postgresql:host, else localhost)."""
    port: pulumi.Input[int]
    """Server port (default: postgresql:port, else 5432)."""
    username: pulumi.Input[str]
    """The migration role (default: postgresql:username, else postgres)."""
    password: pulumi.Input[str]
    """Its password, kept secret in state and outputs (default: the secret postgresql:password)."""
    database: pulumi.Input[str]
    """Database (default: postgresql:database, else postgres)."""
    sslmode: pulumi.Input[str]
    """libpq sslmode: disable, prefer, require, verify-ca or verify-full (default: postgresql:sslmode, else prefer)."""
    sslrootcert: pulumi.Input[str]
    """CA certificate file for sslmode verify-ca and verify-full (default: postgresql:sslrootcert)."""
    superuser: pulumi.Input[bool]
    """Whether the migration role is a superuser, for pulumi-postgresql: false for a managed service's admin role
    (default: postgresql:superuser, else true)."""


class MigratedSchemaArgs(TypedDict, total=False):
    """Arguments of MigratedSchema. All but schema are optional; plain values, known at preview (they decide which
    resources exist), except the connection's fields."""

    schema: Required[str]
    """Target schema, created if missing (schema-isolation mode); "" = standalone mode (the migrations' objects in
    public, no schema created)."""
    migrations_dir: str
    migrations_package: str
    module_name: str
    history_table: str
    extensions: List[str]
    """Extensions created in public first if missing (never dropped) and watched for drift (default: [vector];
    the real llmemory also needs pgcrypto)."""
    runtime_roles: List[str]
    """Existing roles that get USAGE on the schema, read/write on its tables, USAGE/SELECT on its sequences and
    SELECT on the history table (default: none)."""
    startup_role: str
    startup_guard: bool
    connection: Connection
    """How to reach PostgreSQL (default: the stack's postgresql: config)."""
    lock_wait_timeout: float
    lock_timeout: float
    lock_retry_timeout: float
    statement_timeout: float
    preflight_timeout: float
    strict: bool
    risk_policy: str
    risk_min_rows: int
    pool_mode: str
    baseline: str
    baseline_trust: bool
    accept_edits: List[str]
    drop_on_destroy: bool
    accept_schema_drift: bool
    adopt: bool
    """An existing deployment without Pulumi state: import the schema and the extensions instead of creating them
    (the migrations find their files recorded and apply nothing); set it for one update."""


#: ConnectionArgs' fields that the engine's own connection (llmemory_db.migrations.ConnectionArgs) takes
_ENGINE_CONNECTION = ("host", "port", "username", "password", "database", "sslmode", "sslrootcert")


class MigratedSchema(native_schema.MigratedSchema):
    """A PostgreSQL schema with its extensions and grants (pulumi-postgresql) and its templated SQL migrations
    (pgdbm's layout and checksums), applied in order and recorded in a history table; drift is reported on
    refresh."""

    _migrations_class = Migrations
    _extension_check_class = ExtensionCheck

    schema_name: pulumi.Output[str]
    """The schema the objects live in (public in standalone mode)."""
    module_name: pulumi.Output[str]
    """The module name in the history table."""
    history_table: pulumi.Output[str]
    """The history table, schema-qualified."""
    applied: pulumi.Output[List[str]]
    """The applied migration files, in order."""
    checksums: pulumi.Output[Dict[str, str]]
    """Filename to SHA-256 (pgdbm's checksum) of every applied file."""
    pending: pulumi.Output[List[str]]
    """Files not applied yet: empty after an update, filled by a refresh when history rows went missing."""
    fingerprint: pulumi.Output[str]
    """Fingerprint of the objects the migrations manage, taken after the last update (schema drift detection)."""
    drift: pulumi.Output[List[str]]
    """Schema drift found by the last refresh, in plain words (empty when the schema is as recorded)."""
    package_version: pulumi.Output[Optional[str]]
    """With migrationsPackage: the package and version the migrations came from."""

    def __init__(self, name: str, args: MigratedSchemaArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        native, self._connection, self._superuser = native_args(args or {})
        super().__init__(name, native, opts)

    def _postgresql_provider(self, name: str, args: native_schema.MigratedSchemaArgs,
                             conn: native_migrations.ConnectionArgs) -> Optional[postgresql.Provider]:
        if not self._connection:
            return None  # the default provider: the stack's postgresql: config
        superuser = self._superuser
        if superuser is None:
            superuser = pulumi.Config("postgresql").get_bool("superuser")
        return postgresql.Provider(
            f"{name}-postgresql", host=conn.host, port=conn.port, username=conn.username, password=conn.password,
            database=conn.database, sslmode=conn.sslmode, sslrootcert=conn.sslrootcert, superuser=superuser,
            opts=pulumi.ResourceOptions(parent=self))


def native_args(args: Dict[str, Any]) -> Tuple[native_schema.MigratedSchemaArgs, bool, Any]:
    """The Python-native arguments for the package's (snake_case) ones: (MigratedSchemaArgs, whether a connection
    was given, its superuser flag). Every value is checked here, so that a bad one fails naming its property
    (InputPropertiesError) rather than in the middle of the component."""
    values: Dict[str, Any] = dict(args, spelling="yaml")  # messages name camelCase properties
    errors = [{"property_path": camel(exc.setting), "reason": exc.render("yaml")} for exc in Settings.problems(values)]
    if errors:
        raise InputPropertiesError("invalid arguments of llmemory-db:MigratedSchema", errors)

    connection = dict(values.pop("connection", None) or {})
    superuser = connection.pop("superuser", None)
    if connection or superuser is not None:
        values["connection"] = native_migrations.ConnectionArgs(
            **{key: connection.get(key) for key in _ENGINE_CONNECTION})
    values["schema"] = values.get("schema") or None   # "" = standalone
    for key in ("extensions", "runtime_roles"):
        if key in values:
            values[key] = tuple(values[key])
    return native_schema.MigratedSchemaArgs(**values), "connection" in values, superuser


class EmbeddingProviderArgs(TypedDict, total=False):
    """Arguments of EmbeddingProvider. schema (an output of a MigratedSchema) and the connection's fields may be
    outputs; the rest are plain values. A property without a docstring here has the engine's description
    (EmbeddingSettings)."""

    schema: Required[pulumi.Input[str]]
    """The llmemory schema: the schemaName output of the MigratedSchema that deploys llmemory, so that the provider
    waits for its migrations."""
    provider_id: Required[str]
    provider_type: Required[str]
    model_name: Required[str]
    dimension: Required[int]
    vector_type: str
    table_name: str
    index_type: str
    operator_class: str
    m: int
    ef_construction: int
    lists: int
    default: bool
    min_coverage: float
    backfill: bool
    backfill_batch_size: int
    maintenance_work_mem: str
    max_parallel_maintenance_workers: int
    lock_timeout: float
    runtime_roles: List[str]
    drop_on_destroy: bool
    connection: Connection
    """How to reach PostgreSQL (default: the stack's postgresql: config)."""


class EmbeddingProvider(native_embeddings.EmbeddingProvider):
    """One of llmemory's embedding providers: its table in llmemory's shape and its registry row (one
    transaction), its vector index built concurrently (INVALID leftovers rebuilt, progress reported), the backfill of
    its queue, and the default switch (one transaction, refused below minCoverage). Removing it unregisters it and
    keeps its table (unless dropOnDestroy); removing the default provider is refused."""

    _table_class = EmbeddingProviderTable

    table_name: pulumi.Output[str]
    """The provider's table (llmemory's derived name, or tableName)."""
    index_name: pulumi.Output[str]
    """Its vector index (idx_<table>_embedding, llmemory's name)."""
    coverage: pulumi.Output[float]
    """Percent of the chunks with a vector in its table (100 when there are no chunks), as of the last update or
    refresh."""
    chunks: pulumi.Output[int]
    """Chunks in document_chunks."""
    vectors: pulumi.Output[int]
    """Chunks with a vector in the provider's table."""
    queued: pulumi.Output[int]
    """Entries of embedding_queue pending or being processed for the provider."""
    is_default: pulumi.Output[bool]
    """Whether it is llmemory's default provider (its searches read its table)."""
    drift: pulumi.Output[List[str]]
    """What the last refresh found changed outside the stack, in plain words."""

    def __init__(self, name: str, args: EmbeddingProviderArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(name, embedding_args(args or {}), opts)


_WHOLE = ("dimension", "m", "ef_construction", "lists", "backfill_batch_size", "max_parallel_maintenance_workers")


def embedding_args(args: Dict[str, Any]) -> native_embeddings.EmbeddingProviderArgs:
    """The Python-native arguments for the package's (snake_case) ones; every value checked first, so that a bad one
    fails naming its property."""
    values: Dict[str, Any] = dict(args, spelling="yaml")
    for key in _WHOLE:  # the engine sends the schema's integers as numbers: 384.0
        if isinstance(values.get(key), float) and values[key].is_integer():
            values[key] = int(values[key])
    checked = dict(values, schema=values["schema"] if isinstance(values.get("schema"), str) else "placeholder")
    errors = [{"property_path": camel(exc.setting.split("[")[0]) + exc.setting[len(exc.setting.split("[")[0]):],
               "reason": exc.render("yaml")} for exc in EmbeddingSettings.problems_of(checked)]
    if errors:
        raise InputPropertiesError("invalid arguments of llmemory-db:EmbeddingProvider", errors)
    connection = dict(values.pop("connection", None) or {})
    connection.pop("superuser", None)
    if connection:
        values["connection"] = native_migrations.ConnectionArgs(
            **{key: connection.get(key) for key in _ENGINE_CONNECTION})
    values["runtime_roles"] = tuple(values.get("runtime_roles") or ())
    return native_embeddings.EmbeddingProviderArgs(**values)


COMPONENTS = [MigratedSchema, EmbeddingProvider]
