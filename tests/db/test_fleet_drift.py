"""The fleet's drift check and status with the fingerprints digested in the database (``fleet_prints``): an update
refuses to build on a drifted tenant, fingerprints only the tenants whose result could refuse it, and never
records a drifted fingerprint silently."""
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from llmemory_db.migrate.errors import SchemaDriftError
from llmemory_db.migrate.fleet import apply_fleet
from llmemory_db.migrate.fleet_ops import after_apply, drift_of, expected_objects
from llmemory_db.migrate.fleet_prints import DriftCheck, Recorded
from llmemory_db.migrate.fleet_settings import FleetSettings, Tenant
from tests.helpers import write

FILES = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigserial PRIMARY KEY, body text);\n"
                         "CREATE INDEX idx_docs_body ON {{tables.docs}} (body);\n"}
NOTE = {"002_note.sql": "ALTER TABLE {{tables.docs}} ADD COLUMN note text;\n"}


class Stack:
    """What the provider does around the executor: the recorded outputs between updates."""

    def __init__(self, db, folder, names, **settings):
        self.db, self.folder, self.outputs = db, folder, None
        self.recorded = Recorded.of(self.outputs)
        self.tenants = [Tenant(n) for n in names]
        self.settings = settings

    def fleet(self, **changes):
        return FleetSettings(Settings(self.folder, module_name="memory", **{**self.settings, **changes}),
                             on_error="continue")

    def connect(self, _key):
        return migrate.connect(self.db.dsn)

    def up(self, **changes):
        fleet = self.fleet(**changes)
        check = DriftCheck(fleet, self.recorded, expected_objects(self.outputs, fleet)) if self.outputs else None
        result = apply_fleet(fleet, self.tenants, self.connect, precheck=check)
        statuses, objects, canonical = after_apply(fleet, self.tenants, result, self.connect, self.recorded)
        self.outputs = {"tenants": statuses, "fingerprint": canonical, "objects": objects,
                        "applied": sorted(result.checksums)}
        self.recorded = Recorded.of(self.outputs)
        return result, check

    def refresh(self):
        return drift_of(self.outputs, self.fleet(), self.tenants, self.connect)


@pytest.fixture
def stack(db, tmp_path):
    stack = Stack(db, write(tmp_path / "m", FILES), ["t0", "t1", "t2"])
    stack.up()
    return stack


def test_a_drifted_tenant_with_work_refuses_the_update_and_nothing_is_applied(stack):
    stack.db.sql("ALTER TABLE t1.docs ADD COLUMN sneaky int")
    write(stack.folder, NOTE)
    with pytest.raises(SchemaDriftError) as info:
        stack.up()
    assert "tenant t1: column t1.docs.sneaky: added" in str(info.value)
    assert all(stack.db.history(f"{t}.schema_migrations", "memory")[-1][0] == "001_docs.sql"
               for t in ("t0", "t1", "t2"))
    result, check = stack.up(accept_schema_drift=True)  # accepted: not even fingerprinted before
    assert result.failed == [] and check.checked == 0
    assert stack.recorded.statuses["t1"]["fp"] != stack.recorded.canonical  # its own (accepted) fingerprint
    assert stack.refresh() == {}


def test_tenants_without_work_are_not_fingerprinted_and_keep_their_recorded_print(stack):
    """Only new tenants this time: the recorded ones are not built on, so not fingerprinted before; the drifted
    one keeps its recorded fingerprint (never replaced by the drifted one) and a refresh still reports it."""
    stack.db.sql("DROP INDEX t2.idx_docs_body")
    stack.tenants += [Tenant("t3"), Tenant("t4")]
    result, check = stack.up()
    assert result.failed == [] and check.checked == 0
    assert sorted(t.schema for t in result.tenants.values() if t.applied) == ["t3", "t4"]
    assert "fp" not in stack.recorded.statuses["t2"]
    assert stack.refresh() == {"t2": ["index t2.idx_docs_body: missing"]}
    write(stack.folder, NOTE)  # now t2 gets a file: refused, naming it
    with pytest.raises(SchemaDriftError, match="tenant t2: index t2.idx_docs_body: missing"):
        stack.up()


def test_a_new_file_checks_every_tenant_it_is_applied_to_in_the_executors_read(stack):
    write(stack.folder, NOTE)
    result, check = stack.up()
    assert result.failed == [] and check.checked == 3
    assert stack.recorded.objects["column {schema}.docs.note"] and stack.refresh() == {}


def test_another_appliers_files_are_not_drift(stack, tmp_path):
    """t0's history moved (pgdbm applied 002 at start-up): not checked before, fingerprinted again after."""
    write(stack.folder, NOTE)
    migrate.apply(migrate.connect(stack.db.dsn), Settings(stack.folder, module_name="memory", schema="t0",
                                                          history_table="t0.schema_migrations"))
    result, check = stack.up()
    assert result.failed == [] and check.checked == 2
    assert stack.refresh() == {} and len({stack.recorded.print_of(t) for t in ("t0", "t1", "t2")}) == 1


def test_a_tenant_whose_server_is_down_keeps_what_was_recorded_with_the_error(db, tmp_path):
    from llmemory_db.migrate.errors import ConnectionFailedError
    stack = Stack(db, write(tmp_path / "m", FILES), [])
    stack.tenants = [Tenant("a0"), Tenant("b0", "other")]
    down = set()

    def connect(key):
        if key in down:
            raise ConnectionFailedError("Cannot connect to PostgreSQL: connection refused", remedy="start it")
        return migrate.connect(db.dsn)

    stack.connect = connect
    stack.up()
    write(stack.folder, NOTE)
    down.add("other")
    result, _ = stack.up()
    status = stack.recorded.statuses["other/b0"]
    assert status["recorded"] == 1 and status["files"] == ["001_docs.sql"] and status["pending"] == ["002_note.sql"]
    assert status["error"]["message"] == "server other: Cannot connect to PostgreSQL: connection refused"
    assert stack.recorded.statuses["a0"] == {"recorded": 2, "last": "002_note.sql", "pending": []}
    down.clear()
    result, check = stack.up()
    assert [k for k, t in result.tenants.items() if t.applied] == ["other/b0"] and check.checked == 0
