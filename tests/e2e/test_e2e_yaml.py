"""llmemory-db as a Pulumi package, end to end with the real CLI: the YAML example (llmemory's own migrations),
a migrations folder from YAML, a Python program through the generated SDK next to the native import, bad input
from YAML, the plugin's launcher and its engine watchdog."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from pulumi import automation as auto

from tests.helpers import db as dbs
from tests.helpers import stacks as h
from tests.helpers.faults import SLOW, backend_gone, make_slow, sleeping_backend
from tests.helpers.mocks import described

pytestmark = pytest.mark.e2e

PLUGIN = h.ROOT / "plugin"
LAUNCHER = PLUGIN / "pulumi-resource-llmemory-db"
EXAMPLE = h.ROOT / "examples" / "yaml-consumer"
FILES = {
    "001_notes.sql": "CREATE TABLE IF NOT EXISTS {{tables.notes}} (\n    id serial PRIMARY KEY,\n"
                     "    body text NOT NULL\n);\n"
                     "CREATE INDEX IF NOT EXISTS idx_notes_body ON {{tables.notes}} (body);\n",
    "002_tags.sql": "CREATE TABLE IF NOT EXISTS {{tables.tags}} (\n    note_id int REFERENCES {{tables.notes}}(id),\n"
                    "    tag text NOT NULL\n);\n",
}
NEW_FILE = {"003_archive.sql": "ALTER TABLE {{tables.notes}} ADD COLUMN IF NOT EXISTS archived boolean "
                               "DEFAULT false;\n"}


def yaml_project(directory: Path, resources: str = "", from_example: bool = False,
                 migrations: dict | None = None) -> Path:
    """A YAML project that declares this checkout's plugin folder (the example's, or ``resources``)."""
    directory.mkdir(parents=True, exist_ok=True)
    if from_example:
        text = (EXAMPLE / "Pulumi.yaml").read_text()
        assert "llmemory-db: ../../plugin" in text
        text = text.replace("llmemory-db: ../../plugin", f"llmemory-db: {PLUGIN}")
    else:
        text = f"name: yaml-e2e\nruntime: yaml\npackages:\n  llmemory-db: {PLUGIN}\n" + textwrap.dedent(resources)
    (directory / "Pulumi.yaml").write_text(text)
    if migrations:
        folder = directory / "migrations"
        folder.mkdir(exist_ok=True)
        for name, sql in migrations.items():
            (folder / name).write_text(sql)
    return directory


def bare_stack(project: Path, backend: Path) -> auto.Stack:
    """A stack without any config (its preview fails before anything connects)."""
    backend.mkdir(parents=True, exist_ok=True)
    options = auto.LocalWorkspaceOptions(work_dir=str(project), env_vars=h.pulumi_env(backend),
                                         pulumi_command=auto.PulumiCommand(root=str(h.toolchain_bin().parent)))
    return auto.create_or_select_stack(stack_name="test", work_dir=str(project), opts=options)


def run(operation, *args, **kwargs):
    """(result or None, everything the CLI printed, error text or "")."""
    lines: list = []
    try:
        return operation(*args, on_output=lines.append, **kwargs), "\n".join(lines), ""
    except auto.CommandError as exc:
        return None, "\n".join(lines), str(exc)


def outputs(result) -> dict:
    return {key: value.value for key, value in result.outputs.items()}


@pytest.fixture
def role(pg_server):
    """A runtime role for the grants. Roles are cluster-wide: request it before ``bare_db``, so that it is dropped
    after the database that holds its grants."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{name}" LOGIN')
    yield name
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_yaml_example_deploys_llmemory_through_the_package(pg_server, role, bare_db, tmp_path):
    """examples/yaml-consumer as it is: llmemory 0.5.0's own files, schema-isolation mode, grants; no change on
    the next preview; destroy keeps the data."""
    project = yaml_project(tmp_path / "example", from_example=True)
    backend = tmp_path / "backend"
    stack = h.stack(project, backend, pg_server, bare_db.name)
    stack.set_config("runtimeRoles[0]", auto.ConfigValue(role), path=True)

    result, printed, error = run(stack.up)
    assert not error, error
    out = outputs(result)
    assert out["applied"] == ["001_complete_schema.sql", "002_upsert_identity_contract.sql"]
    assert (out["schemaName"], out["moduleName"], out["historyTable"], out["pending"]) == \
        ("llmemory", "llmemory", "llmemory.schema_migrations", [])
    assert out["packageVersion"] == "llmemory 0.5.0" and re.fullmatch(r"[0-9a-f]{16}", out["fingerprint"])
    assert "applied 001_complete_schema.sql, 002_upsert_identity_contract.sql" in printed  # the provider's log

    # the catalog: schema, extensions, history (pgdbm's layout), tables, grants
    history = bare_db.history("llmemory.schema_migrations", module="llmemory")
    assert dict(history) == out["checksums"]
    assert {"documents", "document_chunks"} <= set(bare_db.tables("llmemory"))
    assert {r[0] for r in bare_db.sql("SELECT extname FROM pg_extension")} >= {"vector", "pgcrypto"}
    privileges = bare_db.sql(
        "SELECT has_schema_privilege(%s, 'llmemory', 'USAGE'), "
        "has_table_privilege(%s, 'llmemory.documents', 'SELECT, INSERT, UPDATE, DELETE'), "
        "has_table_privilege(%s, 'llmemory.schema_migrations', 'SELECT'), "
        "has_table_privilege(%s, 'llmemory.schema_migrations', 'INSERT'), "
        "has_schema_privilege(%s, 'llmemory', 'CREATE')", role, role, role, role, role)[0]
    assert privileges == (True, True, True, False, False)

    _, printed, error = run(stack.preview, expect_no_changes=True)
    assert not error, error
    state = h.state_text(backend)
    assert pg_server.password not in state and '"password": "' not in state  # only its ciphertext

    _, printed, error = run(stack.destroy)
    assert not error, error
    assert "kept the tables and history" in printed
    assert bare_db.history("llmemory.schema_migrations", module="llmemory") == history
    assert {"documents", "document_chunks"} <= set(bare_db.tables("llmemory"))


