"""The import name, with the real CLI: a project with its own `components/` package uses llmemory_db, and a stack
whose provider was pickled as `components.provider.MigrationsProvider` (written before the rename) refreshes and
destroys: with the old module in the project folder (this repository's own `components/`, or the README's one-line
shim), and without it once one `pulumi up` rewrote the reference (llmemory_db/compat.py)."""
import base64
import json
import os
import shutil
import subprocess

import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e


def test_project_with_its_own_components_package(pg_server, bare_db, tmp_path):
    project = tmp_path / "own-components"
    shutil.copytree(h.ROOT / "examples" / "own-components", project)
    yaml = (project / "Pulumi.yaml").read_text().replace("virtualenv: venv", f"virtualenv: {h.VENV}")
    (project / "Pulumi.yaml").write_text(yaml)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name)
    result = stack.up(on_output=lambda _: None)
    assert result.outputs["applied"].value == ["001_notes.sql"]
    assert result.outputs["components_package"].value == str(project / "components" / "__init__.py")
    assert bare_db.tables("notes") == ["notes", "schema_migrations"]
    assert bare_db.history("notes.schema_migrations", "notes")[0][0] == "001_notes.sql"
    assert h.changes(stack.preview()) == {}
    stack.destroy(on_output=lambda _: None)
    assert bare_db.tables("notes") == ["notes", "schema_migrations"]  # data kept


OLD_PROGRAM = """
# a stack as the package wrote it before its rename: the provider pickled by reference as components.provider.*
import sys
import types

import pulumi
import llmemory_db.migrations
from llmemory_db import Migrations, MigrationsArgs
from llmemory_db.provider import MigrationsProvider as Current


class MigrationsProvider(Current):
    pass


MigrationsProvider.__module__ = "components.provider"
old = types.ModuleType("components.provider")
old.MigrationsProvider = MigrationsProvider
package = types.ModuleType("components")  # the 0.1 package, as it was before the rename
package.__path__, package.provider = [], old
sys.modules["components"], sys.modules["components.provider"] = package, old
llmemory_db.migrations.MigrationsProvider = MigrationsProvider
m = Migrations("m", MigrationsArgs(migrations_dir="migrations", drop_on_destroy=True))
pulumi.export("applied", m.applied)
"""

NEW_PROGRAM = """
import pulumi
from llmemory_db import Migrations, MigrationsArgs
m = Migrations("m", MigrationsArgs(migrations_dir="migrations", drop_on_destroy=True))
pulumi.export("applied", m.applied)
"""


def resource_outputs(project, env, name="test"):
    """The migrations resource's outputs in the state (secrets shown)."""
    exported = subprocess.run(["pulumi", "stack", "export", "--show-secrets", "-s", name], cwd=project, env=env,
                              capture_output=True, text=True, check=True).stdout
    return next(r for r in json.loads(exported)["deployment"]["resources"] if r["urn"].endswith("::m"))["outputs"]


def pickled_provider(project, env):
    provider = resource_outputs(project, env)["__provider"]
    return base64.b64decode(json.loads(provider["plaintext"]) if isinstance(provider, dict) else provider)


# the README's Troubleshooting entry: the old module path, in the project folder
SHIM = "from llmemory_db.provider import ExtensionCheckProvider, MigrationsProvider  # noqa: F401\n"


def test_stack_pickled_as_components_provider_refreshes_and_destroys(pg_server, bare_db, tmp_path):
    from llmemory_db.migrate.files import checksum
    files = {"001_a.sql": "CREATE TABLE a (id int);\n"}
    project = h.write_project(tmp_path / "proj", OLD_PROGRAM, files)

    def shim(present):  # the old module in the project folder (as this repository's components/ is for its stacks)
        if present:
            (project / "components").mkdir()
            (project / "components" / "__init__.py").write_text("")
            (project / "components" / "provider.py").write_text(SHIM)
        else:
            shutil.rmtree(project / "components")

    shim(True)  # 0.1's world: the providers load components.provider
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name)
    env = {**os.environ, **h.pulumi_env(tmp_path / "backend")}
    stack.up(on_output=lambda _: None)
    blob = pickled_provider(project, env)
    assert b"components.provider" in blob and b"llmemory_db.provider" not in blob
    (project / "__main__.py").write_text(NEW_PROGRAM)  # the code as it is now; the state keeps the old reference
    bare_db.sql("DELETE FROM public.schema_migrations")  # history drift, so that read() has something to find
    shim(False)  # no `components` anywhere (the wheel ships none): the pickled provider cannot load
    with pytest.raises(auto.errors.CommandError, match="No module named 'components'"):
        stack.refresh(on_output=lambda _: None)
    shim(True)  # the README's Troubleshooting fix
    stack.refresh(on_output=lambda _: None)  # read() runs the provider pickled in the state
    assert resource_outputs(project, env)["applied"] == []  # the live history, read by the old provider
    bare_db.sql("INSERT INTO public.schema_migrations (filename, checksum, module_name) VALUES (%s, %s, %s)",
                "001_a.sql", checksum(files["001_a.sql"]), "aword_memory")
    stack.refresh(on_output=lambda _: None)
    shim(False)
    # one `up` (it never loads the pickled provider) rewrites the reference
    lines = []
    preview = stack.preview(on_output=lines.append)
    assert h.changes(preview) == {"update": 1}
    assert "rewrites it to llmemory_db.provider" in "\n".join(lines)
    stack.up(on_output=lambda _: None)
    blob = pickled_provider(project, env)
    assert b"llmemory_db.provider" in blob and b"components.provider" not in blob
    assert h.changes(stack.preview(on_output=lambda _: None)) == {}
    lines = []
    stack.refresh(on_output=lines.append)  # no components/ in the project any more
    stack.destroy(on_output=lines.append)  # delete() too: drop_on_destroy forgets the history
    assert bare_db.history() == []
    assert "kept the tables" not in "\n".join(lines) and "forgot the history" in "\n".join(lines)
