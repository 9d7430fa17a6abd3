"""MigratedTenants over three PostgreSQL servers with the real CLI (issue 24's two bugs, then a server stopped in
the middle of a `pulumi up`): the fleet's stack config points at server 0; tenants on servers 1 and 2 bring
their own connection."""
import json
import threading
import time

import pytest
from pulumi import automation as auto

from tests.helpers import stacks as h
from tests.helpers.faults import SLOW, make_slow
from tests.helpers.servers import ensure_running, three_dbs, three_servers  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e

PROGRAM = """
import json
import pulumi
from llmemory_db import ConnectionArgs
from llmemory_db.tenants import MigratedTenants, MigratedTenantsArgs, TenantArgs
config = pulumi.Config()
servers = json.loads(config.get("servers"))
args = json.loads(config.get("args") or "{}")
per_server = args.pop("per_server")
tenants = []
for n, server in enumerate(servers):
    own = None if n == 0 else ConnectionArgs(host="127.0.0.1", port=server["port"], username="postgres",
                                             password=server["password"], database=server["database"],
                                             sslmode="disable")
    tenants += [TenantArgs(f"s{n}_{i}", own) for i in range(per_server)]
fleet = MigratedTenants("fleet", MigratedTenantsArgs(migrations_dir="migrations", module_name="memory",
                                                  tenants=tenants, **args))
pulumi.export("summary", fleet.summary)
pulumi.export("servers", fleet.servers)
pulumi.export("failed", fleet.failed)
"""
FILES = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);\n",
         "002_tags.sql": "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n"}
PER_SERVER = 4


class Fleet:
    def __init__(self, servers, databases, tmp_path, files=FILES, **args):
        self.servers, self.databases = servers, databases
        self.project = h.write_project(tmp_path / "proj", PROGRAM, files)
        self.stack = h.stack(self.project, tmp_path / "backend", servers[0], databases[0].name)
        described = [{"port": s.port, "password": s.password, "database": d.name} for s, d in zip(servers, databases)]
        self.stack.set_config("servers", auto.ConfigValue(json.dumps(described), secret=True))
        self.stack.set_config("args", auto.ConfigValue(json.dumps({"per_server": PER_SERVER, **args})))
        self.names = {n: f"127.0.0.1:{s.port}" for n, s in enumerate(servers)}

    def up(self):
        lines = []
        try:
            return self.stack.up(on_output=lines.append), "\n".join(lines)
        except auto.CommandError as exc:
            return None, "\n".join(lines) + str(exc).split("\n stderr: ", 1)[-1]

    def preview(self):
        lines = []
        self.stack.preview(on_output=lines.append)
        return "\n".join(lines)

    def files(self, n, i):
        return self.databases[n].sql(f"SELECT filename, count(*) FROM s{n}_{i}.schema_migrations "
                                     "WHERE module_name = 'memory' GROUP BY 1 ORDER BY 1")


