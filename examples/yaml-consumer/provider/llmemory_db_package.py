"""Prototype of llmemory-db as a Pulumi package usable from any Pulumi language (proven from YAML).

One provider process serves
  * the component ``llmemory-db:index:MigratedSchema`` (Construct; schema inferred by
    ``pulumi.provider.experimental`` from the type annotations below), and
  * the custom resources ``llmemory-db:index:Migrations`` and ``llmemory-db:index:ExtensionCheck``
    (Check/Diff/Create/Read/Update/Delete), implemented by llmemory_db's own MigrationsProvider and
    ExtensionCheckProvider, called directly: no pickled provider, no dynamic-provider host.

The component's children are created in the consumer's deployment; the custom resources come back to this
same plugin (the engine's default provider for the llmemory-db package), which runs with our virtualenv,
whatever the consumer's language is.
"""
import argparse
import asyncio
import io
import sys
import threading
from typing import Any, Dict, Optional, TypedDict

import grpc
import pulumi
from google.protobuf import empty_pb2
from pulumi.dynamic import Resource as DynamicResource
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.provider.server import ProviderServicer
from pulumi.runtime import proto, rpc
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, provider_pb2_grpc

from llmemory_db import migrations as _migrations
from llmemory_db import schema as _schema
from llmemory_db.provider import ExtensionCheckProvider, MigrationsProvider

PACKAGE = "llmemory-db"
VERSION = "0.1.0"

# --- the same resources, registered as custom resources of this package instead of dynamic resources ----------


class _ServedByPackage(DynamicResource):
    """Placed between a dynamic resource class and pulumi.dynamic.Resource in the MRO: registers the resource as
    ``<_token>`` (served by this plugin) instead of ``pulumi-python:dynamic:Resource`` with a pickled provider."""

    _token = ""

    def __init__(self, _provider, name, props, opts=None):
        pulumi.CustomResource.__init__(self, self._token, name, props, opts)


class Migrations(_migrations.Migrations, _ServedByPackage):
    _token = f"{PACKAGE}:index:Migrations"


class ExtensionCheck(_migrations.ExtensionCheck, _ServedByPackage):
    _token = f"{PACKAGE}:index:ExtensionCheck"


# MigratedSchema creates its children by these module-level names (phase 2: a parameter instead of this patch).
_schema.Migrations = Migrations
_schema.ExtensionCheck = ExtensionCheck

RESOURCE_PROVIDERS = {
    Migrations._token: MigrationsProvider(),
    ExtensionCheck._token: ExtensionCheckProvider(),
}

# --- the component as other languages see it --------------------------------------------------------------------


class ConnectionArgs(TypedDict, total=False):
    """How to reach PostgreSQL. A field left out falls back to the stack's ``postgresql:`` config."""

    host: pulumi.Input[str]
    """Server host (default: postgresql:host, else localhost)."""
    port: pulumi.Input[int]
    """Server port (default: postgresql:port, else 5432)."""
    username: pulumi.Input[str]
    """Migration role (default: postgresql:username, else postgres)."""
    password: pulumi.Input[str]
    """Its password (default: secret postgresql:password)."""
    database: pulumi.Input[str]
    """Database (default: postgresql:database, else postgres)."""
    sslmode: pulumi.Input[str]
    """libpq sslmode (default: postgresql:sslmode, else prefer)."""


class MigratedSchemaArgs(TypedDict, total=False):
    """Arguments of MigratedSchema: every one optional, plain values known at preview."""

    schema: str
    """Target schema; empty or left out = standalone mode (objects in public, no schema created)."""
    module_name: str
    """Module name in the history table (default aword_memory)."""
    migrations_dir: str
    """Folder of *.sql migration files, relative to the consumer's project (default migrations)."""
    extensions: list[str]
    """Extensions created in public first, if missing (default [vector])."""
    runtime_roles: list[str]
    """Existing roles that get read/write access to the tables."""
    history_table: str
    """History table, table or schema.table (default public.schema_migrations)."""
    connection: ConnectionArgs
    """How to reach PostgreSQL; gaps are filled from the stack's postgresql: config."""
    lock_wait_timeout: float
    """Seconds to wait for the migration lock (default 60)."""
    lock_timeout: float
    """PostgreSQL lock_timeout in seconds while migrating (default none)."""
    statement_timeout: float
    """PostgreSQL statement_timeout in seconds while migrating (default none)."""
    strict: bool
    """Lint warnings in pending files are errors."""
    pool_mode: str
    """auto (detect a pooler), session or transaction."""
    drop_on_destroy: bool
    """pulumi destroy drops the schema (standalone: the module's tables) and forgets the history."""
    accept_schema_drift: bool
    """On the next update, record the live schema as it is instead of stopping on schema drift."""


