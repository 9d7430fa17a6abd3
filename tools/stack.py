"""Stack operations behind the Makefile: `python -m tools.stack up|preview|drift|destroy --stack NAME`.

For the ``dev`` stack it starts the embedded PostgreSQL, creates the
``llmemory`` database and writes the ``postgresql:*`` config (password as a
secret).  Other stacks use the config their owner set (see README).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".state"
DEV_DATABASE = "llmemory"
DEV_CONFIG = {"llmemory-db:runtimeRoles": ["llmemory_app"], "llmemory-db:createRuntimeRoles": True}


def log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def pulumi(*args: str, check: bool = True, capture: bool = False, stack: str = "") -> subprocess.CompletedProcess:
    cmd = ["pulumi", *args, "--non-interactive"]
    if stack:
        cmd += ["--stack", stack]
    result = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=capture)
    if check and result.returncode != 0:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(result.returncode)
    return result


def ensure_backend_and_stack(stack: str) -> None:
    backend = os.environ.get("PULUMI_BACKEND_URL", "")
    if backend.startswith("file://"):
        Path(backend[len("file://"):]).mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PULUMI_CONFIG_PASSPHRASE") and not os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        raise SystemExit(f"error: stack {stack!r} needs its secrets passphrase: export PULUMI_CONFIG_PASSPHRASE "
                         "(or PULUMI_CONFIG_PASSPHRASE_FILE); only the dev stack has a built-in one")
    stacks = pulumi("stack", "ls", "--json", capture=True)
    if stack not in {s["name"] for s in json.loads(stacks.stdout or "[]")}:
        log(f"creating stack {stack} (local file backend, passphrase secrets)")
        pulumi("stack", "init", stack, "--secrets-provider", "passphrase", capture=True)


def configure_dev(stack: str) -> None:
    sys.path.insert(0, str(ROOT))
    from tools.pgserver import HOST, SUPERUSER, Server
    import psycopg

    server = Server(STATE / "pg").start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEV_DATABASE,)).fetchone():
            log(f"creating database {DEV_DATABASE}")
            conn.execute(f'CREATE DATABASE "{DEV_DATABASE}"')
    wanted = {"postgresql:host": HOST, "postgresql:port": str(server.port), "postgresql:username": SUPERUSER,
              "postgresql:database": DEV_DATABASE, "postgresql:sslmode": "disable", **DEV_CONFIG}
    current = json.loads(pulumi("config", "--json", "--show-secrets", capture=True, stack=stack).stdout or "{}")
    for key, value in wanted.items():
        entry = current.get(key, {})
        have = entry.get("objectValue", entry.get("value"))
        if have == value or (isinstance(value, bool) and str(have).lower() == str(value).lower()):
            continue
        if isinstance(value, list):
            pulumi("config", "rm", key, capture=True, check=False, stack=stack)
            for index, item in enumerate(value):
                pulumi("config", "set", "--path", f"{key}[{index}]", item, capture=True, stack=stack)
        else:
            pulumi("config", "set", key, str(value).lower() if isinstance(value, bool) else value,
                   capture=True, stack=stack)
    if current.get("postgresql:password", {}).get("value") != server.password:
        pulumi("config", "set", "--secret", "postgresql:password", server.password, capture=True, stack=stack)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stack")
    parser.add_argument("command", choices=["up", "preview", "drift", "destroy", "recover"])
    parser.add_argument("--stack", default="dev")
    args = parser.parse_args(argv)
    started = time.monotonic()
    ensure_backend_and_stack(args.stack)
    if args.stack == "dev":
        configure_dev(args.stack)
    if args.command == "up":
        pulumi("up", "--yes", "--skip-preview", stack=args.stack)
        pulumi("stack", "output", stack=args.stack)
    elif args.command == "preview":
        pulumi("preview", "--diff", stack=args.stack)
    elif args.command == "drift":
        result = pulumi("preview", "--refresh", "--expect-no-changes", "--diff", check=False, stack=args.stack)
        if result.returncode != 0:
            log(f"drift detected in stack {args.stack} (or the preview failed): see above")
            return result.returncode
        log(f"no drift in stack {args.stack}")
    elif args.command == "destroy":
        pulumi("destroy", "--yes", "--skip-preview", stack=args.stack)
    elif args.command == "recover":
        # after a `pulumi up` that was killed: its lock, then its pending operations. Safe for the migrations:
        # each one committed whole or not at all, and the next up applies whatever is not recorded.
        log("removing the killed run's lock (pulumi cancel): make sure no other `pulumi up` of this stack runs")
        pulumi("cancel", "--yes", stack=args.stack)
        pulumi("refresh", "--yes", "--skip-preview", "--clear-pending-creates", stack=args.stack)
        log(f"recovered: run `make up STACK={args.stack}` to finish the deployment")
    log(f"{args.command} {args.stack} done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
