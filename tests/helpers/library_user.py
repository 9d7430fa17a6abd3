"""A library user's world, for the e2e tests: this repository's wheel, a fresh venv with no path to the checkout,
and a Pulumi project outside the repository whose files are the README's own example.

- :func:`wheel` builds the wheel (and the sdist) once, from a copy of the package sources, into
  ``.state/library-user/dist-<hash of the sources>/`` (a rebuild only when a source changed).
- :func:`venv` makes a venv under ``.state/library-user/venv-<hash>/`` (keyed by the wheel, the README's install
  commands and requirements) by running the README's own ``pip install`` lines, the ``--find-links`` folder
  pointed at the wheel's.
- :func:`readme_example` reads the fenced blocks that follow ``<!-- library-user-example: NAME -->`` markers in
  the README's "Using the component in your own stack".
- :func:`project` writes those files into a folder (``venv`` is a link to the cached venv, so ``Pulumi.yaml`` is
  the README's unchanged); :func:`stack` configures a stack of it with the keys of the README's ``pulumi config
  set`` lines, pointed at the embedded server, and an environment without the checkout: no ``.venv/bin`` on the
  PATH, no ``PYTHONPATH``.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pulumi import automation as auto

from tests.helpers import stacks as h

ROOT = h.ROOT
STATE = ROOT / ".state" / "library-user"
README = ROOT / "README.md"
OWN_STACK = ROOT / "docs" / "own-stack.md"  # the rest of the project the README's __main__.py belongs to
# what the wheel is made of: the sdist's inputs (MANIFEST.in prunes the rest)
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "docs/own-stack.md", "llmemory_db", "migrations")
MARKER = re.compile(r"<!-- library-user-example: (\S+) -->\n```[a-z]*\n(.*?)```\n", re.S)
KEEP = 2  # cached venvs and wheels kept (the newest)


def log(message: str) -> None:
    print(f"[library-user] {message}", file=sys.stderr, flush=True)


@contextmanager
def _locked():
    """One builder at a time (two pytest sessions of this checkout)."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _source_files() -> List[Path]:
    files = []
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                      and p.suffix != ".pyc"]
        elif path.exists():
            files.append(path)
    return sorted(files)


