"""Files, versions and checksums: byte-for-byte pgdbm's."""
import os

import pytest
from pgdbm.migrations import AsyncMigrationManager, Migration as PgdbmMigration

from llmemory_db.migrate import (DuplicateVersionError, MigrationFileError, MigrationsDirectoryError, checksum, load,
                                version_of)
from tests.helpers import write


def pgdbm_checksum(text: str) -> str:
    return AsyncMigrationManager._calculate_checksum(None, text)  # does not use self


@pytest.mark.parametrize("text", [
    "CREATE TABLE a (id int);",
    "  CREATE TABLE a (id int);\r\nCREATE INDEX i ON a (id);\r\n\r\n",
    "\ufeffSELECT 1;\n",
    "-- only a comment\n",
    "SELECT 'ünïcödé';\n\n\n",
])
def test_checksum_matches_pgdbm(text):
    assert checksum(text) == pgdbm_checksum(text)


def test_crlf_and_lf_files_have_the_same_checksum(tmp_path):
    write(tmp_path, {"001_a.sql": "SELECT 1;\r\nSELECT 2;\r\n"})
    lf = checksum("SELECT 1;\nSELECT 2;\n")
    assert load(tmp_path)[0].checksum == lf


@pytest.mark.parametrize("name", ["001_init.sql", "V1__init.sql", "20231225120000_init.sql", "init.sql",
                                  "V12__x.sql", "0042_x.y.sql", "abc.def.sql"])
def test_version_matches_pgdbm(name):
    assert version_of(name) == PgdbmMigration(filename=name, checksum="", content="").version


def test_load_orders_by_filename_and_skips_hidden_and_other_files(tmp_path):
    write(tmp_path, {"002_b.sql": "SELECT 2;", "001_a.sql": "SELECT 1;", ".003_hidden.sql": "SELECT 3;",
                     "notes.txt": "x"})
    assert [m.filename for m in load(tmp_path)] == ["001_a.sql", "002_b.sql"]


def test_missing_directory(tmp_path):
    with pytest.raises(MigrationsDirectoryError, match=r"does not exist") as info:
        load(tmp_path / "nope")
    assert "Remedy:" in str(info.value)


def test_empty_file_is_named(tmp_path):
    write(tmp_path, {"001_a.sql": "SELECT 1;", "002_empty.sql": "  \n\n"})
    with pytest.raises(MigrationFileError, match=r"002_empty.sql is empty"):
        load(tmp_path)


def test_not_utf8_names_file_and_line(tmp_path):
    write(tmp_path, {"001_latin1.sql": "SELECT 1;\nSELECT 'caf\xe9';\n".encode("latin-1")})
    with pytest.raises(MigrationFileError, match=r"001_latin1.sql is not valid UTF-8 \(byte \d+, line 2\)"):
        load(tmp_path)


def test_duplicate_versions_name_both_files(tmp_path):
    write(tmp_path, {"001_a.sql": "SELECT 1;", "001_b.sql": "SELECT 2;"})
    with pytest.raises(DuplicateVersionError, match=r"001_a.sql and 001_b.sql both claim version 001"):
        load(tmp_path)


def test_link_leaving_the_directory_is_rejected(tmp_path):
    outside = write(tmp_path / "outside", {"evil.sql": "DROP TABLE x;"})
    migrations = write(tmp_path / "migrations", {"001_a.sql": "SELECT 1;"})
    os.symlink(outside / "evil.sql", migrations / "002_evil.sql")
    with pytest.raises(MigrationFileError, match=r"002_evil.sql is a link .* outside the migrations directory"):
        load(migrations)


def test_link_inside_the_directory_is_fine(tmp_path):
    migrations = write(tmp_path, {"001_a.sql": "SELECT 1;"})
    os.symlink(migrations / "001_a.sql", migrations / "002_same.sql")
    assert [m.filename for m in load(migrations)] == ["001_a.sql", "002_same.sql"]


def test_bom_is_kept_for_the_checksum_and_dropped_for_execution(tmp_path):
    write(tmp_path, {"001_bom.sql": "\ufeffSELECT 1;\n"})
    migration = load(tmp_path)[0]
    assert migration.checksum == pgdbm_checksum("\ufeffSELECT 1;\n")
    assert migration.sql == "SELECT 1;\n"


def test_no_transaction_marker_as_pgdbm_reads_it(tmp_path):
    write(tmp_path, {"001_a.sql": "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);",
                     "002_b.sql": "SELECT 1; -- pgdbm:no-transaction\n",
                     "003_c.sql": "-- pgdbm:no-transactions\nSELECT 1;"})
    assert [m.no_transaction for m in load(tmp_path)] == [True, False, False]
