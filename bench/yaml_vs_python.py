"""A no-change `pulumi preview` of the YAML example (through the package's plugin) against the same deployment as a
Python program (the native import: dynamic resources), side by side.

    .venv/bin/python bench/yaml_vs_python.py [--reps 5]      # or: make bench-yaml

Both deploy llmemory 0.5.0's own migrations (schema llmemory, extensions vector and pgcrypto) into a fresh database
each on the embedded PostgreSQL (.state/pg-bench), once; then each preview is timed as a whole process, the two
programs taking turns. Prints medians (min-max) and the ratio; writes bench/yaml_vs_python.json. The pulumi CLI is
the toolchain's (.state/toolchain-bin, else PATH).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent

from tools.pgserver import Server

PYTHON_PROGRAM = """\
import pulumi
from llmemory_db import MigratedSchema, MigratedSchemaArgs

config = pulumi.Config()
memory = MigratedSchema("memory", MigratedSchemaArgs(
    schema=config.get("schema") or "llmemory", migrations_package="llmemory", extensions=("vector", "pgcrypto"),
    runtime_roles=config.get_object("runtimeRoles") or []))
for name in ("schema_name", "module_name", "history_table", "applied", "checksums", "pending", "fingerprint",
             "package_version"):
    pulumi.export(name, getattr(memory, name))
"""


def log(message: str) -> None:
    print(f"[bench-yaml] {message}", file=sys.stderr, flush=True)


def pulumi_bin() -> str:
    recorded = ROOT / ".state" / "toolchain-bin"
    if recorded.exists() and (Path(recorded.read_text().strip()) / "pulumi").exists():
        return str(Path(recorded.read_text().strip()) / "pulumi")
    found = shutil.which("pulumi")
    if not found:
        raise SystemExit("error: no pulumi CLI: run `make toolchain` first")
    return found


def project(workdir: Path, kind: str) -> Path:
    directory = workdir / kind
    directory.mkdir(parents=True)
    if kind == "yaml":
        text = (ROOT / "examples" / "yaml-consumer" / "Pulumi.yaml").read_text()
        (directory / "Pulumi.yaml").write_text(text.replace("../../plugin", str(ROOT / "plugin")))
    else:
        (directory / "Pulumi.yaml").write_text(
            f"name: llmemory-python\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT / '.venv'}\n")
        (directory / "__main__.py").write_text(PYTHON_PROGRAM)
    return directory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/yaml_vs_python.py", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "yaml_vs_python.json")
    args = parser.parse_args(argv)
    pulumi = pulumi_bin()
    server = Server((ROOT / ".state" / "pg-bench").resolve()).start()
    databases = {kind: f"bench_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("yaml", "python")}
    times: dict = {kind: [] for kind in databases}
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        for name in databases.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="llmemory-bench-yaml-") as tmp:
            envs, dirs = {}, {}
            for kind, database in databases.items():
                dirs[kind] = project(Path(tmp), kind)
                backend = Path(tmp) / f"{kind}-backend"
                backend.mkdir()
                envs[kind] = dict(os.environ, PULUMI_BACKEND_URL=f"file://{backend}", PULUMI_CONFIG_PASSPHRASE="bench",
                                  PULUMI_SKIP_UPDATE_CHECK="true", PIP_DISABLE_PIP_VERSION_CHECK="1",
                                  PYTHONPATH=str(ROOT),   # this checkout's llmemory_db in the Python program too
                                  PATH=f"{Path(pulumi).parent}{os.pathsep}{os.environ.get('PATH', '')}")

                def cli(*command: str, kind: str = kind) -> None:
                    done = subprocess.run([pulumi, *command], cwd=dirs[kind], env=envs[kind], capture_output=True,
                                          text=True)
                    if done.returncode != 0:
                        raise SystemExit(f"error: pulumi {' '.join(command[:2])} ({kind}) failed:\n"
                                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

                cli("stack", "init", "bench", "--non-interactive")
                for key, value in (("postgresql:host", "127.0.0.1"), ("postgresql:port", str(server.port)),
                                   ("postgresql:username", "postgres"), ("postgresql:database", database),
                                   ("postgresql:sslmode", "disable")):
                    cli("config", "set", key, value)
                cli("config", "set", "--secret", "postgresql:password", server.password)
                started = time.perf_counter()
                cli("up", "--yes", "--skip-preview", "--non-interactive")
                log(f"{kind}: up {time.perf_counter() - started:.2f}s")
            for rep in range(args.reps):
                for kind in (("yaml", "python") if rep % 2 == 0 else ("python", "yaml")):
                    started = time.perf_counter()
                    done = subprocess.run([pulumi, "preview", "--expect-no-changes", "--non-interactive"],
                                          cwd=dirs[kind], env=envs[kind], capture_output=True, text=True)
                    elapsed = time.perf_counter() - started
                    if done.returncode != 0:
                        raise SystemExit(f"error: preview ({kind}) failed:\n{done.stdout[-3000:]}")
                    times[kind].append(elapsed)
                    log(f"{kind}: preview {elapsed:.2f}s")
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            for name in databases.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def summary(values):
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3), "n": len(values)}

    result = {kind: summary(values) for kind, values in times.items()}
    result["ratio"] = round(result["yaml"]["median"] / result["python"]["median"], 2)
    result["machine"] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [("YAML program through the package", "yaml"), ("Python program, native import", "python")]
    print(f"no-change pulumi preview, {args.reps} runs each, median (min-max):")
    for label, kind in rows:
        r = result[kind]
        print(f"  {label:36} {r['median']:.2f} s ({r['min']:.2f}-{r['max']:.2f})")
    print(f"  {'ratio YAML / Python':36} {result['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
