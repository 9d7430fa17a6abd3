"""The package's gRPC server: Pulumi's component ProviderServicer, plus the custom resources' operations.

* Construct: ``pulumi.provider.experimental``'s ComponentProvider (schema inferred from ``components``), with the
  inputs checked against that schema first and errors reported by property, never as a Python traceback.
* Check/Diff/Create/Read/Update/Delete of ``llmemory-db:index:Migrations`` and ``…:ExtensionCheck``: the same
  provider classes as the Python-native dynamic resources (``llmemory_db.provider``), called directly. What they
  print goes to the engine as log messages of the resource (the engine does not show a resource plugin's own
  stdout/stderr); secrets (the password) stay marked as such in state and outputs.
* The engine watchdog: a killed ``pulumi up`` ends this process, and a migration in progress rolls back.
"""
import argparse
import asyncio
import dataclasses
import io
import json
import sys
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import grpc
from google.protobuf import empty_pb2
from pulumi.errors import InputPropertiesError, InputPropertyError, RunError
from pulumi.output import Output, Unknown
from pulumi.provider.experimental.analyzer import PropertyDefinition, PropertyType, TypeDefinition
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.provider.server import ComponentInitError, ProviderServicer
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, provider_pb2_grpc

from ..embedding_provider import EmbeddingProviderAdapter
from ..migrate.embeddings import EmbeddingSettings
from ..migrate.errors import MigrationError
from ..migrate.events import Event
from ..migrate.settings import Settings
from ..migrate.spelling import camel
from ..props import events_to
from ..provider import ExtensionCheckProvider, MigrationsProvider
from ..provider_host import watch_engine
from . import PACKAGE, VERSION
from .components import COMPONENTS, EmbeddingProviderTable, ExtensionCheck, Migrations

RESOURCE_PROVIDERS = {
    Migrations.TYPE_TOKEN: MigrationsProvider(),
    ExtensionCheck.TYPE_TOKEN: ExtensionCheckProvider(),
    EmbeddingProviderTable.TYPE_TOKEN: EmbeddingProviderAdapter(),
}
# properties that are secret in every output of the custom resources, whatever their input was
ALWAYS_SECRET = {"password"}
# gRPC's own option names: messages up to 400 MiB (a fleet's state), as Pulumi's own servers allow
GRPC_OPTIONS = [("grpc.max_receive_message_length", 400 * 1024 * 1024)]
SEVERITIES = {"debug": engine_pb2.DEBUG, "info": engine_pb2.INFO, "warning": engine_pb2.WARNING,
              "error": engine_pb2.ERROR}


# --- the schema -----------------------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def complete_schema(schema: Dict[str, Any]) -> Dict[str, Any]:
    """The inferred schema, completed: an input without a docstring gets the description of the engine's
    Settings field of the same name (one text for the CLI, the stack config and every language), and the
    connection's password is a secret."""
    helps = {key: f.metadata["help"] for f in dataclasses.fields(Settings)
             for key in [Settings.config_keys().get(f.name)] if key}
    by_resource = {f"{PACKAGE}:index:EmbeddingProvider": {camel(f.name): f.metadata["help"]
                                                          for f in dataclasses.fields(EmbeddingSettings)}}
    for token, resource in schema.get("resources", {}).items():
        for key, prop in resource.get("inputProperties", {}).items():
            text = by_resource.get(token, helps).get(key)
            if not prop.get("description") and text:
                prop["description"] = _sentence(text)

    def tidy(node: Any) -> None:  # docstrings wrap lines: one line per description
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "description" and isinstance(value, str):
                    node[key] = " ".join(value.split())
                else:
                    tidy(value)
        elif isinstance(node, list):
            for item in node:
                tidy(item)

    tidy(schema)
    connection = schema.get("types", {}).get(f"{PACKAGE}:index:Connection")
    if connection:
        connection["properties"]["password"]["secret"] = True
    # SDKs that are whole packages of their language (a go.mod, a pyproject.toml): usable from a local folder
    schema.setdefault("meta", {})["supportPack"] = True
    schema.setdefault("description", "PostgreSQL schemas as infrastructure: templated SQL migrations (pgdbm's "
                                     "layout), extensions and grants for llmemory and other applications")
    return schema


