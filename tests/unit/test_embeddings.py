"""Embedding providers without a database (issue 22): the names llmemory derives, every bad argument named (in the
caller's spelling), the graph estimate, and the component's wiring under Pulumi's mocks (it waits for the
migrations; a second default in one program is refused naming ``default``). Against PostgreSQL:
tests/db/test_embeddings.py; through `pulumi up` with the real application: tests/e2e/test_e2e_embeddings.py."""
from __future__ import annotations

import json

import pulumi
import pytest
from pulumi.errors import InputPropertiesError

from llmemory_db.migrate import embedding_ops
from llmemory_db.migrate.embedding_errors import EmbeddingSettingError
from llmemory_db.migrate.embeddings import (EmbeddingSettings, auto_memory, index_name, llmemory_table_name,
                                            memory_bytes)
from tests.helpers.mocks import by_name

MINILM = dict(schema="llmemory", provider_id="local-minilm", provider_type="local", model_name="all-MiniLM-L6-v2",
              dimension=384)


@pytest.fixture(scope="module")
def llmemory_providers():
    """llmemory 0.5.0's own embedding_providers module (installed in .venv for its migrations, without its
    dependencies: loaded without the package's __init__, which needs tiktoken; it needs only config and exceptions)."""
    import importlib
    import sys
    import types
    from pathlib import Path

    import llmemory_db.migrate.source as source
    folder = Path(source.find_package("llmemory").folder).parent
    saved = {k: v for k, v in sys.modules.items() if k == "llmemory" or k.startswith("llmemory.")}
    package = types.ModuleType("llmemory")
    package.__path__ = [str(folder)]
    sys.modules["llmemory"] = package
    try:
        config = importlib.import_module("llmemory.config")
        providers = importlib.import_module("llmemory.embedding_providers")
        yield config.EmbeddingProviderConfig, providers.EmbeddingProviderFactory
    finally:
        for key in [k for k in sys.modules if k == "llmemory" or k.startswith("llmemory.")]:
            del sys.modules[key]
        sys.modules.update(saved)


@pytest.mark.parametrize("provider_type, model, dimension", [
    ("local", "all-MiniLM-L6-v2", 384), ("local", "sentence-transformers/all-mpnet-base-v2", 768),
    ("local", "BAAI/bge-small-en-v1.5", 384), ("openai", "text-embedding-3-large", 3072),
    ("local", "intfloat/e5-large-v2", 1024)])
def test_the_table_name_is_derived_exactly_as_llmemory_derives_it(llmemory_providers, provider_type, model,
                                                                   dimension):
    EmbeddingProviderConfig, EmbeddingProviderFactory = llmemory_providers
    config = EmbeddingProviderConfig(provider_type=provider_type, model_name=model, dimension=dimension,
                                     api_key="sk-unused")
    theirs = EmbeddingProviderFactory.create_provider("p", config).get_table_name()
    assert llmemory_table_name(provider_type, model, dimension) == theirs
    assert EmbeddingSettings(**dict(MINILM, provider_type=provider_type, model_name=model, dimension=dimension,
                                    vector_type="halfvec" if dimension > 2000 else "vector")).table == theirs


def test_the_index_name_is_llmemorys_cut_to_63_bytes_as_the_server_cuts_it():
    assert EmbeddingSettings(**MINILM).index == "idx_chunk_embeddings_all_minilm_l6_v2_384_embedding"
    assert index_name("t" * 63) == ("idx_" + "t" * 63)[:63]
    assert EmbeddingSettings(**MINILM, table_name="embeddings_openai_3_small").index == \
        "idx_embeddings_openai_3_small_embedding"  # the index llmemory's own migration makes


def errors_of(**changes):
    return EmbeddingSettings.problems_of(dict(MINILM, **changes))


