"""The Pulumi package (llmemory_db.package) without the CLI: its schema, its checks of the inputs, and the graph the
component builds there (Pulumi's mocks). The package end to end, from YAML and Python: test_e2e_yaml.py."""
from __future__ import annotations

import json
import re

import pytest
from pulumi.errors import InputPropertiesError

from llmemory_db.migrate.settings import Settings
from llmemory_db.package import PACKAGE, VERSION
from llmemory_db.package import components
from llmemory_db.package.server import PackageProvider, type_errors
from tests.helpers import ROOT
from llmemory_db.migrate.spelling import camel
from tests.helpers.mocks import by_name, described

TOKEN = f"{PACKAGE}:index:MigratedSchema"


@pytest.fixture(scope="module")
def provider():
    return PackageProvider()


@pytest.fixture(scope="module")
def schema(provider):
    return json.loads(provider.schema)


def test_schema_inputs_are_the_engine_settings_plus_the_component_own(schema):
    resource = schema["resources"][TOKEN]
    settings = set(Settings.config_keys().values())
    assert set(resource["inputProperties"]) == settings | {"extensions", "runtimeRoles", "connection", "adopt"}
    assert resource["requiredInputs"] == ["schema"]
    assert set(resource["properties"]) == {"schemaName", "moduleName", "historyTable", "applied", "checksums",
                                           "pending", "fingerprint", "drift", "packageVersion"}
    # plain values (they decide which resources exist), but the connection's fields are inputs
    assert all(p.get("plain") for p in resource["inputProperties"].values())
    connection = schema["types"][f"{PACKAGE}:index:Connection"]["properties"]
    assert connection["password"]["secret"] is True
    assert not any(p.get("plain") for p in connection.values())


def test_every_property_and_type_has_a_one_line_description(schema):
    missing = [path for path, prop in described(schema) if not prop.get("description")]
    assert missing == []
    assert all("\n" not in prop["description"] for _, prop in described(schema))
    assert schema["resources"][TOKEN]["description"] and schema["description"]
    # Settings' own text where the component has none of its own (one text for CLI, config and every language)
    inputs = schema["resources"][TOKEN]["inputProperties"]
    assert inputs["lockWaitTimeout"]["description"].startswith("Seconds to wait for the module's migration lock")


def test_version_is_the_distribution_version(schema):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == VERSION == schema["version"]


@pytest.mark.parametrize("inputs, path, words", [
    ({"schema": "s", "extensions": 5}, "extensions", "must be a list, not a number"),
    ({"schema": "s", "runtimeRoles": ["a", 7]}, "runtimeRoles[1]", "must be a string"),
    ({"schema": "s", "strict": "yes"}, "strict", "must be a boolean"),
    ({"schema": "s", "lockWaitTimeout": "10"}, "lockWaitTimeout", "must be a number"),
    ({"schema": "s", "connection": {"port": "x"}}, "connection.port", "must be a number"),
    ({"schema": "s", "connection": {"hots": "x"}}, "connection.hots", "has no property 'hots'"),
    ({"schema": "s", "connection": "postgres://"}, "connection", "must be an object"),
    ({"schema": "s", "migrationDir": "x"}, "migrationDir", "has no property 'migrationDir'"),
])
def test_inputs_of_a_wrong_type_fail_naming_the_property(provider, inputs, path, words):
    definition = provider._component_defs["MigratedSchema"]
    with pytest.raises(InputPropertiesError) as caught:
        provider.map_inputs(inputs, definition)
    errors = {e["property_path"]: e["reason"] for e in caught.value.errors}
    assert path in errors and words in errors[path], errors


def test_missing_required_input_names_it(provider):
    from pulumi.errors import InputPropertyError
    with pytest.raises(InputPropertyError, match="schema"):
        provider.map_inputs({"moduleName": "x"}, provider._component_defs["MigratedSchema"])


def test_values_not_known_yet_are_not_type_checked(provider):
    import pulumi
    prop = provider._component_defs["MigratedSchema"].inputs["extensions"]
    assert type_errors(pulumi.Output.from_input(["x"]), prop, "extensions", {}) == []


@pytest.mark.parametrize("args, path", [
    ({"schema": "Bad;Name"}, "schema"),
    ({"schema": "s", "historyTable": "a.b.c"}, "historyTable"),
    ({"schema": "s", "runtimeRoles": ["ok", "no way"]}, "runtimeRoles[1]"),
    ({"schema": "s", "extensions": ["vector", "x-y"]}, "extensions"),
    ({"schema": "s", "poolMode": "sometimes"}, "poolMode"),
    ({"schema": "s", "lockWaitTimeout": -1}, "lockWaitTimeout"),
    ({"schema": "s", "migrationsPackage": "no_such_package_here"}, "migrationsPackage"),
])
def test_invalid_values_fail_naming_the_property_with_the_engine_message(args, path):
    snake = {camel(k): k for k in ("history_table", "runtime_roles", "pool_mode", "lock_wait_timeout",
                                                "migrations_package")}
    values = {snake.get(k, k): v for k, v in args.items()}
    with pytest.raises(InputPropertiesError) as caught:
        components.native_args(values)
    paths = [e["property_path"] for e in caught.value.errors]
    assert paths == [path]


def test_native_args_empty_schema_is_standalone_and_connection_is_passed_on():
    native, given, superuser = components.native_args({"schema": "", "extensions": ["vector", "pgcrypto"]})
    assert native.schema is None and native.extensions == ("vector", "pgcrypto") and not given
    native, given, superuser = components.native_args(
        {"schema": "app", "connection": {"host": "db", "password": "pw", "superuser": False}})
    assert given and superuser is False
    assert (native.connection.host, native.connection.password, native.connection.port) == ("db", "pw", None)


def test_the_package_component_builds_the_same_graph_with_custom_resources(deploy):  # noqa: F811
    def build():
        return [components.MigratedSchema("db", {"schema": "mem", "runtime_roles": ["app"]})]

    resources = by_name(deploy(build))
    assert resources["db"][0] == TOKEN
    assert resources["db-migrations"][0] == f"{PACKAGE}:index:Migrations"
    assert resources["db-ext-vector-check"][0] == f"{PACKAGE}:index:ExtensionCheck"
    assert resources["db-schema"][0] == "postgresql:index/schema:Schema"
    assert "db-postgresql" not in resources  # no connection given: the stack's postgresql: config
    props = resources["db-migrations"][1]
    assert props["schema"] == "mem" and "001_a.sql" in props["checksums"] and "__provider" not in props


def test_a_given_connection_makes_the_postgresql_provider_of_the_children(deploy):  # noqa: F811
    def build():
        return [components.MigratedSchema("db", {"schema": "mem", "connection": {"host": "other", "port": 6543}})]

    registered = deploy(build)
    resources = by_name(registered)
    typ, inputs, _ = resources["db-postgresql"]
    assert typ == "pulumi:providers:postgresql"
    assert (inputs["host"], inputs["port"], inputs["database"]) == ("other", "6543", "app")  # the gap from config
    assert resources["db-migrations"][1]["host"] == "other"


def test_python_native_path_is_unchanged(deploy):  # noqa: F811
    from llmemory_db import MigratedSchema, MigratedSchemaArgs
    resources = by_name(deploy(lambda: [MigratedSchema("db", MigratedSchemaArgs(schema="mem"))]))
    assert resources["db-migrations"][0] == "pulumi-python:dynamic:Resource"
    assert resources["db-ext-vector-check"][0] == "pulumi-python:dynamic:Resource"
