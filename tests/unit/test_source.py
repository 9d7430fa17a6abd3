"""Migrations from an installed package: found without importing it, with the distribution's version; the
module and history default to the package's pgdbm layout."""
import importlib
import sys

import pytest

from llmemory_db.migrate import MigrationError, Settings
from llmemory_db.migrate.source import find_package
from tests.helpers.packages import make_package


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("fakelib", None)


def test_package_folder_version_and_pgdbm_layout_without_importing_it(site):
    package = make_package(site)
    source = find_package("fakelib")
    assert source.folder == (package / "migrations").resolve() and source.describe() == "fakelib 1.2.3"
    assert "fakelib" not in sys.modules
    settings = Settings(migrations_package="fakelib", schema="app")
    assert (settings.module_name, settings.history_table) == ("fakelib", "app.schema_migrations")
    assert Settings(migrations_package="fakelib").history_table == "public.schema_migrations"
    explicit = Settings(migrations_package="fakelib", schema="app", module_name="other", history_table="h")
    assert (explicit.module_name, explicit.history_table) == ("other", "h")
    assert Settings.from_props(settings.to_props()) == settings and "migrations_dir" not in settings.to_props()


def test_the_real_llmemory_package():
    settings = Settings(migrations_package="llmemory", schema="llmemory")
    assert settings.package.describe() == "llmemory 0.5.0"
    assert settings.module_name == "llmemory" and settings.history_table == "llmemory.schema_migrations"
    assert sorted(p.name for p in settings.package.folder.glob("*.sql")) == [
        "001_complete_schema.sql", "002_upsert_identity_contract.sql"]
    assert not [m for m in sys.modules if m == "llmemory" or m.startswith("llmemory.")]


def test_package_subfolder(site):
    make_package(site, folder="db/sql")
    assert find_package("fakelib:db/sql").folder.name == "sql"


@pytest.mark.parametrize("spec,message", [
    ("not_installed_anywhere", "is not installed in this environment"),
    ("fakelib:nowhere", "has no folder 'nowhere'"),
    ("fakelib:../..", "has no folder"),
    ("bad-name", "Invalid value 'bad-name' for migrations_package"),
])
def test_bad_package_specs(site, spec, message):
    make_package(site)
    with pytest.raises(MigrationError) as info:
        Settings(migrations_package=spec)
    assert message in str(info.value) and "Remedy:" in str(info.value)


def test_package_and_folder_both_set_is_an_error(site, tmp_path):
    make_package(site)
    with pytest.raises(MigrationError, match="Both migrations_dir .* and migrations_package"):
        Settings(migrations_package="fakelib", migrations_dir=str(tmp_path))
