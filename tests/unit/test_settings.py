"""The one settings object: every conversion round-trips, one default per setting, and the bugs of the four
copies it replaced (lock_wait_timeout=0 became 60 s and statement_timeout=0 was dropped under Pulumi)."""
import dataclasses
import json

import pytest
import yaml

from llmemory_db.migrate import MigrationError, Settings, options
from llmemory_db.migrate.cli import COMMANDS, _parser
from llmemory_db.migrate.executor import settings_sql

from tests.helpers import ROOT

SAMPLE = Settings(migrations_dir="m", schema="llmemory", module_name="llmemory",
                  history_table="llmemory.schema_migrations", lock_wait_timeout=0, lock_timeout=1.5,
                  statement_timeout=0, strict=True, pool_mode="session", extensions=("vector", "pgcrypto"),
                  drop_on_destroy=True, accept_schema_drift=True)


@pytest.mark.parametrize("settings", [Settings(), SAMPLE], ids=["defaults", "every field set"])
def test_props_round_trip(settings):
    props = settings.to_props()
    assert Settings.from_props(props) == settings
    assert all(value is not None for value in props.values())  # Pulumi drops None: unset stays unset


def test_zero_means_zero_under_pulumi():
    """Both bugs: the provider read lock_wait_timeout with `or 60` and mapped statement_timeout 0 to None."""
    from llmemory_db.provider import settings_of
    settings = settings_of({"lock_wait_timeout": 0, "statement_timeout": 0, "lock_timeout": 0})
    assert settings.lock_wait_timeout == 0 and settings.statement_timeout == 0 and settings.lock_timeout == 0
    assert "SET LOCAL statement_timeout = '0ms'" in " ".join(s.as_string(None) for s in settings_sql(settings))
    unset = settings_of({})
    assert unset.lock_wait_timeout == 60 and unset.statement_timeout is None
    assert "statement_timeout" not in " ".join(s.as_string(None) for s in settings_sql(unset))


def test_props_of_stacks_written_before_the_settings_object():
    old = {"migrations_dir": "migrations", "schema": "", "module_name": "aword_memory",
           "history_table": "public.schema_migrations", "lock_wait_timeout": 60, "lock_timeout": 0,
           "statement_timeout": 0, "strict": False, "pool_mode": "auto", "drop_on_destroy": False,
           "extensions": ["vector"], "accept_schema_drift": False, "host": "h", "checksums": {}}
    settings = Settings.from_props(old)
    assert settings.schema is None and settings.extensions == ("vector",) and settings.lock_wait_timeout == 60


def test_cli_options_per_command_and_their_defaults():
    parser = _parser()
    args = parser.parse_args(["apply", "--dir", "m", "--schema", "llmemory", "--module", "llmemory",
                              "--history-table", "llmemory.schema_migrations", "--lock-wait", "0",
                              "--lock-timeout", "1.5", "--statement-timeout", "0", "--strict",
                              "--pool-mode", "session"])
    assert Settings.from_cli(args) == SAMPLE.replace(extensions=(), drop_on_destroy=False, accept_schema_drift=False)
    assert Settings.from_cli(parser.parse_args(["status"])) == Settings()
    with pytest.raises(SystemExit):  # resolve's options are its own
        parser.parse_args(["status", "--retry"])
    with pytest.raises(SystemExit):
        parser.parse_args(["lint", "--lock-wait", "3"])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_its_own_help(command, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert COMMANDS[command][0].split(":")[0] in " ".join(text.split())
    assert ("--retry" in text) == (command == "resolve")


def test_stack_config_keys_and_types():
    values = {"schema": "llmemory", "moduleName": "llmemory", "historyTable": "llmemory.schema_migrations",
              "migrationsDir": "m", "lockWaitTimeout": "0", "lockTimeout": "1.5", "statementTimeout": "0",
              "strict": "true", "poolMode": "session", "extensions": '["vector", "pgcrypto"]',
              "dropOnDestroy": "true", "acceptSchemaDrift": "true"}
    assert Settings.from_config(values.get) == SAMPLE
    with pytest.raises(MigrationError, match=r"llmemory-db:strict = 'yes': true or false expected"):
        Settings.from_config({"strict": "yes"}.get)
    with pytest.raises(MigrationError, match=r"llmemory-db:extensions .* a list of names expected"):
        Settings.from_config({"extensions": "vector"}.get)


def test_one_default_per_setting():
    """MigrationsArgs, the CLI and Pulumi.yaml take their defaults from Settings (schema: the stack's own)."""
    from llmemory_db import MigrationsArgs
    defaults = Settings.defaults()
    assert set(Settings.public_names()) <= {f.name for f in dataclasses.fields(MigrationsArgs)}  # all arguments
    for f in dataclasses.fields(MigrationsArgs):
        if f.name in defaults:
            assert f.default == defaults[f.name], f.name
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    keys = {key: name for name, key in Settings.config_keys().items()}
    for key, spec in project.items():
        # defaults that depend on other settings (a package's folder, module and history) are resolved by Settings
        assert not (key in ("migrationsDir", "moduleName", "historyTable") and spec.get("default")), key
        if key == "acceptEdits":  # [] declares no value: the setting's own default, which depends on the source
            assert spec["default"] == [] and "accept_edits" not in options.from_config(Settings, {key: "[]"}.get)
            continue
        if key in keys and key != "schema" and spec.get("default") not in (None, ""):
            default = defaults[keys[key]]
            declared = spec["default"]
            read = Settings.from_config({key: declared if isinstance(declared, str) else
                                         json.dumps(declared) if isinstance(declared, list) else
                                         str(declared).lower()}.get)
            assert getattr(read, keys[key]) == default or (key == "extensions" and declared == ["vector"]), key


def test_invalid_settings_name_the_setting():
    for field, value in [("lock_wait_timeout", -1), ("statement_timeout", "soon"), ("pool_mode", "x"),
                         ("extensions", ("vector;",)), ("lock_timeout", True)]:
        with pytest.raises(MigrationError) as info:
            Settings(**{field: value})
        assert "Remedy:" in str(info.value)