def _sdk_site(tmp_path: Path) -> Path:
    """The package's Python SDK (tools.sdk: Pulumi's generator) on a path of its own, with the version metadata
    pip would write (the SDK reads its version from it). Also generates the TypeScript and Go SDKs."""
    from tools import sdk
    if not shutil.which("go") and not Path("/usr/local/go/bin/go").exists():
        pytest.skip("no Go to build toolchain/sdkgen")
    generated = {lang: sdk.generate(lang, tmp_path / f"sdk-{lang}") for lang in sdk.LANGUAGES}
    assert "export class MigratedSchema extends pulumi.ComponentResource" in \
        (generated["nodejs"] / "migratedSchema.ts").read_text()
    assert "func NewMigratedSchema(ctx *pulumi.Context" in \
        (generated["go"] / "llmemorydb" / "migratedSchema.go").read_text()
    assert (generated["go"] / "go.mod").read_text().startswith("module example.com/pulumi-llmemory-db/sdk/go\n")
    site = tmp_path / "site"
    shutil.copytree(generated["python"] / "pulumi_llmemory_db", site / "pulumi_llmemory_db")
    meta = site / "pulumi_llmemory_db-0.2.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: pulumi_llmemory_db\nVersion: 0.2.0\n")
    return site


PY_PACKAGE = """
import pulumi
import pulumi_llmemory_db as llmemory_db   # the generated SDK: a remote component, served by the plugin
db = llmemory_db.MigratedSchema("db", llmemory_db.MigratedSchemaArgs(
    schema="app", migrations_dir="migrations", extensions=[], runtime_roles=[pulumi.Config().require("role")]))
pulumi.export("fingerprint", db.fingerprint)
pulumi.export("applied", db.applied)
"""
PY_NATIVE = """
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs   # the Python-native component (dynamic resources)
db = MigratedSchema("db", MigratedSchemaArgs(schema="app", migrations_dir="migrations", extensions=[],
                                             runtime_roles=[pulumi.Config().require("role")]))
pulumi.export("fingerprint", db.fingerprint)
pulumi.export("applied", db.applied)
"""
YAML_FOLDER = """\
config:
  role:
    type: string
  pgPort:
    type: integer
  pgPassword:
    type: string
resources:
  db:
    type: llmemory-db:MigratedSchema
    properties:
      schema: app
      migrationsDir: migrations
      extensions: []
      runtimeRoles: ["${role}"]
      connection:          # the rest from the stack's postgresql: config
        port: ${pgPort}
        password: ${pgPassword}
outputs:
  fingerprint: ${db.fingerprint}
  applied: ${db.applied}
"""


