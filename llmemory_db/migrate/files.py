"""Reading migration files: ordering, versions and checksums, exactly as pgdbm does."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

from .errors import DuplicateVersionError, MigrationFileError, MigrationsDirectoryError

NO_TRANSACTION_MARK = re.compile(r"^-- pgdbm:no-transaction(?=\s|$)", re.MULTILINE)
BOM = "\ufeff"


@dataclass(frozen=True)
class Migration:
    """One migration file as found on disk."""

    filename: str
    version: str
    text: str  # raw text as pgdbm reads it (UTF-8, BOM and line ends kept)
    checksum: str

    @property
    def no_transaction(self) -> bool:
        return bool(NO_TRANSACTION_MARK.search(self.text))

    @property
    def sql(self) -> str:
        """The text that is sent to the server (a leading BOM is not SQL)."""
        return self.text[1:] if self.text.startswith(BOM) else self.text


def checksum(text: str) -> str:
    """SHA-256 of the raw text with CRLF turned into LF and surrounding whitespace stripped (pgdbm's)."""
    return hashlib.sha256(text.replace("\r\n", "\n").strip().encode("utf-8")).hexdigest()


_VERSION_PATTERNS = (re.compile(r"^(\d+)_"), re.compile(r"^V(\d+)__"), re.compile(r"^(\d{8,14})_"))


def version_of(filename: str) -> str:
    """Version from the file name, with pgdbm's rules: 001_x.sql, V1__x.sql, timestamps, else the stem."""
    for pattern in _VERSION_PATTERNS:
        match = pattern.match(filename)
        if match:
            return match.group(1)
    return filename.split(".")[0]


def load(directory: Union[str, Path]) -> List[Migration]:
    """Read every ``*.sql`` file of ``directory`` in filename order.

    Raises a :class:`MigrationError` naming the file for anything pgdbm would
    trip over later: a missing directory, a link leaving the directory, a file
    that is not UTF-8, an empty file, two files with one version.
    """
    root = Path(directory)
    if not root.exists():
        raise MigrationsDirectoryError(
            f"Migrations directory {root} does not exist",
            remedy="create it, or point the migrations directory setting at the folder that holds the *.sql files")
    if not root.is_dir():
        raise MigrationsDirectoryError(f"Migrations path {root} is not a directory",
                                       remedy="point the migrations directory setting at a folder of *.sql files")
    resolved_root = root.resolve()
    migrations: List[Migration] = []
    by_version: dict = {}
    for path in sorted(p for p in root.glob("*.sql") if not p.name.startswith(".")):
        if not path.resolve().is_relative_to(resolved_root):
            raise MigrationFileError(
                f"Migration file {path.name} is a link to {path.resolve()}, outside the migrations directory {root}",
                remedy="copy the file into the migrations directory instead of linking to it", file=path.name)
        if not path.is_file():
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise MigrationFileError(
                f"Migration file {path.name} is not valid UTF-8 (byte {exc.start}, line {line})",
                remedy="save the file as UTF-8", file=path.name, line=line) from None
        if not text.replace(BOM, "").strip():
            raise MigrationFileError(f"Migration file {path.name} is empty",
                                     remedy="write the migration's SQL into it, or delete the file",
                                     file=path.name)
        migration = Migration(path.name, version_of(path.name), text, checksum(text))
        other = by_version.get(migration.version)
        if other is not None:
            raise DuplicateVersionError(
                f"Migration files {other} and {path.name} both claim version {migration.version}",
                remedy="give one of them the next free version number (never renumber an applied file)",
                file=path.name)
        by_version[migration.version] = path.name
        migrations.append(migration)
    return migrations