# --- Construct: inputs checked against the schema -------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def type_errors(value: Any, prop: PropertyDefinition, path: str,
                types: Dict[str, TypeDefinition]) -> List[Dict[str, str]]:
    """What is wrong with the type of ``value`` for ``prop`` (values not known yet are not checked)."""
    if value is None or isinstance(value, (Output, Unknown)) or rpc.is_rpc_secret(value):
        return []

    def wrong(expected: str) -> List[Dict[str, str]]:
        return [{"property_path": path, "reason": f"{path} must be {expected}, not {_kind(value)} ({value!r})"}]

    if prop.ref:
        type_def = types.get(prop.ref.split(":")[-1])
        if type_def is None:
            return []
        if not isinstance(value, dict):
            return wrong("an object")
        known = ", ".join(sorted(type_def.properties))
        errors = [{"property_path": f"{path}.{key}", "reason": f"{path} has no property {key!r} (it has {known})"}
                  for key in sorted(value) if key not in type_def.properties]
        for key, sub in type_def.properties.items():
            errors += type_errors(value.get(key), sub, f"{path}.{key}", types)
        return errors
    if prop.type == PropertyType.ARRAY:
        if not isinstance(value, list):
            return wrong("a list")
        return [e for i, item in enumerate(value) for e in type_errors(item, prop.items, f"{path}[{i}]", types)]
    if prop.type == PropertyType.OBJECT:
        if not isinstance(value, dict):
            return wrong("an object")
        if prop.additional_properties is None:
            return []
        return [e for key, item in value.items()
                for e in type_errors(item, prop.additional_properties, f"{path}.{key}", types)]
    if prop.type == PropertyType.STRING and not isinstance(value, str):
        return wrong("a string")
    if prop.type == PropertyType.BOOLEAN and not isinstance(value, bool):
        return wrong("a boolean (true or false)")
    if prop.type in (PropertyType.NUMBER, PropertyType.INTEGER):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return wrong("a number")
        if prop.type == PropertyType.INTEGER and value != int(value):
            return wrong("a whole number")
    return []


class PackageProvider(ComponentProvider):
    """The component provider of this package: the schema completed, the inputs checked by type."""

    def __init__(self) -> None:
        super().__init__(COMPONENTS, PACKAGE, None, VERSION)
        self.schema = json.dumps(complete_schema(json.loads(self.schema)))

    def map_inputs(self, inputs: Dict[str, Any], component_def) -> Dict[str, Any]:
        errors: List[Dict[str, str]] = []
        for key in sorted(inputs):
            if key not in component_def.inputs:
                errors.append({"property_path": key, "reason": f"{component_def.name} has no property {key!r}"})
        for key, prop in component_def.inputs.items():
            errors += type_errors(inputs.get(key), prop, key, self._type_defs)
        if errors:
            raise InputPropertiesError(f"invalid arguments of {PACKAGE}:{component_def.name}", errors)
        return super().map_inputs(inputs, component_def)


# --- the custom resources ---------------------------------------------------------------------------------------------


