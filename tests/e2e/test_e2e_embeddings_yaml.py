"""EmbeddingProvider through the Pulumi package (llmemory-db:index:EmbeddingProvider), from Pulumi YAML with the real
CLI: deployed after llmemory's migrations (its schema is the MigratedSchema's output), its table, registry row and
index made by the package's plugin; no change on the next preview; a bad value refused naming the property in
YAML's spelling (issue 22)."""
import re

import pytest

from tests.e2e.test_e2e_yaml import outputs, run, yaml_project
from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

RESOURCES = """
resources:
  memory:
    type: llmemory-db:MigratedSchema
    properties:
      schema: llmemory
      migrationsPackage: llmemory
      extensions: [vector, pgcrypto]
  minilm:
    type: llmemory-db:EmbeddingProvider
    properties:
      schema: ${memory.schemaName}
      providerId: local-minilm
      providerType: local
      modelName: all-MiniLM-L6-v2
      dimension: DIMENSION
      backfill: true
outputs:
  table: ${minilm.tableName}
  index: ${minilm.indexName}
  coverage: ${minilm.coverage}
  isDefault: ${minilm.isDefault}
"""


def test_yaml_deploys_an_embedding_provider_through_the_package(pg_server, bare_db, tmp_path):
    project = yaml_project(tmp_path / "proj", RESOURCES.replace("DIMENSION", "384"))
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name)
    result, printed, error = run(stack.up)
    assert not error, printed + error
    assert outputs(result) == {"table": "chunk_embeddings_all_minilm_l6_v2_384",
                               "index": "idx_chunk_embeddings_all_minilm_l6_v2_384_embedding", "coverage": 100,
                               "isDefault": False}
    assert "registered local-minilm in llmemory.embedding_providers (not the default)" in printed  # the plugin's log
    assert bare_db.sql("SELECT provider_id, table_name, dimension, is_default FROM llmemory.embedding_providers "
                       "WHERE provider_id = 'local-minilm'") == [
        ("local-minilm", "chunk_embeddings_all_minilm_l6_v2_384", 384, False)]
    assert bare_db.sql("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                       "'llmemory.idx_chunk_embeddings_all_minilm_l6_v2_384_embedding'::regclass") == [(True,)]
    _, printed, error = run(stack.preview, expect_no_changes=True)
    assert not error, printed + error

    (project / "Pulumi.yaml").write_text((project / "Pulumi.yaml").read_text().replace("dimension: 384",
                                                                                        "dimension: 3072"))
    _, printed, error = run(stack.preview)
    text = re.sub(r"\x1b\[[0-9;]*m", "", printed + error)
    assert error and "Invalid value 3072 for dimension: over hnsw's limit of 2,000 dimensions" in text, text
    assert "vectorType: halfvec" in text and "Traceback" not in text