@pytest.mark.parametrize("changes, setting, words", [
    ({"dimension": 3072}, "dimension", "over hnsw's limit of 2,000 dimensions for vector columns"),
    ({"dimension": 3072, "index_type": "ivfflat"}, "dimension", "over ivfflat's limit of 2,000"),
    ({"dimension": 4001, "vector_type": "halfvec"}, "dimension", "over hnsw's limit of 4,000 dimensions for halfvec"),
    ({"dimension": 0}, "dimension", "a whole number from 1 to 16,000"),
    ({"operator_class": "halfvec_cosine_ops"}, "operator_class", "the column is vector"),
    ({"operator_class": "cosine;drop"}, "operator_class", "an operator class name"),
    ({"m": 40, "ef_construction": 64}, "ef_construction", "at least 2 x m (80)"),
    ({"m": 1}, "m", "from 2 to 100"),
    ({"provider_type": "cohere"}, "provider_type", "use one of openai, local"),
    ({"vector_type": "bit"}, "vector_type", "use one of vector, halfvec"),
    ({"provider_id": "my provider"}, "provider_id", "letters, digits"),
    ({"schema": "Bad-Schema"}, "schema", "a schema name"),
    ({"table_name": "x" * 64}, "table_name", "at most 63 characters"),
    ({"min_coverage": 101}, "min_coverage", "a percentage from 0 to 100"),
    ({"maintenance_work_mem": "lots"}, "maintenance_work_mem", "a PostgreSQL memory size"),
    ({"backfill_batch_size": 0}, "backfill_batch_size", "from 1 to 100,000"),
    ({"lock_timeout": -1}, "lock_timeout", "seconds >= 0"),
    ({"runtime_roles": ["ok", "drop role"]}, "runtime_roles[1]", "a role name"),
    ({"model_name": ""}, "model_name", "1 to 200 printable characters"),
])
def test_every_bad_argument_is_an_error_naming_it(changes, setting, words):
    found = errors_of(**changes)
    assert [e.setting for e in found] == [setting], [str(e) for e in found]
    assert words in str(found[0]) and "Remedy:" in str(found[0])
    with pytest.raises(EmbeddingSettingError):
        EmbeddingSettings(**dict(MINILM, **changes))


def test_a_dimension_over_the_vector_limit_suggests_halfvec_in_the_callers_spelling():
    error = errors_of(dimension=3072)[0]
    assert "vector_type='halfvec'" in error.render("python") and "up to 4,000 dimensions" in str(error)
    assert "vectorType: halfvec" in error.render("yaml") and "for dimension:" in error.render("yaml")
    assert EmbeddingSettings(**dict(MINILM, dimension=3072, vector_type="halfvec")).column_type == "halfvec(3072)"
    over_both = errors_of(dimension=5000)[0]  # halfvec cannot index it either: no halfvec suggestion
    assert "halfvec" not in over_both.remedy and "fewer dimensions" in over_both.remedy


def test_missing_required_arguments_are_named():
    found = EmbeddingSettings.problems_of({"schema": "llmemory", "provider_id": "p"})
    assert {e.setting for e in found} == {"provider_type", "model_name", "dimension"}


def test_an_unknown_operator_class_is_refused_at_preview_without_a_database():
    settings = EmbeddingSettings(**MINILM, operator_class="vector_hamming_ops")
    result = embedding_ops.preflight(settings)
    assert [getattr(e, "setting", "") for e in result.failures] == ["operator_class"]
    assert "vector_cosine_ops, vector_ip_ops, vector_l1_ops, vector_l2_ops" in str(result.failures[0])
    assert embedding_ops.preflight(EmbeddingSettings(**MINILM, operator_class="vector_l2_ops")).failures == []


def test_the_graph_estimate_is_pgvectors_measured_size():
    # bytes per element measured on pgvector 0.8.6 (maintenance_work_mem / "after N tuples"): 2,250 for
    # vector(384) m=16, 6,882 for vector(1536) m=16, 1,478 for halfvec(384) m=16, 2,761 for vector(384) m=32
    for changes, measured in (({}, 2250), ({"dimension": 1536}, 6882), ({"vector_type": "halfvec"}, 1478),
                              ({"m": 32}, 2761)):
        estimate = EmbeddingSettings(**dict(MINILM, **changes)).graph_bytes(1)
        assert abs(estimate - measured) / measured < 0.01, (changes, estimate)
    assert memory_bytes("64MB") == 64 * 1024 ** 2 and memory_bytes("1024") == 1024 ** 2
    assert auto_memory(10 * 1024 ** 2, 64 * 1024 ** 2) is None          # fits: the server's setting stays
    assert auto_memory(220 * 1024 ** 2, 64 * 1024 ** 2) == "275MB"     # the estimate + 25%
    assert auto_memory(5 * 1024 ** 3, 64 * 1024 ** 2) == "1024MB"      # at most 1 GB


def test_props_round_trip_and_identity_changes():
    settings = EmbeddingSettings(**MINILM, runtime_roles=("app",), maintenance_work_mem="1GB")
    props = json.loads(json.dumps(settings.to_props()))
    assert EmbeddingSettings.from_props(props) == settings
    assert embedding_ops.identity_changes(props, dict(props, m=32, default=True)) == []
    assert embedding_ops.identity_changes(props, dict(props, dimension=768)) == ["dimension"]
    assert embedding_ops.identity_changes(props, dict(props, table_name="other")) == ["table_name"]
    assert embedding_ops.identity_changes(props, dict(props, table_name=settings.table)) == []  # the same table
    error = embedding_ops.identity_error("dimension", 384, 768)
    assert "dimension cannot change in place (384 -> 768)" in str(error) and "second EmbeddingProvider" in str(error)


