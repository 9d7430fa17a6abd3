"""Every method of the dynamic providers, without a database: properties in, the engine's operation called with the
right values, its result into Pulumi's types, its typed errors into ProviderError (shown without a traceback), its
events printed once. The operations themselves are replaced (wiring only); tests/e2e shows them for real."""
from __future__ import annotations

import traceback

import pytest
from pulumi.dynamic import CheckResult, DiffResult, ReadResult

from llmemory_db import provider as provider_mod
from llmemory_db import provider_host
from llmemory_db.migrate import files, ops
from llmemory_db.migrate.errors import MigrationError, SchemaDriftError
from llmemory_db.migrate.events import Event
from llmemory_db.provider import ExtensionCheckProvider, FleetProvider, MigrationsProvider
from llmemory_db.provider_host import ProviderError
from tests.helpers import write

A = "CREATE TABLE {{tables.a}} (id int);\n"
B = "CREATE TABLE {{tables.b}} (id int);\n"


@pytest.fixture
def props(tmp_path):
    folder = write(tmp_path / "m", {"001_a.sql": A})
    return {"schema": "s", "database": "d", "host": "h", "port": 5432, "username": "u", "password": "pw",
            "module_name": "m", "history_table": "public.schema_migrations", "migrations_dir": str(folder),
            "checksums": {"001_a.sql": files.checksum(A)}, "managed": {"tables": ["a"]}}


@pytest.fixture
def offline(monkeypatch):
    """No database answers: the providers' live connection is None."""
    monkeypatch.setattr(MigrationsProvider, "live", staticmethod(lambda props: None))


def test_diff_nothing_changed(props, offline, capsys):
    assert MigrationsProvider().diff("id", props, dict(props)).changes is False
    assert capsys.readouterr().out == ""


def test_diff_new_file_is_an_update_naming_it(props, offline, capsys):
    news = {**props, "checksums": {**props["checksums"], "002_b.sql": "bb"}}
    result = MigrationsProvider().diff("id", props, news)
    assert isinstance(result, DiffResult) and result.changes is True and result.replaces == []
    assert capsys.readouterr().out == "migrations d/public.schema_migrations/m: 1 pending: 002_b.sql\n"


def test_diff_other_target_makes_every_file_pending(props, offline, capsys):
    assert MigrationsProvider().diff("id", props, {**props, "schema": "t"}).changes is True
    assert capsys.readouterr().out.strip().endswith("1 pending: 001_a.sql")


def test_diff_file_removed_from_disk(props, offline, capsys):
    olds = {**props, "checksums": {**props["checksums"], "002_b.sql": "bb"}}
    assert MigrationsProvider().diff("id", olds, props).changes is True
    assert "recorded but not on disk: 002_b.sql" in capsys.readouterr().out


def test_diff_reports_recorded_drift_and_interruptions_once(props, offline, capsys):
    olds = {**props, "drift": ["table s.x: added"], "interrupted": ["002 (...)"]}
    provider = MigrationsProvider()
    assert provider.diff("id", olds, props).changes is True
    provider.diff("id", olds, props)  # a preview with --refresh diffs twice: printed once
    out = capsys.readouterr().out
    assert out.count("schema drift:\n  table s.x: added") == 1 and "interrupted:\n  002 (...)" in out


def test_diff_drift_gone_from_the_database_is_no_change(props, monkeypatch, capsys):
    """A refresh recorded drift, the column was removed again: the plain preview checks and stays clean."""
    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(MigrationsProvider, "live", staticmethod(lambda props: Conn()))
    monkeypatch.setattr(ops, "refresh", lambda conn, settings, managed, objects: ops.Refreshed({}, [], [], [], [], {}))
    olds = {**props, "drift": ["column s.a.extra: added"], "objects": {"table s.a": "1"}}
    assert MigrationsProvider().diff("id", olds, props).changes is False
    assert capsys.readouterr().out == ""


def test_check_collects_every_failure_without_raising(props, offline, monkeypatch):
    def preflight(settings, conn, recorded, known, on_event):
        on_event(Event("risk", "risk: 002_b.sql:1 something", "warning"))
        return ops.Preflight(["002_b.sql"], failures=[SchemaDriftError(settings, ["table s.x: added"]),
                                                      MigrationError("second", remedy="do it")])
    monkeypatch.setattr(ops, "preflight", preflight)
    result = MigrationsProvider().check(props, props)
    assert isinstance(result, CheckResult) and [f.property for f in result.failures] == ["migrations"] * 2
    assert "accept_schema_drift=True" in result.failures[0].reason  # the Python argument, as the caller spells it
    yaml = MigrationsProvider().check(props, {**props, "spelling": "yaml"})
    assert "acceptSchemaDrift: true" in yaml.failures[0].reason


def test_check_passes_the_previous_checksums_only_for_the_same_history(props, offline, monkeypatch):
    seen = []
    monkeypatch.setattr(ops, "preflight", lambda settings, conn, recorded, known, on_event:
                        seen.append((recorded, known)) or ops.Preflight([]))
    provider = MigrationsProvider()
    provider.check({**props, "objects": {}}, props)
    provider.check({**props, "module_name": "other"}, props)
    provider.check({}, props)
    assert seen == [(props["checksums"], True), ({}, False), ({}, False)]


