"""MigratedTenants with the real CLI: one dynamic resource for the whole fleet, compact previews, changes to the
list of tenants, drift per tenant, a failed tenant recorded and retried, and bad input."""
import json

import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h

pytestmark = pytest.mark.e2e

PROGRAM = """
import json
import pulumi
from llmemory_db.tenants import MigratedTenants, MigratedTenantsArgs
config = pulumi.Config()
args = json.loads(config.get("args") or "{}")
fleets = args.pop("fleets", [["fleet", None]])
for name, tenants in fleets:
    fleet = MigratedTenants(name, MigratedTenantsArgs(migrations_dir="migrations", module_name="memory",
                                                      tenants=tenants, extensions=[], **args))
    pulumi.export(f"{name}_summary", fleet.summary)
    pulumi.export(f"{name}_tenants", fleet.tenants)
    pulumi.export(f"{name}_failed", fleet.failed)
"""
FILES = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                         "body text);\n",
         "002_tags.sql": "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n"}


class Fleet:
    def __init__(self, pg_server, db, tmp_path, tenants):
        self.db = db
        self.project = h.write_project(tmp_path / "proj", PROGRAM, FILES)
        self.stack = h.stack(self.project, tmp_path / "backend", pg_server, db.name)
        self.tenants(tenants)

    def tenants(self, names, **args):
        self.stack.set_config("tenants", auto.ConfigValue(json.dumps(names)))
        self.stack.set_config("args", auto.ConfigValue(json.dumps(args)))

    def up(self):
        lines = []
        try:
            result = self.stack.up(on_output=lines.append)
            return result, "\n".join(lines)
        except auto.CommandError as exc:
            return None, "\n".join(lines) + str(exc).split("\n stderr: ", 1)[-1]

    def preview(self, **kwargs):
        lines = []
        try:
            return h.changes(self.stack.preview(on_output=lines.append, **kwargs)), "\n".join(lines)
        except auto.CommandError as exc:
            return None, "\n".join(lines) + str(exc).split("\n stderr: ", 1)[-1]

    def files(self, tenant):
        return [r[0] for r in self.db.history(f"{tenant}.schema_migrations", "memory")]


@pytest.fixture
def fleet(pg_server, bare_db, tmp_path):
    return Fleet(pg_server, bare_db, tmp_path, [f"t{i}" for i in range(5)])


def test_fleet_lifecycle(fleet):
    result, _ = fleet.up()
    assert result.outputs["fleet_summary"].value == "5 tenants: 5 up to date"
    assert fleet.files("t3") == ["001_docs.sql", "002_tags.sql"] and fleet.db.tables("t4") == [
        "docs", "schema_migrations", "tags"]
    resources = [r["type"] for r in fleet.stack.export_stack().deployment["resources"]]
    assert resources.count("pulumi-python:dynamic:Resource") == 1  # one resource for the whole fleet
    assert fleet.preview(expect_no_changes=True)[0] == {}

    (fleet.project / "migrations" / "003_note.sql").write_text("ALTER TABLE {{tables.tags}} ADD COLUMN note text;\n")
    changes, text = fleet.preview()
    assert changes == {"update": 1} and "5 tenants: 1 pending file(s) (003_note.sql) on 5 tenant(s)" in text
    fleet.tenants([f"t{i}" for i in range(5)] + ["acme", "globex"])
    changes, text = fleet.preview()
    assert "2 new tenant(s) (acme, globex): 3 file(s) each" in text
    result, _ = fleet.up()
    assert result.outputs["fleet_summary"].value == "7 tenants: 7 up to date"
    assert fleet.files("t0")[-1] == "003_note.sql" and fleet.files("globex") == [
        "001_docs.sql", "002_tags.sql", "003_note.sql"]

    fleet.tenants([f"t{i}" for i in range(4)] + ["acme", "globex"])  # t4 leaves the fleet
    changes, text = fleet.preview()
    assert "1 tenant(s) removed (t4): its schema and history are kept (drop_on_destroy is off)" in text
    fleet.up()
    assert fleet.files("t4") == ["001_docs.sql", "002_tags.sql", "003_note.sql"]  # its data kept

    fleet.db.sql("ALTER TABLE t2.docs ADD COLUMN sneaky int")
    changes, text = fleet.preview(refresh=True)
    assert "schema drift in tenant t2:" in text and "column t2.docs.sneaky: added" in text

    path = fleet.project / "migrations" / "002_tags.sql"
    path.write_text(path.read_text() + "-- edited\n")
    changes, text = fleet.preview()
    # one refusal for the fleet (Pulumi shows a check failure's first line twice: as it happens, and in full
    # below), with one proof per distinct tenant schema, not per tenant
    assert changes is None and text.count("recorded checksum: ") == 1
    assert "5 tenant(s) (t0, t1, t3, acme, globex): proof: no difference in the schema" in text
    assert "1 tenant(s) (t2): proof: the schema differs: column t2.docs.sneaky: added" in text
    assert "accept_edits=['002_tags.sql']" in text and "Traceback" not in text

    # the drift undone and the edit accepted: one up records the new checksum in every tenant's history, with an
    # audit row each, and the next preview is clean
    fleet.db.sql("ALTER TABLE t2.docs DROP COLUMN sneaky")
    fleet.tenants([f"t{i}" for i in range(4)] + ["acme", "globex"], accept_edits=["002_tags.sql"])
    result, text = fleet.up()
    assert result is not None, text
    assert "recorded the verified edit in 6 tenant(s)" in text
    new = [r[1] for r in fleet.db.history("t0.schema_migrations", "memory")][1]
    assert all([r[1] for r in fleet.db.history(f"{t}.schema_migrations", "memory")][1] == new
               for t in ("t1", "t2", "t3", "acme", "globex"))
    assert fleet.db.sql("SELECT filename, reason FROM t2.schema_migrations_edits") == [
        ("002_tags.sql", "proof: no difference in the schema")]
    changes, text = fleet.preview()
    assert changes == {}, text