class MigratedSchema(_schema.MigratedSchema):
    """A PostgreSQL schema with its extensions and grants (pulumi-postgresql) and its templated SQL migrations,
    applied idempotently and recorded pgdbm-compatibly."""

    # re-declared with real (not postponed) annotations: the schema is inferred from them
    schema_name: pulumi.Output[str]
    """The target schema (public in standalone mode)."""
    module_name: pulumi.Output[str]
    """Module name in the history table."""
    history_table: pulumi.Output[str]
    """History table, schema-qualified."""
    applied: pulumi.Output[list[str]]
    """Applied migration files, in order."""
    checksums: pulumi.Output[dict[str, str]]
    """Filename to SHA-256 of every applied file."""
    pending: pulumi.Output[list[str]]
    """Files not applied yet (empty after an update)."""
    fingerprint: pulumi.Output[str]
    """Fingerprint of the objects the migrations created (drift detection)."""
    drift: pulumi.Output[list[str]]
    """Schema drift found by the last refresh."""

    def __init__(self, name: str, args: MigratedSchemaArgs, opts: Optional[pulumi.ResourceOptions] = None):
        values: Dict[str, Any] = dict(args or {})
        connection = values.pop("connection", None)
        if connection is not None:
            values["connection"] = _migrations.ConnectionArgs(**connection)
        for key in ("extensions", "runtime_roles"):
            if key in values:
                values[key] = tuple(values[key])
        super().__init__(name, _schema.MigratedSchemaArgs(**values), opts)


COMPONENTS = [MigratedSchema]

# --- the gRPC server: Construct from Pulumi's ProviderServicer, CRUD added for our custom resources ------------


