"""The component's resource graph with Pulumi's mocks (no CLI, no database): which resources, which grants, in
which order. Wiring only: every behaviour here is also shown end to end with the real CLI (test_e2e_*)."""
from __future__ import annotations

import pulumi
import pytest

from tests.helpers.mocks import by_name


def test_schema_mode_grants_and_their_order(deploy):
    from llmemory_db import MigratedSchema, MigratedSchemaArgs
    registered = deploy(lambda: [MigratedSchema("db", MigratedSchemaArgs(schema="mem", runtime_roles=["app"]))])
    names = [name for _, name, _, _ in registered if not name.startswith("db") or name != "db"]
    resources = by_name(registered)
    assert resources["db-schema"][1]["name"] == "mem"
    assert resources["db-ext-vector"][1]["name"] == "vector"
    # grants: usage, default privileges (schema mode only), then after the migrations the tables, sequences,
    # the history schema's usage and SELECT on the history table, each waiting for the previous one
    chain = ["db-schema", "db-ext-vector-check", "db-ext-vector", "db-app-usage", "db-app-default-tables",
             "db-app-default-sequences", "db-migrations", "db-app-tables", "db-app-sequences",
             "db-app-history-usage", "db-app-history"]
    assert [n for n in names if n in chain] == chain
    for previous, current in zip(chain, chain[1:]):
        if current != "db-ext-vector-check":
            assert previous in resources[current][2], (current, resources[current][2])
    tables = resources["db-app-tables"][1]
    assert tables["objectType"] == "table" and tables["schema"] == "mem" and tables["privileges"] == [
        "SELECT", "INSERT", "UPDATE", "DELETE"]
    history = resources["db-app-history"][1]
    assert history["schema"] == "public" and history["objects"] == ["schema_migrations"]
    assert history["privileges"] == ["SELECT"]


def test_standalone_grants_name_the_module_tables_never_all_of_public(deploy):
    from llmemory_db import MigratedSchema, MigratedSchemaArgs
    resources = by_name(deploy(lambda: [MigratedSchema("db", MigratedSchemaArgs(runtime_roles=["app"]))]))
    assert "db-schema" not in resources and "db-app-default-tables" not in resources
    assert sorted(resources["db-app-tables"][1]["objects"]) == ["docs", "tags"]
    assert resources["db-app-sequences"][1]["objects"] == ["docs_id_seq"]


def test_one_extension_per_database(deploy):
    from llmemory_db import MigratedSchema, MigratedSchemaArgs

    def build():
        return [MigratedSchema("a", MigratedSchemaArgs(schema="a", module_name="m_a")),
                MigratedSchema("b", MigratedSchemaArgs(schema="b", module_name="m_b"))]

    extensions = [name for typ, name, _, _ in deploy(build) if typ == "postgresql:index/extension:Extension"]
    assert extensions == ["a-ext-vector"]


def test_two_components_sharing_one_history_are_refused(deploy):
    from llmemory_db import MigratedSchema, MigratedSchemaArgs

    def build():
        return [MigratedSchema("a", MigratedSchemaArgs(schema="a")), MigratedSchema("b", MigratedSchemaArgs(schema="b"))]

    with pytest.raises(pulumi.RunError, match="would share the history of module 'aword_memory'"):
        deploy(build)


@pytest.mark.parametrize("field,value,named", [
    ("schema", "bad-name", "Invalid value 'bad-name' for schema:"),
    ("runtime_roles", ["ok", "drop role"], "Invalid value 'drop role' for runtime_roles:"),
    ("extensions", ["vector;"], "Invalid value 'vector;' for extensions:"),
    ("module_name", "a b", "Invalid value 'a b' for module_name:"),
    ("lock_wait_timeout", -1, "Invalid value -1 for lock_wait_timeout:"),
    ("pool_mode", "sometimes", "Invalid value 'sometimes' for pool_mode: use one of auto, session, transaction"),
    ("migrations_dir", "nowhere", "nowhere does not exist"),
])
def test_invalid_arguments_name_the_argument(deploy, field, value, named):
    from llmemory_db import MigratedSchema, MigratedSchemaArgs
    with pytest.raises(pulumi.RunError) as info:
        deploy(lambda: [MigratedSchema("db", MigratedSchemaArgs(**{field: value}))])
    assert named in str(info.value) and "Remedy:" in str(info.value)


def test_migrations_resource_carries_settings_and_never_sql(deploy):
    from llmemory_db import Migrations, MigrationsArgs
    resources = by_name(deploy(lambda: [Migrations("m", MigrationsArgs(schema="s", lock_wait_timeout=0,
                                                                         statement_timeout=0))]))
    props = resources["m"][1]
    assert props["lock_wait_timeout"] == 0 and props["statement_timeout"] == 0 and props["lock_timeout"] == 2.0
    assert props["checksums"].keys() == {"001_a.sql"} and "CREATE TABLE" not in repr(props)
    assert props["host"] == "db.internal" and props["database"] == "app"


def test_each_components_migrations_wait_for_its_own_schema_and_every_extension(deploy):
    """Five components sharing extensions (the spec's pattern 3): the first creates each extension once; every
    component's migrations (and grants) wait for its own schema and for every extension, whoever created it."""
    from llmemory_db import MigratedSchema, MigratedSchemaArgs
    names = ["a", "b", "c", "d", "e"]
    registered = deploy(lambda: [MigratedSchema(n, MigratedSchemaArgs(
        schema=f"s_{n}", module_name=f"mod_{n}", extensions=["vector", "pgcrypto"], runtime_roles=["app"]))
        for n in names])
    resources = by_name(registered)
    assert [n for n in resources if n.endswith("-ext-vector")] == ["a-ext-vector"]
    assert [n for n in resources if n.endswith("-ext-pgcrypto")] == ["a-ext-pgcrypto"]
    for n in names:
        for child in (f"{n}-migrations", f"{n}-app-usage", f"{n}-app-tables"):
            deps = resources[child][2]
            assert {f"{n}-schema", "a-ext-vector", "a-ext-pgcrypto"} <= set(deps), (child, deps)