def test_a_failed_tenant_is_recorded_and_retried_alone(fleet):
    fleet.tenants([f"t{i}" for i in range(5)], on_error="continue")
    (fleet.project / "migrations" / "002_tags.sql").rename(fleet.project / "migrations" / "002_tags.later")
    fleet.up()
    fleet.db.sql("CREATE TABLE t2.tags (x int)")  # t2 only: its 002 fails
    (fleet.project / "migrations" / "002_tags.later").rename(fleet.project / "migrations" / "002_tags.sql")
    result, text = fleet.up()
    assert result is None and "1 tenant(s) failed" in text and "t2: 002_tags.sql:1" in text
    outputs = fleet.stack.outputs()
    assert outputs["fleet_summary"].value == "5 tenants: 4 up to date, 1 failed"
    assert list(outputs["fleet_failed"].value) == ["t2"]
    assert fleet.files("t3") == ["001_docs.sql", "002_tags.sql"] and fleet.files("t2") == ["001_docs.sql"]
    fleet.db.sql("DROP TABLE t2.tags")
    changes, text = fleet.preview()
    assert "on 1 tenant(s), retrying failed: t2" in text
    result, text = fleet.up()
    assert result.outputs["fleet_summary"].value == "5 tenants: 5 up to date" and fleet.files("t2")[-1] == "002_tags.sql"


@pytest.mark.parametrize("tenants,args,message", [
    (["t0", "bad-name"], {}, "Invalid tenant schema ('bad-name')"),
    (["t0", "t0"], {}, "Tenants listed more than once: t0"),
    (["t0"], {"fleets": [["one", ["t0", "t1"]], ["two", ["t1"]]]}, "both claim tenant t1's history"),
    (["t0"], {"max_parallel": 0}, "Invalid value 0 for max_parallel"),
])
def test_bad_fleets_fail_the_preview_naming_them(fleet, tenants, args, message):
    fleet.tenants(tenants, **args)
    changes, text = fleet.preview()
    assert changes is None and message in text and "Traceback" not in text


def test_sigkill_in_the_middle_of_a_fanout_then_recover(pg_server, bare_db, tmp_path):
    """`pulumi up` killed while tenants migrate: every tenant holds each file whole or not at all (its table and
    its history row together), and after the documented recovery the next up completes the fleet."""
    import os
    import signal
    import subprocess
    import time

    from tests.helpers.faults import SLOW, make_slow

    files = {f"00{i}_t{i}.sql": f"CREATE TABLE {{{{tables.t{i}}}}} (id int);\n{SLOW}" for i in range(1, 4)}
    project = h.write_project(tmp_path / "proj", PROGRAM, files)
    stack = h.stack(project, tmp_path / "backend", pg_server, bare_db.name)
    names = [f"k{i}" for i in range(8)]
    stack.set_config("tenants", auto.ConfigValue(json.dumps(names)))
    stack.set_config("args", auto.ConfigValue(json.dumps({"max_parallel": 2})))
    make_slow(bare_db.dsn, 0.4)
    env = dict(os.environ, **h.pulumi_env(tmp_path / "backend"))
    proc = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "-s", "test"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not bare_db.sql(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'k3'")[0][0]:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # the CLI only: the provider notices the engine is gone and exits
    proc.wait(timeout=30)
    # the CLI's own language host outlives a SIGKILLed CLI (Pulumi's behaviour): clean it up
    subprocess.run(["pkill", "-9", "-s", str(proc.pid)], capture_output=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and bare_db.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'llmemory-db-migrate'")[0][0]:
        time.sleep(0.2)
    assert bare_db.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'llmemory-db-migrate'") \
        == [(0,)]
    for name in names:  # whole files or nothing: a table exists exactly when its history row does
        schemas = bare_db.sql("SELECT count(*) FROM pg_namespace WHERE nspname = %s", name)[0][0]
        recorded = {r[0] for r in bare_db.history(f"{name}.schema_migrations", "memory")} if \
            bare_db.sql("SELECT to_regclass(%s)", f"{name}.schema_migrations")[0][0] else set()
        tables = set(bare_db.tables(name, exclude=("schema_migrations",))) if schemas else set()
        assert {f"t{f[2]}" for f in recorded} == tables, (name, recorded, tables)
    make_slow(bare_db.dsn, 0)
    subprocess.run(["pulumi", "cancel", "--yes", "-s", "test"], cwd=project, env=env, capture_output=True)
    subprocess.run(["pulumi", "refresh", "--yes", "--skip-preview", "--clear-pending-creates", "-s", "test"],
                   cwd=project, env=env, capture_output=True, check=True)
    result = stack.up(on_output=lambda _: None)
    assert result.outputs["fleet_summary"].value == "8 tenants: 8 up to date"
    assert all(len(bare_db.history(f"{n}.schema_migrations", "memory")) == 3 for n in names)
