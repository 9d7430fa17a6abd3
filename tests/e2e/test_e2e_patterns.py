"""The spec's Pattern 2 (library usage): examples/library-usage deployed with the real CLI, from outside the repo."""
import shutil

import pytest

from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e


def test_library_component_contains_migrated_schema(pg_server, bare_db, tmp_path):
    name = bare_db.name
    project = tmp_path / "library-usage"
    shutil.copytree(h.ROOT / "examples" / "library-usage", project)
    # the repo's .venv has this repository installed as a package (pip install -e .)
    yaml = (project / "Pulumi.yaml").read_text().replace("virtualenv: venv", f"virtualenv: {h.VENV}")
    (project / "Pulumi.yaml").write_text(yaml)
    stack = h.stack(project, tmp_path / "backend", pg_server, name)
    result = stack.up(on_output=lambda _: None)
    assert result.outputs["applied"].value == ["001_complete_schema.sql", "001_document_analysis.sql"]
    assert {"documents", "document_chunks", "chunk_embeddings_local_minilm", "document_analysis"} <= \
        set(bare_db.tables("analyzer"))
    assert bare_db.sql("SELECT module_name, filename FROM public.schema_migrations ORDER BY 1") == [
        ("aword_memory", "001_complete_schema.sql"), ("document_analyzer", "001_document_analysis.sql")]
    urns = [r["urn"] for r in stack.export_stack().deployment["resources"]]
    assert any("analyzer:index:DocumentAnalyzer$llmemory-db:index:MigratedSchema::analyzer-memory" in u
               for u in urns), urns
    assert h.changes(stack.preview()) == {}