@pytest.mark.parametrize("extensions", [[], ["vector"]])
def test_servers_with_and_without_extensions(three_servers, three_dbs, tmp_path, extensions):
    """Issue 24: extensions=[] named every server's pulumi-postgresql provider 'fleet-postgresql-0' (Duplicate
    resource URN). Now a server's provider exists for its extensions only, named after its connection."""
    fleet = Fleet(three_servers, three_dbs, tmp_path, extensions=extensions)
    result, text = fleet.up()
    assert result is not None, text
    assert result.outputs["summary"].value == f"{3 * PER_SERVER} tenants: {3 * PER_SERVER} up to date"
    providers = [r["urn"] for r in fleet.stack.export_stack().deployment["resources"]
                 if r["type"] == "pulumi:providers:postgresql" and "::fleet-postgresql-" in r["urn"]]
    # servers 1 and 2 (server 0: the stack's default provider), only to create their extensions
    assert len(set(providers)) == len(providers) == (2 if extensions else 0)
    assert all(fleet.files(n, 3) == [(f, 1) for f in sorted(FILES)] for n in range(3))
    assert all(database.sql("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [(len(extensions),)]
               for database in three_dbs)


@pytest.mark.parametrize("extensions", [[], ["vector"]])
def test_a_server_down_fails_only_its_tenants_and_the_next_up_retries_only_them(three_servers, three_dbs,
                                                                               tmp_path, extensions):
    """Issue 24: with a server stopped the whole update failed (a traceback, "Cannot connect") and no tenant on
    the other servers got the new file."""
    fleet = Fleet(three_servers, three_dbs, tmp_path, extensions=extensions, on_error="continue")
    assert fleet.up()[0] is not None
    (fleet.project / "migrations" / "003_note.sql").write_text("ALTER TABLE {{tables.tags}} ADD COLUMN note text;\n")
    three_servers[2].stop()
    try:
        result, text = fleet.up()
        assert result is None and "Traceback" not in text
        assert f"{PER_SERVER} tenant(s) failed" in text and f"server {fleet.names[2]}: Cannot connect" in text
        assert "start the server or fix its connection" in text and f"{PER_SERVER} tenant(s): " in text
        outputs = fleet.stack.outputs()
        assert outputs["servers"].value == {
            fleet.names[0]: {"tenants": PER_SERVER, "at_head": PER_SERVER, "failed": 0},
            fleet.names[1]: {"tenants": PER_SERVER, "at_head": PER_SERVER, "failed": 0},
            fleet.names[2]: {"tenants": PER_SERVER, "at_head": 0, "failed": PER_SERVER}}
        assert fleet.files(0, 1)[-1] == ("003_note.sql", 1) and fleet.files(1, 2)[-1] == ("003_note.sql", 1)
    finally:
        ensure_running(three_servers)
    text = fleet.preview()
    assert f"on {PER_SERVER} tenant(s), retrying failed: " in text
    result, text = fleet.up()
    assert result is not None, text
    assert result.outputs["summary"].value == f"{3 * PER_SERVER} tenants: {3 * PER_SERVER} up to date"
    assert all(fleet.files(n, i) == [(f, 1) for f in sorted(FILES) + ["003_note.sql"]]
               for n in range(3) for i in range(PER_SERVER))


def test_a_server_stopped_in_the_middle_of_an_up_then_started_and_up_again(three_servers, three_dbs, tmp_path):
    files = {f"00{i}_t{i}.sql": f"CREATE TABLE {{{{tables.t{i}}}}} (id int);\n{SLOW}" for i in range(1, 4)}
    for database in three_dbs:
        make_slow(database.dsn, 0.3)
    fleet = Fleet(three_servers, three_dbs, tmp_path, files=files, extensions=[], on_error="continue",
                  max_parallel=2, canary=0)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(up=fleet.up()))
    runner.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not three_dbs[1].sql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'llmemory-db-migrate' "
                "AND state = 'active'")[0][0]:
            time.sleep(0.05)
        three_servers[1].stop()
        runner.join(timeout=300)
        result, text = outcome["up"]
        assert result is None and f"server {fleet.names[1]}" in text and "Traceback" not in text
        servers = fleet.stack.outputs()["servers"].value
        assert servers[fleet.names[0]]["at_head"] == servers[fleet.names[2]]["at_head"] == PER_SERVER
        assert servers[fleet.names[1]]["failed"] > 0
    finally:
        ensure_running(three_servers)
    for database in three_dbs:
        make_slow(database.dsn, 0)
    result, text = fleet.up()
    assert result is not None, text
    assert result.outputs["summary"].value == f"{3 * PER_SERVER} tenants: {3 * PER_SERVER} up to date"
    for n, database in enumerate(three_dbs):
        for i in range(PER_SERVER):
            assert fleet.files(n, i) == [(f"00{j}_t{j}.sql", 1) for j in range(1, 4)]
            assert database.tables(f"s{n}_{i}", exclude=("schema_migrations",)) == ["t1", "t2", "t3"]