def _catalog(database) -> list:
    """What the migrations made, as the catalog shows it: columns, indexes, grants."""
    return (database.sql("SELECT table_name, column_name, data_type, column_default FROM information_schema.columns "
                         "WHERE table_schema = 'app' ORDER BY 1, 2")
            + database.sql("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'app' ORDER BY 1")
            + database.sql("SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                           "WHERE table_schema IN ('app', 'public') AND grantee LIKE 'app\\_%%' ORDER BY 1, 2"))


def test_yaml_python_package_and_native_agree_then_yaml_lifecycle(pg_server, role, bare_db, tmp_path):
    """One migrations folder three ways, each in its own database: YAML (with `connection`) and Python through the
    package, Python native. Same database (fingerprint, catalog, history). Then from YAML: a new file is named by
    the preview and applied by up; an edited applied file fails the preview with the Python path's message."""
    others = [dbs.create(pg_server, prefix="e2e") for _ in range(2)]
    try:
        site = _sdk_site(tmp_path)
        backend = tmp_path / "backend"
        yaml_dir = yaml_project(tmp_path / "yaml", YAML_FOLDER, migrations=FILES)
        package_dir = h.write_project(tmp_path / "py-package", PY_PACKAGE, FILES, name="py-package")
        with (package_dir / "Pulumi.yaml").open("a") as f:  # where the engine finds the package's plugin
            f.write(f"plugins:\n  providers:\n    - name: llmemory-db\n      path: {PLUGIN}\n")
        native_dir = h.write_project(tmp_path / "py-native", PY_NATIVE, FILES, name="py-native")
        stacks = {}
        for label, directory, database in (("yaml", yaml_dir, bare_db), ("package", package_dir, others[0]),
                                           ("native", native_dir, others[1])):
            stacks[label] = h.stack(directory, backend, pg_server, database.name, config={"role": role})
            # the Python programs: this checkout's llmemory_db, and the generated SDK
            stacks[label].workspace.env_vars["PYTHONPATH"] = f"{h.ROOT}{os.pathsep}{site}"
        # YAML through `connection`: the stack's port and password are wrong, so every resource (pulumi-postgresql's
        # too) must use the connection's; the password arrives as a secret
        stacks["yaml"].set_all_config({
            "pgPort": auto.ConfigValue(str(pg_server.port)),
            "pgPassword": auto.ConfigValue(pg_server.password, secret=True),
            "postgresql:port": auto.ConfigValue("1"),
            "postgresql:password": auto.ConfigValue("wrong-password", secret=True)})
        with ThreadPoolExecutor(len(stacks)) as pool:  # three CLIs at once: the test tier's time
            runs = dict(zip(stacks, pool.map(lambda st: run(st.up), stacks.values())))
        results = {}
        for label, (result, printed, error) in runs.items():
            assert not error, f"{label}: {error}"
            assert "Traceback" not in printed
            results[label] = outputs(result)
        databases = {"yaml": bare_db, "package": others[0], "native": others[1]}
        assert results["yaml"] == results["package"] == results["native"], results
        assert results["yaml"]["applied"] == sorted(FILES)
        catalogs = {label: _catalog(database) for label, database in databases.items()}
        assert catalogs["yaml"] == catalogs["package"] == catalogs["native"] and catalogs["yaml"]
        histories = {label: database.history() for label, database in databases.items()}
        assert histories["yaml"] == histories["package"] == histories["native"]
        state = h.state_text(backend)
        assert pg_server.password not in state and '"password": "' not in state  # secret everywhere

        def edit_and_preview(label):
            target = Path(stacks[label].workspace.work_dir) / "migrations" / "001_notes.sql"
            target.write_text(target.read_text() + "-- edited\n")
            return run(stacks[label].preview, diff=True)

        with ThreadPoolExecutor(1) as pool:
            # the Python-native path: an applied file edited (its preview runs meanwhile: the tier's time)
            native = pool.submit(edit_and_preview, "native")

            # YAML: a new file is named in the preview, then applied by up
            (yaml_dir / "migrations" / "003_archive.sql").write_text(NEW_FILE["003_archive.sql"])
            result, printed, error = run(stacks["yaml"].preview)
            assert not error, error
            assert "1 pending: 003_archive.sql" in printed and h.changes(result) == {"update": 1}  # provider's log
            assert "[diff: ~checksums" in printed
            result, printed, error = run(stacks["yaml"].up)
            assert not error, error
            assert outputs(result)["applied"] == sorted(FILES) + ["003_archive.sql"]
            assert "applied 003_archive.sql" in printed and [r[0] for r in bare_db.history()][-1] == "003_archive.sql"

            # an applied file edited: the same message from YAML (package) as from the Python-native path
            runs = {"yaml": edit_and_preview("yaml"), "native": native.result()}
        messages = {}
        for label, (_, printed, error) in runs.items():
            assert error, f"{label}: the preview should fail"
            messages[label] = _engine_message(printed + error, "001_notes.sql")
        assert "Migration 001_notes.sql has been modified after being applied" in messages["yaml"]
        # the same message, each naming the setting as its caller writes it: a YAML property, a Python argument
        assert 'acceptEdits: ["001_notes.sql"]' in messages["yaml"]
        assert "accept_edits=['001_notes.sql']" in messages["native"]
        assert messages["yaml"].replace('acceptEdits: ["001_notes.sql"]', "X").replace("acceptEdits", "Y") == \
            messages["native"].replace("accept_edits=['001_notes.sql']", "X").replace("accept_edits", "Y")
        assert "Traceback" not in "".join(runs["yaml"][1:])
    finally:
        for database in others:
            database.drop()


def _engine_message(text: str, filename: str) -> str:
    """The engine's error (from 'Migration <file> has been modified' through its Remedy line)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    match = re.search(rf"Migration {re.escape(filename)} has been modified after being applied\n"
                      r"(?:.*\n)*?\s*Remedy: [^\n]*", text)
    assert match, text
    return "\n".join(line.strip() for line in match.group(0).splitlines())


BAD_INPUT = {
    "missing": ("      moduleName: notes\n", "schema", "Missing required property 'schema'"),
    "invalid": ('      schema: "Bad;Name"\n', "schema", "Invalid value 'Bad;Name' for schema"),
    "wrong type": ("      schema: notes\n      extensions: 5\n", "extensions",
                   "Cannot assign type 'number' to type 'List<string>'"),
}


def test_bad_input_from_yaml_fails_the_preview_naming_the_property(tmp_path):
    """Missing, invalid, of the wrong type: each preview fails naming the property (the YAML host checks types
    and required properties against the schema, the plugin checks values), never with a Python traceback."""
    def preview(case):
        properties = BAD_INPUT[case][0]
        folder = tmp_path / case.replace(" ", "-")
        project = yaml_project(folder / "proj", "resources:\n  db:\n"
                               "    type: llmemory-db:MigratedSchema\n    properties:\n" + properties)
        stack = bare_stack(project, folder / "backend")
        _, printed, error = run(stack.preview)
        return re.sub(r"\x1b\[[0-9;]*m", "", printed + error), bool(error)

    with ThreadPoolExecutor(2) as pool:
        texts = dict(zip(BAD_INPUT, pool.map(preview, BAD_INPUT)))
    for case, (text, failed) in texts.items():
        _, prop, words = BAD_INPUT[case]
        assert failed and words in text and prop in text, f"{case}: {text}"
        assert "Traceback" not in text and 'File "' not in text, f"{case}: {text}"


def test_plugin_without_its_virtualenv_says_how_to_create_it(tmp_path):
    """A checkout without .venv (the launcher looks for <repo>/.venv): one message, how to make it."""
    repo = tmp_path / "checkout"
    shutil.copytree(PLUGIN, repo / "plugin")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(f"name: novenv\nruntime: yaml\npackages:\n  llmemory-db: {repo / 'plugin'}\n"
                                         "resources:\n  db:\n    type: llmemory-db:MigratedSchema\n"
                                         "    properties:\n      schema: notes\n")
    stack = bare_stack(project, tmp_path / "backend")
    _, printed, error = run(stack.preview)
    text = printed + error
    assert f"no virtualenv at {repo}/.venv: create it with 'make venv' in {repo}" in text, text
    assert "LLMEMORY_DB_PYTHON" in text and "Traceback" not in text
    # and a LLMEMORY_DB_PYTHON that is not there
    done = subprocess.run([str(repo / "plugin" / LAUNCHER.name), "127.0.0.1:1"], capture_output=True, text=True,
                          env={**os.environ, "LLMEMORY_DB_PYTHON": str(tmp_path / "nope" / "python")})
    assert done.returncode == 1 and "is not an executable Python" in done.stderr


def test_get_schema_from_the_plugin_describes_every_property(tmp_path):
    env = {**os.environ, **h.pulumi_env(tmp_path / "backend"), "PULUMI_HOME": os.environ.get("PULUMI_HOME", "")}
    env = {k: v for k, v in env.items() if v}
    done = subprocess.run([str(h.toolchain_bin() / "pulumi"), "package", "get-schema", str(LAUNCHER)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["name"] == "llmemory-db" and "llmemory-db:index:MigratedSchema" in schema["resources"]
    assert [path for path, prop in described(schema) if not prop.get("description")] == []


def test_sigkill_of_pulumi_up_ends_the_plugin_and_the_migration_rolls_back(pg_server, bare_db, tmp_path):
    """The engine watchdog runs in the package's plugin too: `pulumi up` of a YAML program SIGKILLed in the middle
    of a migration (only the CLI: its plugins live in process groups of their own) -> the plugin exits, its
    connection closes, the server rolls the migration back; what committed before stays."""
    project = yaml_project(tmp_path / "proj", "resources:\n  db:\n    type: llmemory-db:MigratedSchema\n"
                           "    properties:\n      schema: \"\"\n      migrationsDir: migrations\n"
                           "      extensions: []\n",
                           migrations={"001_a.sql": "CREATE TABLE a (id int);\n",
                                       "002_b.sql": "CREATE TABLE b (id int);\n" + SLOW})
    backend = tmp_path / "backend"
    h.stack(project, backend, pg_server, bare_db.name)
    make_slow(bare_db.dsn, 60)
    proc = subprocess.Popen([str(h.toolchain_bin() / "pulumi"), "up", "--yes", "--skip-preview", "-s", "test"],
                            cwd=project, env=dict(os.environ, **h.pulumi_env(backend)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pid = sleeping_backend(bare_db.dsn, proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        gone = backend_gone(bare_db.dsn, pid, timeout=20)
        print(f"pulumi up SIGKILLed: the plugin exited and the server rolled back after {gone:.1f}s")
        assert gone < 10
        assert [r[0] for r in bare_db.history()] == ["001_a.sql"]
        assert bare_db.sql("SELECT to_regclass('public.b') IS NULL")[0][0]
    finally:
        make_slow(bare_db.dsn, 0)
        # the CLI's own language host outlives a SIGKILLed CLI (Pulumi's behaviour): end this test's session
        subprocess.run(["pkill", "-9", "-s", str(proc.pid)], capture_output=True)