def sources_hash() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _prune(prefix: str, keep: Path) -> None:
    """Remove older cached entries named ``prefix*`` (the newest KEEP stay)."""
    entries = sorted(STATE.glob(prefix + "*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [e for e in entries if e != keep][KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def wheel() -> Path:
    """The wheel of the current sources (``python -m build`` from a copy of them: the checkout is not written)."""
    with _locked():
        dist = STATE / f"dist-{sources_hash()}"
        found = sorted(dist.glob("llmemory_db-*.whl")) if (dist / ".complete").exists() else []
        if found:
            os.utime(dist)
            return found[0]
        shutil.rmtree(dist, ignore_errors=True)
        started = time.monotonic()
        log(f"building the wheel and the sdist (python -m build) into {dist}")
        with tempfile.TemporaryDirectory(prefix="llmemory-db-src-") as tmp:
            source = Path(tmp) / "llmemory-db"
            for path in _source_files():
                target = source / path.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
                                    capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"python -m build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        (dist / ".complete").touch()
        _prune("dist-", dist)
        log(f"built in {time.monotonic() - started:.1f} s")
        return sorted(dist.glob("llmemory_db-*.whl"))[0]


def readme_example(readme: Optional[str] = None) -> Dict[str, str]:
    """NAME -> text of each fenced block after a ``library-user-example`` marker: the README's ``__main__.py``,
    and the rest of the project in docs/own-stack.md."""
    text = (readme if readme is not None else README.read_text()) + "\n" + OWN_STACK.read_text()
    blocks = {name: body for name, body in MARKER.findall(text)}
    missing = {"install", "requirements.txt", "Pulumi.yaml", "__main__.py", "config"} - set(blocks)
    if missing:
        raise AssertionError(f"README.md and docs/own-stack.md lack the example blocks {sorted(missing)}")
    return blocks


def pip_commands(install: str, dist: Path) -> List[List[str]]:
    """The README's ``venv/bin/pip install ...`` lines as argument lists (comments dropped), ``--find-links``
    pointed at ``dist``."""
    commands = []
    for line in install.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] != "venv/bin/pip":
            continue
        if "--find-links" in words:
            words[words.index("--find-links") + 1] = str(dist)
        commands.append(words[1:])
    if not commands:
        raise AssertionError("the README's install block has no `venv/bin/pip install` line")
    return commands


def base_python() -> str:
    """The interpreter this test venv was made from (a venv made from the .venv would still be one of it)."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


def venv(example: Optional[Dict[str, str]] = None) -> Path:
    """A venv with the wheel installed by the README's install commands (cached by wheel, commands, requirements)."""
    example = example or readme_example()
    built = wheel()
    key = hashlib.sha256(built.read_bytes() + example["install"].encode() + example["requirements.txt"].encode()
                         + base_python().encode()).hexdigest()[:16]
    with _locked():
        target = STATE / f"venv-{key}"
        if (target / ".complete").exists():
            os.utime(target)
            return target
        shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        log(f"creating a fresh venv with the wheel {built.name} in {target} (pip, from the shared cache)")
        subprocess.run([base_python(), "-m", "venv", str(target)], check=True)
        with tempfile.TemporaryDirectory(prefix="llmemory-db-install-") as tmp:
            (Path(tmp) / "requirements.txt").write_text(example["requirements.txt"])
            env = clean_env(target)
            for args in pip_commands(example["install"], built.parent):
                log("pip " + " ".join(args))
                result = subprocess.run([str(target / "bin" / "pip"), *args, "--disable-pip-version-check", "-q"],
                                        cwd=tmp, env=env, capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"pip {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        (target / ".complete").touch()
        _prune("venv-", target)
        log(f"venv ready in {time.monotonic() - started:.1f} s")
        return target


def clean_env(venv_dir: Path) -> Dict[str, str]:
    """os.environ without the checkout: PATH entries inside the repository removed (its .venv/bin would lend its
    squawk and python), PYTHONPATH emptied, VIRTUAL_ENV the library user's venv."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and not Path(p).resolve().is_relative_to(ROOT)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    try:
        first = [str(h.toolchain_bin())]
    except RuntimeError:  # no Pulumi CLI: fine for what needs none (pip, the packaging checks)
        first = []
    env.update(PATH=os.pathsep.join(first + [str(venv_dir / "bin")] + path),
               VIRTUAL_ENV=str(venv_dir), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def project(directory: Path, venv_dir: Path, example: Optional[Dict[str, str]] = None) -> Path:
    """The README's project in ``directory`` (outside the repository): every example file, ``venv`` a link."""
    example = example or readme_example()
    if directory.resolve().is_relative_to(ROOT):
        raise AssertionError(f"{directory} is inside the repository")
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in example.items():
        if name in ("install", "config"):
            continue
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    (directory / "venv").symlink_to(venv_dir, target_is_directory=True)
    return directory


def config_keys(config_block: str) -> Dict[str, Tuple[Optional[str], bool]]:
    """``pulumi config set [--secret] [--path] KEY [VALUE]`` lines: KEY -> (VALUE or None, secret)."""
    keys = {}
    for line in config_block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:3] != ["pulumi", "config", "set"]:
            continue
        args = [w for w in words[3:] if not w.startswith("--")]
        keys[args[0]] = (args[1] if len(args) > 1 else None, "--secret" in words)
    return keys


def stack(project_dir: Path, venv_dir: Path, backend: Path, server, database: str,
          values: Dict[str, str], example: Optional[Dict[str, str]] = None, stack_name: str = "dev") -> auto.Stack:
    """A stack of the README's project with every key its ``pulumi config set`` lines set: ``postgresql:*`` from
    the embedded server, the rest from ``values`` (each README key must get a value: a secret it prompts for
    has none), nothing more."""
    example = example or readme_example()
    readme_keys = config_keys(example["config"])
    given = {"postgresql:host": "127.0.0.1", "postgresql:port": str(server.port), "postgresql:username": "postgres",
             "postgresql:password": server.password, "postgresql:database": database,
             "postgresql:sslmode": "disable", **values}
    unknown = set(given) - set(readme_keys)
    if unknown:
        raise AssertionError(f"the test sets config keys the README does not: {sorted(unknown)}")
    missing = set(readme_keys) - set(given)
    if missing:
        raise AssertionError(f"no value for the README's config keys {sorted(missing)}")
    backend.mkdir(parents=True, exist_ok=True)
    env = {**clean_env(venv_dir), "PULUMI_CONFIG_PASSPHRASE": h.PASSPHRASE, "PULUMI_BACKEND_URL": f"file://{backend}",
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true", "PYTHONPATH": ""}
    ws = auto.LocalWorkspaceOptions(work_dir=str(project_dir), env_vars=env,
                                    pulumi_command=auto.PulumiCommand(root=str(h.toolchain_bin().parent)))
    st = auto.create_or_select_stack(stack_name=stack_name, work_dir=str(project_dir), opts=ws)
    st.set_all_config({key: auto.ConfigValue(value, secret=readme_keys[key][1]) for key, value in given.items()})
    return st