def test_check_refuses_a_lint_error_naming_the_file(props, offline, tmp_path):
    write(tmp_path / "m", {"002_b.sql": "CREATE TABLE (;\n"})
    news = {**props, "checksums": {**props["checksums"], "002_b.sql": files.checksum("CREATE TABLE (;\n")}}
    failures = MigrationsProvider().check(props, news).failures
    assert len(failures) == 1 and "002_b.sql:1" in failures[0].reason and "syntax error" in failures[0].reason


class Result(ops.ApplyResult):
    pass


def test_create_and_update_call_apply_with_the_recorded_schema(props, monkeypatch):
    calls = []

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(provider_mod.ConnectionSettings, "connect", lambda self, retries=3: Conn())

    def apply(conn, settings, managed, recorded_objects, covered, known, on_event):
        calls.append((settings.schema, managed.tables, recorded_objects, list(covered), known))
        on_event(Event("applied", "applied 001_a.sql"))
        return ops.ApplyResult(["001_a.sql"], [], props["checksums"], [], objects={"table s.a": "1"})
    monkeypatch.setattr(ops, "apply", apply)
    created = MigrationsProvider().create(props)
    assert created.id == "d/public.schema_migrations/m"
    assert created.outs["applied"] == ["001_a.sql"] and created.outs["fingerprint"] and created.outs["drift"] == []
    olds = dict(created.outs)
    MigrationsProvider().update("id", olds, props)
    MigrationsProvider().update("id", {**olds, "schema": "elsewhere"}, props)  # another place: nothing recorded there
    assert calls == [("s", ["a"], None, [], False), ("s", ["a"], {"table s.a": "1"}, ["001_a.sql"], True),
                     ("s", ["a"], None, ["001_a.sql"], False)]


def test_create_refuses_files_changed_since_the_preview(props, monkeypatch):
    monkeypatch.setattr(provider_mod.ConnectionSettings, "connect", lambda self, retries=3: _null())
    monkeypatch.setattr(ops, "apply", lambda *a, **k: ops.ApplyResult([], [], {"001_a.sql": "other"}, []))
    with pytest.raises(ProviderError, match="changed between preview and apply"):
        MigrationsProvider().create(props)


def test_engine_errors_become_provider_errors_in_the_callers_terms(props, monkeypatch):
    monkeypatch.setattr(provider_mod.ConnectionSettings, "connect", lambda self, retries=3: _null())

    def apply(conn, settings, **kwargs):
        raise SchemaDriftError(settings, ["column s.a.x: added"])
    monkeypatch.setattr(ops, "apply", apply)
    with pytest.raises(ProviderError) as info:
        MigrationsProvider().create({**props, "spelling": "config"})
    assert "pulumi config set llmemory-db:acceptSchemaDrift true" in str(info.value)


def test_read_returns_every_input_and_names_drift_as_one(props, monkeypatch):
    monkeypatch.setattr(provider_mod.ConnectionSettings, "connect", lambda self, retries=3: _null())
    monkeypatch.setattr(ops, "refresh", lambda conn, settings, managed, objects: ops.Refreshed(
        {"001_a.sql": props["checksums"]["001_a.sql"]}, [], [], ["column s.a.x: added"], [], {"table s.a": "2"}))
    state = {**props, "package_version": "llmemory 0.5.0", "objects": {"table s.a": "1"}, "applied": ["001_a.sql"],
             "fingerprint": "f", "drift": [], "pending": [], "missing": [], "interrupted": [], "schema_name": "s"}
    result = MigrationsProvider().read("id", state)
    assert isinstance(result, ReadResult) and result.outs["drift"] == ["column s.a.x: added"]
    assert result.inputs["package_version"] == "llmemory 0.5.0" and result.inputs["drift"] == result.outs["drift"]
    assert not {"objects", "applied", "fingerprint", "pending", "schema_name"} & set(result.inputs)


def test_delete_keeps_data_without_connecting(props, monkeypatch, capsys):
    monkeypatch.setattr(provider_mod.ConnectionSettings, "connect",
                        lambda self, retries=3: pytest.fail("delete must not connect to keep data"))
    MigrationsProvider().delete("id", props)
    assert "kept the tables and history of schema s" in capsys.readouterr().out


def test_extension_check_provider(monkeypatch):
    seen = []
    monkeypatch.setattr(provider_mod.ConnectionSettings, "connect", lambda self, retries=3: _null())
    monkeypatch.setattr(provider_mod, "check_extensions", lambda conn, names: seen.append(names))
    props = {"extension": "vector", "database": "d", "host": "h"}
    assert ExtensionCheckProvider().create(props).id == "d/vector" and seen == [["vector"]]
    assert ExtensionCheckProvider().diff("id", props, dict(props)).changes is False
    assert ExtensionCheckProvider().diff("id", props, {**props, "host": "other"}).changes is True
    ExtensionCheckProvider().update("id", props, props)
    assert len(seen) == 2


# --------------------------------------------------------------------------- the fleet's provider

