"""Stack operations behind the Makefile: `python -m tools.stack up|preview|drift|destroy|recover --stack NAME`.

Drives the pulumi CLI through Pulumi's Automation API, as the tests do; the CLI's own output is streamed as
it comes. The local stacks (LOCAL_STACKS: ``dev``, the spec's llmemory schema; ``llmemory``, the real llmemory release's
own files for its application) run on the embedded PostgreSQL: this starts it, creates the stack's database and
writes the ``postgresql:*`` config (password as a secret) and the stack's settings. Other stacks use the config
their owner set (see README).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Union

from pulumi import automation as auto

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".state"
# stack -> its database on the embedded server and its llmemory-db:* settings
LOCAL_STACKS: Dict[str, Dict[str, Union[str, Dict[str, Union[str, bool, list]]]]] = {
    # the spec's llmemory schema (this project's rendering of the migration guide: module aword_memory)
    "dev": {"database": "llmemory", "config": {
        "llmemory-db:runtimeRoles": ["llmemory_app"], "llmemory-db:createRuntimeRoles": True}},
    # the real llmemory 0.5.0 release: its own files from its package, its extensions, the role its app runs as
    # (pgdbm's start-up check included, guarded)
    "llmemory": {"database": "llmemory_service", "config": {
        "llmemory-db:schema": "llmemory", "llmemory-db:migrationsPackage": "llmemory",
        "llmemory-db:extensions": ["vector", "pgcrypto"], "llmemory-db:runtimeRoles": ["llmemory_service"],
        "llmemory-db:startupRole": "llmemory_service", "llmemory-db:createRuntimeRoles": True}},
}


def log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def echo(line: str) -> None:
    print(line, end="" if line.endswith("\n") else "\n", flush=True)


def echo_error(line: str) -> None:
    """The CLI's stderr, streamed too (with --diff, provider messages such as "1 pending: ..." go there)."""
    print(line, end="" if line.endswith("\n") else "\n", file=sys.stderr, flush=True)


def open_stack(name: str, work_dir: Path = ROOT) -> auto.Stack:
    """The stack ``name`` of the project in ``work_dir`` (created on first use: local file backend, passphrase
    secrets)."""
    backend = os.environ.get("PULUMI_BACKEND_URL", "")
    if backend.startswith("file://"):
        Path(backend[len("file://"):]).mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PULUMI_CONFIG_PASSPHRASE") and not os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        raise SystemExit(f"error: stack {name!r} needs its secrets passphrase: export PULUMI_CONFIG_PASSPHRASE "
                         "(or PULUMI_CONFIG_PASSPHRASE_FILE); only the dev stack has a built-in one")
    options = auto.LocalWorkspaceOptions(work_dir=str(work_dir), secrets_provider="passphrase")
    try:
        return auto.select_stack(stack_name=name, work_dir=str(work_dir), opts=options)
    except auto.StackNotFoundError:
        log(f"creating stack {name} (local file backend, passphrase secrets)")
        return auto.create_stack(stack_name=name, work_dir=str(work_dir), opts=options)


def configure_local(stack: auto.Stack, name: str) -> None:
    """A stack of LOCAL_STACKS: its database on the embedded server and its settings."""
    configure_embedded(stack, str(LOCAL_STACKS[name]["database"]), LOCAL_STACKS[name]["config"], name)


def configure_embedded(stack: auto.Stack, database: str, config: Dict[str, Union[str, bool, list]],
                       name: str = "") -> None:
    """Point ``stack`` at ``database`` on the embedded server (started, the database created if missing): the
    ``postgresql:*`` config (password as a secret), plus ``config`` (with createRuntimeRoles, a generated
    runtime password kept in .state/<name>-runtime-password)."""
    import psycopg

    from tools.pgserver import HOST, SUPERUSER, Server

    server = Server(STATE / "pg").start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            log(f"creating database {database}")
            conn.execute(f'CREATE DATABASE "{database}"')
    wanted = {"postgresql:host": HOST, "postgresql:port": str(server.port), "postgresql:username": SUPERUSER,
              "postgresql:database": database, "postgresql:sslmode": "disable", **config}
    current = stack.get_all_config()
    changes: Dict[str, auto.ConfigValue] = {}
    for key, value in wanted.items():
        if isinstance(value, list):
            have = current.get(key)
            if have is None or have.value != _json(value):
                if have is not None:
                    stack.remove_config(key)
                changes.update({f"{key}[{i}]": auto.ConfigValue(item) for i, item in enumerate(value)})
            continue
        text = str(value).lower() if isinstance(value, bool) else value
        if current.get(key) is None or current[key].value != text:
            changes[key] = auto.ConfigValue(text)
    if changes:
        stack.set_all_config(changes, path=True)
    password = current.get("postgresql:password")
    if password is None or password.value != server.password:
        stack.set_config("postgresql:password", auto.ConfigValue(server.password, secret=True))
    if "llmemory-db:createRuntimeRoles" in wanted and current.get("llmemory-db:runtimePassword") is None:
        # the runtime roles log in with this password (the application's connection string)
        secret = STATE / f"{name or stack.name}-runtime-password"
        if not secret.exists():
            import secrets
            secret.write_text(secrets.token_urlsafe(18))
            secret.chmod(0o600)
        stack.set_config("llmemory-db:runtimePassword", auto.ConfigValue(secret.read_text(), secret=True))


def _json(value: list) -> str:
    import json
    return json.dumps(value, separators=(",", ":"))


def run(operation: Callable[[], object]) -> int:
    """Run a stack operation, its output and errors streamed as they come; returns the CLI's exit code."""
    try:
        operation()
        return 0
    except auto.CommandError as exc:
        code = str(exc).split("code: ", 1)[-1].split("\n", 1)[0].strip()
        return int(code) if code.isdigit() and int(code) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stack")
    parser.add_argument("command", choices=["up", "preview", "drift", "destroy", "recover"])
    parser.add_argument("--stack", default="dev")
    args = parser.parse_args(argv)
    started = time.monotonic()
    stack = open_stack(args.stack)
    if args.stack in LOCAL_STACKS:
        configure_local(stack, args.stack)
    if args.command == "up":
        code = run(lambda: stack.up(on_output=echo, on_error=echo_error))  # the CLI prints the outputs
    elif args.command == "preview":
        code = run(lambda: stack.preview(diff=True, on_output=echo, on_error=echo_error))
    elif args.command == "drift":
        code = run(lambda: stack.preview(refresh=True, expect_no_changes=True, diff=True, on_output=echo, on_error=echo_error))
        log(f"drift detected in stack {args.stack} (or the preview failed): see above" if code
            else f"no drift in stack {args.stack}")
    elif args.command == "destroy":
        # --run-program: the providers take the stack's current config (a password changed since the last
        # successful up), not the one the state recorded then
        code = run(lambda: stack.destroy(run_program=True, on_output=echo, on_error=echo_error))
    else:  # recover
        # after a `pulumi up` that was killed: its lock, then its pending operations. Safe for the migrations:
        # each one committed whole or not at all, and the next up applies whatever is not recorded.
        log("removing the killed run's lock (pulumi cancel): make sure no other `pulumi up` of this stack runs")
        try:
            stack.cancel()
        except auto.CommandError:
            log("no lock to remove (no update of this stack was interrupted)")
        code = run(lambda: stack.refresh(clear_pending_creates=True, on_output=echo, on_error=echo_error))
        if code == 0:
            log(f"recovered: run `make up STACK={args.stack}` to finish the deployment")
    if code == 0:
        log(f"{args.command} {args.stack} done in {time.monotonic() - started:.1f}s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
