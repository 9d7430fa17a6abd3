"""Drive the real pulumi CLI through the Automation API: a project folder per test, a file backend, passphrase secrets."""
from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from typing import Dict, Optional

from pulumi import automation as auto

from tests.helpers import ROOT

VENV = ROOT / ".venv"
PASSPHRASE = "test-passphrase"


def toolchain_bin() -> Path:
    """The bin folder of the Pulumi toolchain that `make toolchain` chose (or PULUMI_BIN_DIR)."""
    explicit = os.environ.get("PULUMI_BIN_DIR")
    if explicit:
        return Path(explicit)
    recorded = ROOT / ".state" / "toolchain-bin"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    found = shutil.which("pulumi")
    if found:
        return Path(found).parent
    raise RuntimeError("no pulumi CLI: run `make toolchain` (or `make test`, which does it)")


def pulumi_env(backend: Path) -> Dict[str, str]:
    bin_dir = toolchain_bin()
    return {
        "PATH": f"{bin_dir}{os.pathsep}{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_BACKEND_URL": f"file://{backend}",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
    }


def write_project(directory: Path, program: str, migrations: Optional[Dict[str, str]] = None,
                  name: str = "e2e") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Pulumi.yaml").write_text(textwrap.dedent(f"""\
        name: {name}
        runtime:
          name: python
          options:
            virtualenv: {VENV}
        """))
    (directory / "__main__.py").write_text(textwrap.dedent(program))
    if migrations is not None:
        mdir = directory / "migrations"
        mdir.mkdir(exist_ok=True)
        for filename, text in migrations.items():
            (mdir / filename).write_text(text)
    return directory


def stack(project: Path, backend: Path, server, database: str, stack_name: str = "test",
          config: Optional[Dict[str, str]] = None, env: Optional[Dict[str, str]] = None) -> auto.Stack:
    """A stack of ``project`` whose postgresql:* config points at ``database`` on the embedded server (``env``:
    more environment variables for the CLI and the programs and plugins it starts)."""
    backend.mkdir(parents=True, exist_ok=True)
    env = {**pulumi_env(backend), **(env or {})}
    ws = auto.LocalWorkspaceOptions(work_dir=str(project), env_vars=env,
                                    pulumi_command=auto.PulumiCommand(root=str(toolchain_bin().parent)))
    st = auto.create_or_select_stack(stack_name=stack_name, work_dir=str(project), opts=ws)
    values = {
        "postgresql:host": auto.ConfigValue("127.0.0.1"),
        "postgresql:port": auto.ConfigValue(str(server.port)),
        "postgresql:username": auto.ConfigValue("postgres"),
        "postgresql:password": auto.ConfigValue(server.password, secret=True),
        "postgresql:database": auto.ConfigValue(database),
        "postgresql:sslmode": auto.ConfigValue("disable"),
    }
    for key, value in (config or {}).items():
        values[key] = auto.ConfigValue(value)
    st.set_all_config(values)
    return st


def changes(preview_result) -> Dict[str, int]:
    """Non-'same' operation counts of a preview."""
    return {str(op): n for op, n in preview_result.change_summary.items() if str(op) not in ("same", "OpType.SAME")
            and n}


def state_text(backend: Path, every_file: bool = False) -> str:
    """The stacks' state as text; ``every_file``: also history, backups and locks, gunzipped."""
    if not every_file:
        return "\n".join(p.read_text(errors="replace") for p in backend.rglob("*.json"))
    import gzip
    texts = []
    for path in backend.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            texts.append((gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8", "replace"))
    return "\n".join(texts)


def run(operation, **kwargs):
    """``operation`` (stack.up, stack.preview, ...) with what the CLI printed: (result, output); a CommandError is
    kept (result None, its text appended to the output), not raised."""
    lines: list = []
    try:
        return operation(on_output=lines.append, **kwargs), "\n".join(lines)
    except auto.CommandError as exc:
        return None, "\n".join(lines) + str(exc)