@pytest.fixture
def fleet_props(props):
    return {**{k: v for k, v in props.items() if k not in ("schema",)}, "history_template": "{schema}.schema_migrations",
            "max_parallel": 2, "canary": 1, "wave_size": 0, "on_error": "continue", "runtime_roles": [],
            "tenants_list": [{"schema": "t1", "database": ""}, {"schema": "t2", "database": ""}],
            "connections": {"": {"host": "h", "port": 5432, "username": "u", "password": "pw", "database": "d"}}}


def test_fleet_check_lints_and_refuses_bad_tenants(fleet_props, capsys):
    assert FleetProvider().check({}, fleet_props).failures == []
    bad = {**fleet_props, "tenants_list": [{"schema": "bad-name"}]}
    failures = FleetProvider().check({}, bad).failures
    assert failures and "bad-name" in failures[0].reason


def test_fleet_settings_round_trip_with_one_default_each(fleet_props):
    fleet, tenants, _ = provider_mod.fleet_of({k: v for k, v in fleet_props.items() if k != "canary"})
    assert fleet.canary == 1  # FleetSettings' default, not the provider's own
    assert fleet.max_parallel_total == 0 and fleet.to_props()["max_parallel_total"] == 0
    assert provider_mod.fleet_of({**fleet_props, "max_parallel_total": 6.0})[0].max_parallel_total == 6  # Pulumi
    assert [t.key for t in tenants] == ["t1", "t2"] and fleet.on_error == "continue"


def test_fleet_diff_names_new_pending_and_failed_tenants(fleet_props, capsys):
    olds = {**fleet_props, "applied": ["001_a.sql"],
            "tenants": {"t1": {"recorded": 1, "last": "001_a.sql", "pending": []},
                        "t2": {"recorded": 0, "last": "", "pending": ["001_a.sql"], "error": {"message": "x"}}}}
    news = {**fleet_props, "tenants_list": fleet_props["tenants_list"] + [{"schema": "t3", "database": ""}]}
    assert FleetProvider().diff("id", olds, news).changes is True
    out = capsys.readouterr().out
    assert "1 new tenant(s) (t3)" in out and "retrying failed: t2" in out
    assert FleetProvider().diff("id", {**olds, "tenants": {"t1": olds["tenants"]["t1"],
                                                           "t2": olds["tenants"]["t1"]}}, fleet_props).changes is False


def test_a_fleet_setting_an_older_version_did_not_write_counts_as_its_default(fleet_props):
    done = {"recorded": 1, "last": "001_a.sql", "pending": []}
    olds = {**fleet_props, "applied": ["001_a.sql"], "tenants": {"t1": done, "t2": done}}
    assert FleetProvider().diff("id", olds, {**fleet_props, "max_parallel_total": 0}).changes is False
    assert FleetProvider().diff("id", olds, {**fleet_props, "max_parallel_total": 3}).changes is True


def test_fleet_create_read_delete(fleet_props, monkeypatch, capsys):
    from llmemory_db.migrate import fleet_ops
    from llmemory_db.migrate.fleet import FleetResult
    result = FleetResult({}, {"001_a.sql": "x"}, 0.1)
    servers = []
    monkeypatch.setattr(fleet_ops, "apply", lambda fleet, tenants, connect, recorded, on_event, server_of: (
        servers.append(server_of("")), fleet_ops.FleetDeployed(
            result, {"t1": {"recorded": 1}}, {"table {schema}.a": "1"}, "fp"))[1])
    created = FleetProvider().create(fleet_props)
    assert created.id == "fleet/m" and created.outs["fingerprint"] == "fp" and created.outs["tenants"] == {
        "t1": {"recorded": 1}} and created.outs["servers"] == {} and servers == ["h:5432"]
    monkeypatch.setattr(fleet_ops, "refresh", lambda fleet, tenants, connect, recorded, server_of, on_event: (
        {"t1": {"recorded": 0}}, {"t1": ["x: added"]}))
    read = FleetProvider().read("fleet/m", created.outs)
    assert read.outs["drift"] == {"t1": ["x: added"]} and "tenants" not in read.inputs
    FleetProvider().delete("fleet/m", created.outs)
    out = capsys.readouterr().out   # each line names the fleet once
    assert "tenants m: kept the schemas and histories of 2 tenant(s)" in out and "tenants m: tenants" not in out


def test_provider_errors_have_no_traceback_in_the_dynamic_host(monkeypatch):
    """The host formats an exception with traceback.format_exc(): for a ProviderError, only its message."""
    import sys
    import types
    host = types.ModuleType("__main__")
    host.__spec__ = types.SimpleNamespace(name=provider_host.DYNAMIC_HOST)
    host.traceback = traceback
    monkeypatch.setitem(sys.modules, "__main__", host)
    assert provider_host.clean_errors()
    try:
        raise ProviderError("Schema drift in s\nRemedy: undo it")
    except ProviderError:
        assert host.traceback.format_exc() == "Schema drift in s\nRemedy: undo it"
    try:
        raise KeyError("a bug")
    except KeyError:
        assert host.traceback.format_exc().startswith("Traceback (most recent call last)")


def _null():
    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    return Conn()