# --------------------------------------------------------------------------- the component, under mocks
def program(*providers):
    from llmemory_db import EmbeddingProvider, EmbeddingProviderArgs, MigratedSchema, MigratedSchemaArgs

    def build():
        db = MigratedSchema("db", MigratedSchemaArgs(schema="mem"))
        for name, extra in providers:
            EmbeddingProvider(name, EmbeddingProviderArgs(**dict(MINILM, schema=db.schema_name, **extra)))
        return [db]
    return build


def test_the_provider_waits_for_the_migrations_and_carries_its_settings(deploy):
    resources = by_name(deploy(program(("minilm", {"backfill": True}))))
    assert resources["minilm"][0] == "llmemory-db:index:EmbeddingProvider"
    typ, props, depends = resources["minilm-table"]
    assert typ == "pulumi-python:dynamic:Resource"
    assert "db-migrations" in depends  # through the schema output: it depends on the migrations
    assert (props["schema"], props["provider_id"], props["dimension"], props["backfill"]) == \
        ("mem", "local-minilm", 384, True)
    assert props["conflict"] == "" and props["host"] == "db.internal"


def test_a_second_default_in_one_program_is_refused_naming_default(deploy):
    resources = by_name(deploy(program(("a", {"default": True}),
                                       ("b", {"default": True, "provider_id": "other", "model_name": "x"}))))
    conflicts = sorted(resources[n][1]["conflict"] for n in ("a-table", "b-table"))
    assert conflicts[0] == ""
    assert "are both default=True in schema mem: llmemory has one default provider" in conflicts[1]


def test_two_providers_with_one_provider_id_are_refused(deploy):
    resources = by_name(deploy(program(("a", {}), ("b", {"model_name": "x"}))))
    assert "both declare provider id 'local-minilm' in schema mem" in resources["b-table"][1]["conflict"]


def test_a_bad_argument_fails_the_program_naming_it(deploy):
    with pytest.raises(pulumi.RunError) as info:
        deploy(program(("big", {"dimension": 3072})))
    assert "Invalid value 3072 for dimension" in str(info.value) and "vector_type='halfvec'" in str(info.value)


# --------------------------------------------------------------------------- the package
def test_the_package_serves_the_provider_and_its_table(deploy):
    from llmemory_db.package import PACKAGE, components
    from llmemory_db.package.server import RESOURCE_PROVIDERS, PackageProvider
    schema = json.loads(PackageProvider().schema)
    resource = schema["resources"][f"{PACKAGE}:index:EmbeddingProvider"]
    assert sorted(resource["requiredInputs"]) == ["dimension", "modelName", "providerId", "providerType", "schema"]
    assert "plain" not in resource["inputProperties"]["schema"]  # an output of a MigratedSchema
    assert set(resource["properties"]) >= {"tableName", "indexName", "coverage", "isDefault"}
    assert resource["inputProperties"]["vectorType"]["description"].startswith("The column type: vector")
    assert f"{PACKAGE}:index:EmbeddingProviderTable" in RESOURCE_PROVIDERS

    def build():
        db = components.MigratedSchema("db", {"schema": "mem"})
        components.EmbeddingProvider("minilm", dict(MINILM, schema=db.schema_name))
        return [db]
    resources = by_name(deploy(build))
    assert resources["minilm-table"][0] == f"{PACKAGE}:index:EmbeddingProviderTable"
    assert "db-migrations" in resources["minilm-table"][2] and "__provider" not in resources["minilm-table"][1]


@pytest.mark.parametrize("args, path", [
    ({"dimension": 3072}, "dimension"), ({"vectorType": None, "vector_type": "bit"}, "vectorType"),
    ({"runtime_roles": ["a", "b c"]}, "runtimeRoles[1]"), ({"min_coverage": 200}, "minCoverage")])
def test_package_arguments_fail_naming_the_property(args, path):
    from llmemory_db.package import components
    values = {k: v for k, v in dict(MINILM, **args).items() if v is not None}
    with pytest.raises(InputPropertiesError) as caught:
        components.embedding_args(values)
    errors = {e["property_path"]: e["reason"] for e in caught.value.errors}
    assert list(errors) == [path], errors
    if path == "dimension":
        assert "vectorType: halfvec" in errors[path]
