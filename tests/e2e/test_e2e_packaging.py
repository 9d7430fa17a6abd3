"""The distribution (issue 23, "Packaging"): `python -m build` makes a wheel and an sdist; the wheel's only
top-level package is llmemory_db, with the spec's migrations inside; a fresh venv that installs it has everything
the package imports and runs (squawk included), with no path to the checkout.

The wheel and the venv are tests/library_user.py's, cached under .state/library-user (the first run builds them:
about 10 s and 30 s)."""
import email.parser
import subprocess
import tarfile
import zipfile

from llmemory_db.migrate.squawk import SQUAWK_VERSION
from tests.helpers import library_user as lu


def test_the_wheel_ships_llmemory_db_alone_with_the_spec_migrations():
    wheel = lu.wheel()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.parser.Parser().parsestr(
            archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"llmemory_db"}, top
    assert "llmemory_db/llmemory_migrations/001_complete_schema.sql" in names
    assert {"llmemory_db/migrate/__init__.py", "llmemory_db/package/server.py", "llmemory_db/compat.py"} <= set(names)
    requires = metadata.get_all("Requires-Dist")
    assert f"squawk-cli=={SQUAWK_VERSION}" in requires
    sdists = list(wheel.parent.glob("llmemory_db-*.tar.gz"))
    assert len(sdists) == 1  # python -m build made the wheel from this sdist
    with tarfile.open(sdists[0]) as archive:
        members = archive.getnames()
    root = members[0].split("/")[0]
    assert f"{root}/migrations/001_complete_schema.sql" in members and f"{root}/pyproject.toml" in members
    assert not [m for m in members if m.startswith((f"{root}/components", f"{root}/tests"))]


def test_a_fresh_venv_of_the_wheel_imports_every_module_and_has_squawk(tmp_path):
    venv = lu.venv()
    python = str(venv / "bin" / "python")
    code = ("import importlib, pkgutil, sys, llmemory_db\n"
            "names = [m.name for m in pkgutil.walk_packages(llmemory_db.__path__, 'llmemory_db.')\n"
            "         if not m.name.endswith('.__main__')]  # (those run a command)\n"
            "[importlib.import_module(n) for n in names]\n"
            "print(llmemory_db.__file__); print(len(names))\n"
            "print(llmemory_db.LLMEMORY_MIGRATIONS)\n"
            "print(importlib.util.find_spec('components'))\n")
    out = subprocess.run([python, "-c", code], cwd=tmp_path, env=lu.clean_env(venv), capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    location, count, migrations, components = out.stdout.splitlines()
    assert location.startswith(str(venv)) and int(count) >= 25
    assert migrations.endswith("site-packages/llmemory_db/llmemory_migrations")
    assert components == "None"
    squawk = subprocess.run([str(venv / "bin" / "squawk"), "--version"], capture_output=True, text=True)
    assert squawk.returncode == 0 and SQUAWK_VERSION in squawk.stdout + squawk.stderr
    # the engine finds it beside the venv's interpreter, with no PATH to help
    found = subprocess.run([python, "-c", "from llmemory_db.migrate.squawk import squawk_binary; print(squawk_binary())"],
                           cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert found.stdout.strip() == str(venv / "bin" / "squawk"), found.stderr


def test_readme_example_blocks_are_extracted_whole():
    """The harness reads the README's marked blocks; a block missing or renamed fails here, before any e2e."""
    example = lu.readme_example()
    assert "migrations_package=\"llmemory\"" in example["__main__.py"]
    assert "virtualenv: venv" in example["Pulumi.yaml"]
    assert lu.config_keys(example["config"])["postgresql:password"] == (None, True)
    commands = lu.pip_commands(example["install"], lu.STATE / "dist")
    assert ["install", "--find-links", str(lu.STATE / "dist"), "-r", "requirements.txt"] in commands
    assert ["install", "--no-deps", "llmemory==0.5.0"] in commands
    broken = lu.README.read_text().replace("<!-- library-user-example: __main__.py -->", "")
    try:
        lu.readme_example(broken)
    except AssertionError as exc:
        assert "__main__.py" in str(exc)
    else:
        raise AssertionError("a README without the __main__.py block was accepted")