def _type_of(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


def _plain(struct, keep_unknowns: bool = False) -> Tuple[Dict[str, Any], set]:
    """Properties with secrets unwrapped, and the top-level keys that were secret."""
    props = rpc.deserialize_properties(struct, keep_unknowns) if struct is not None else {}
    secret = {k for k, v in props.items() if rpc.is_rpc_secret(v)}
    return {k: rpc.unwrap_rpc_secret(v) for k, v in props.items()}, secret


async def _struct(props: Optional[Dict[str, Any]], secret: set) -> Any:
    secret = secret | ALWAYS_SECRET
    return await rpc.serialize_properties(
        {k: (rpc.wrap_rpc_secret(v) if k in secret and v is not None else v) for k, v in (props or {}).items()}, {})


class _ThreadStdout(io.TextIOBase):
    """sys.stdout of the plugin: what provider code prints while serving a request is collected per thread, to be
    sent to the engine as log messages of that resource."""

    def __init__(self, real) -> None:
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

    def run_collecting(self, fn: Callable, *args: Any) -> Tuple[Any, Optional[BaseException], List[Event]]:
        """``fn(*args)``, with the provider's events and anything printed collected (printed lines as info)."""
        self.local.lines = []
        events: List[Event] = []
        try:
            with events_to(events.append):
                return fn(*args), None, self._with_printed(events)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            return None, exc, self._with_printed(events)
        finally:
            self.local.lines = None

    def _with_printed(self, events: List[Event]) -> List[Event]:
        printed = "".join(self.local.lines).splitlines()
        return events + [Event("output", line) for line in printed if line.strip()]


_STDOUT = _ThreadStdout(sys.stdout)


class PackageServicer(ProviderServicer):
    """Construct for the component; Check/Diff/Create/Read/Update/Delete for RESOURCE_PROVIDERS.

    Configure (inherited) accepts secrets, so inputs arrive marked: the provider code gets plain values, and an
    output whose input was secret (and the password, always) is marked secret again."""

    _engine = None

    # --- Construct: errors by property, or the engine's message; a traceback only for a bug of this package
    async def Construct(self, request, context):
        try:
            return await self._construct(request, context)
        except ComponentInitError as exc:
            error: BaseException = exc.inner
        except (InputPropertyError, InputPropertiesError, RunError) as exc:
            error = exc
        if isinstance(error, InputPropertyError):
            error = InputPropertiesError("", [{"property_path": error.property_path, "reason": error.reason}])
        if isinstance(error, InputPropertiesError):
            message = "invalid " + ", ".join(e["property_path"] for e in error.errors)
            await context.abort_with_status(self.create_grpc_invalid_properties_status(message, error.errors))
        if isinstance(error, MigrationError):
            await context.abort(grpc.StatusCode.UNKNOWN, error.render("yaml"))
        if isinstance(error, RunError):
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        # anything else is a bug of this package: its stack, as Pulumi's own servicer reports it
        stack = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
        raise Exception(f"{error}:\n{stack}") from None

    # --- the custom resources
    def _provider(self, urn: str):
        return RESOURCE_PROVIDERS[_type_of(urn)]

    async def _log(self, urn: str, events: List[Event]) -> None:
        if self._engine is None:
            self._engine = engine_pb2_grpc.EngineStub(grpc.aio.insecure_channel(self.engine_address))
        for event in events:
            await self._engine.Log(engine_pb2.LogRequest(severity=SEVERITIES.get(event.severity, engine_pb2.INFO),
                                                         message=event.text, urn=urn))

    async def _call(self, context, urn: str, fn: Callable, *args: Any) -> Any:
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
        if result.changes:  # unlike a dynamic provider, a package's provider can name the changed inputs
            fields["diffs"] = sorted(k for k in news if olds.get(k) != news.get(k))
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


def main(argv: Optional[List[str]] = None) -> None:
    """What ``pulumi.provider.main`` does, with PackageServicer: ``argv`` is the engine's address, then flags."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="pulumi-resource-llmemory-db", description=f"{PACKAGE} Pulumi plugin")
    parser.add_argument("engine", help="the Pulumi engine's address (the CLI passes it)")
    engine = parser.parse_known_args(argv)[0].engine
    provider = PackageProvider()
    watch_engine(engine=engine)

    async def run() -> None:
        server = grpc.aio.server(options=GRPC_OPTIONS)
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
