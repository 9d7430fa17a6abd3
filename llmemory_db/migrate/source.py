"""Where migration files come from: a folder, or the migrations folder shipped inside an installed Python
package (a pgdbm library such as llmemory), found without importing the package (importing llmemory pulls in
heavy dependencies, and the infra environment installs it with --no-deps)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import PackageSourceError
from .spelling import setting

PACKAGE_SPEC = re.compile(r"^(?P<package>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<folder>[A-Za-z0-9_./-]+))?$")
DEFAULT_FOLDER = "migrations"


@dataclass(frozen=True)
class PackageSource:
    package: str        # top-level import name, e.g. llmemory
    folder: Path        # its migrations folder
    distribution: str   # the installed distribution that provides it, e.g. llmemory
    version: str        # its version, e.g. 0.5.0

    def describe(self) -> str:
        return f"{self.distribution} {self.version}"


def find_package(spec: str) -> PackageSource:
    """``package`` or ``package:sub/folder`` (default ``migrations``) -> the folder inside the installed package."""
    match = PACKAGE_SPEC.match(spec or "")
    if not match:
        raise PackageSourceError(f"Invalid value {spec!r} for {setting('migrations_package')}: use a top-level package name, optionally "
                             "followed by :folder (for example llmemory or mylib:db/migrations)",
                             remedy="set migrations_package to the package's name")
    package, folder = match.group("package"), match.group("folder") or DEFAULT_FOLDER
    found = importlib.util.find_spec(package)  # a top-level name: locates, does not import
    install = f"pip install --no-deps {package}==<version> into the environment of the stack's program"
    if found is None or not found.submodule_search_locations:
        raise PackageSourceError(f"The Python package {package!r} is not installed in this environment, so its "
                             "migrations cannot be read", remedy=install + " (its dependencies are not needed)")
    root = Path(next(iter(found.submodule_search_locations)))
    path = (root / folder).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_dir():
        raise PackageSourceError(f"The package {package!r} ({root}) has no folder {folder!r} of migrations",
                             remedy=f"name the folder that holds its *.sql files: {package}:<folder>")
    distributions = importlib.metadata.packages_distributions().get(package) or [package]
    distribution = distributions[0]
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return PackageSource(package, path, distribution, version)


def pgdbm_history_table(schema: Optional[str]) -> str:
    """Where pgdbm 0.5 keeps the history: ``<schema>.schema_migrations`` in schema mode, else public's."""
    return f"{schema}.schema_migrations" if schema else "public.schema_migrations"