def _type_of(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


def _plain(struct, keep_unknowns: bool = False):
    """Properties with secrets unwrapped, and the top-level keys that were secret."""
    props = rpc.deserialize_properties(struct, keep_unknowns) if struct is not None else {}
    secret = {k for k, v in props.items() if rpc.is_rpc_secret(v)}
    return {k: rpc.unwrap_rpc_secret(v) for k, v in props.items()}, secret


async def _struct(props: Dict[str, Any], secret) -> Any:
    return await rpc.serialize_properties(
        {k: (rpc.wrap_rpc_secret(v) if k in secret else v) for k, v in (props or {}).items()}, {})


class _ThreadStdout(io.TextIOBase):
    """sys.stdout for the provider process: what the provider code prints while serving a request is collected
    per thread and sent to the engine as log messages of that resource. (The engine hides stdout/stderr of
    resource plugins other than the dynamic-provider host: plain prints would never reach the user.)"""

    def __init__(self, real):
        super().__init__()
        self.real = real
        self.local = threading.local()

    def write(self, text: str) -> int:
        lines = getattr(self.local, "lines", None)
        if lines is None:
            return self.real.write(text)
        lines.append(text)
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def run_collecting(self, fn, *args):
        self.local.lines = []
        try:
            return fn(*args), None, "".join(self.local.lines)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            return None, exc, "".join(self.local.lines)
        finally:
            self.local.lines = None


_STDOUT = _ThreadStdout(sys.stdout)


class PackageServicer(ProviderServicer):
    """Pulumi's component ProviderServicer plus Check/Diff/Create/Read/Update/Delete for RESOURCE_PROVIDERS.

    Secrets: Configure (inherited) declares acceptSecrets, so inputs arrive with secret markers; the provider
    code gets plain values, and every output whose input was secret (the password) is marked secret again."""

    _engine = None

    def _provider(self, urn: str):
        return RESOURCE_PROVIDERS[_type_of(urn)]

    async def _log(self, urn: str, text: str) -> None:
        if self._engine is None:
            self._engine = engine_pb2_grpc.EngineStub(grpc.aio.insecure_channel(self.engine_address))
        for line in text.splitlines():
            if line.strip():
                severity = engine_pb2.WARNING if line.startswith("warning:") else engine_pb2.INFO
                await self._engine.Log(engine_pb2.LogRequest(severity=severity, message=line, urn=urn))

    async def _call(self, context, urn, fn, *args):
        result, error, printed = await asyncio.to_thread(_STDOUT.run_collecting, fn, *args)
        await self._log(urn, printed)
        if error is not None:  # the engine's message is the whole text
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        return result

    async def Check(self, request, context):
        olds, _ = _plain(request.olds, True)
        news, secret = _plain(request.news, True)
        result = await self._call(context, request.urn, self._provider(request.urn).check, olds, news)
        return proto.CheckResponse(
            inputs=await _struct(result.inputs, secret),
            failures=[proto.CheckFailure(property=f.property, reason=f.reason) for f in result.failures])

    async def Diff(self, request, context):
        olds, _ = _plain(request.olds, True)
        news, _ = _plain(request.news, True)
        result = await self._call(context, request.urn, self._provider(request.urn).diff, request.id, olds, news)
        fields: Dict[str, Any] = {}
        if result.changes is None:
            fields["changes"] = proto.DiffResponse.DIFF_UNKNOWN
        else:
            fields["changes"] = proto.DiffResponse.DIFF_SOME if result.changes else proto.DiffResponse.DIFF_NONE
        if result.changes:  # unlike a dynamic provider, a real provider can name the changed properties
            fields["diffs"] = sorted(k for k in set(olds) | set(news)
                                     if k in news and olds.get(k) != news.get(k))
        if result.replaces:
            fields["replaces"] = result.replaces
        if result.delete_before_replace is not None:
            fields["deleteBeforeReplace"] = result.delete_before_replace
        return proto.DiffResponse(**fields)

    async def Create(self, request, context):
        props, secret = _plain(request.properties)
        result = await self._call(context, request.urn, self._provider(request.urn).create, props)
        return proto.CreateResponse(id=result.id, properties=await _struct(result.outs, secret))

    async def Update(self, request, context):
        olds, _ = _plain(request.olds)
        news, secret = _plain(request.news)
        result = await self._call(context, request.urn, self._provider(request.urn).update, request.id, olds, news)
        return proto.UpdateResponse(properties=await _struct(result.outs, secret))

    async def Read(self, request, context):
        props, secret = _plain(request.properties)
        if not props:
            props, secret = _plain(request.inputs)
        result = await self._call(context, request.urn, self._provider(request.urn).read, request.id, props)
        fields: Dict[str, Any] = {"id": result.id or "", "properties": await _struct(result.outs, secret)}
        if result.inputs is not None:
            fields["inputs"] = await _struct(result.inputs, secret)
        return proto.ReadResponse(**fields)

    async def Delete(self, request, context):
        props, _ = _plain(request.properties)
        await self._call(context, request.urn, self._provider(request.urn).delete, request.id, props)
        return empty_pb2.Empty()


def serve(argv: Optional[list] = None) -> None:
    """What ``pulumi.provider.main`` does, with PackageServicer; ``argv``: the engine address, then flags."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=f"{PACKAGE} Pulumi provider plugin")
    parser.add_argument("engine")
    engine = parser.parse_known_args(argv)[0].engine
    provider = ComponentProvider(COMPONENTS, PACKAGE, None, VERSION)

    async def run() -> None:
        server = grpc.aio.server(options=_GRPC_CHANNEL_OPTIONS)
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(PackageServicer(provider, argv, engine), server)
        port = server.add_insecure_port(address="127.0.0.1:0")
        await server.start()
        sys.stdout.buffer.write(f"{port}\n".encode())
        sys.stdout.buffer.flush()
        sys.stdout = _STDOUT
        await server.wait_for_termination()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
