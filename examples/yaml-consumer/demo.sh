#!/usr/bin/env bash
# End-to-end run of the prototype: a YAML program declares the llmemory-db package and uses its MigratedSchema
# component against an embedded PostgreSQL, then checks that a second preview has no changes, and destroys.
#
#   examples/yaml-consumer/demo.sh [PG_DIR]
#
# Everything it writes (copy of the program, Pulumi state, PULUMI_HOME, the server's data unless PG_DIR is
# given) goes under $DEMO_DIR (default /tmp/llmemory-yaml-demo). Python: $LLMEMORY_DB_PYTHON, else the
# repository's .venv.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
work=${DEMO_DIR:-/tmp/llmemory-yaml-demo}
pg_dir=${1:-$work/pg}
export LLMEMORY_DB_PYTHON=${LLMEMORY_DB_PYTHON:-$repo/.venv/bin/python}
export PULUMI_HOME=$work/home PULUMI_BACKEND_URL=file://$work/state PULUMI_CONFIG_PASSPHRASE=demo-only
export PULUMI_SKIP_UPDATE_CHECK=1
py=$LLMEMORY_DB_PYTHON
mkdir -p "$work/state" "$PULUMI_HOME"

bin=$(bash "$repo/toolchain/bootstrap.sh" | tail -n 1)   # also installs the postgresql plugin into PULUMI_HOME
export PATH="$bin:$PATH"
(cd "$repo" && "$py" -m tools.pgserver start --dir "$pg_dir")
dsn=$(cd "$repo" && "$py" -m tools.pgserver dsn --dir "$pg_dir")
field() { printf '%s\n' "$dsn" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# a copy of the program, so that stack config files stay out of the repository
rm -rf "$work/program" && cp -r "$here/program" "$work/program" && rm -f "$work/program"/Pulumi.*.yaml
sed -i "s#^  llmemory-db: ../provider#  llmemory-db: $here/provider#" "$work/program/Pulumi.yaml"
cd "$work/program"
pulumi stack select --create demo --non-interactive
pulumi config set postgresql:host "$(field host)"
pulumi config set postgresql:port "$(field port)"
pulumi config set postgresql:username "$(field user)"
pulumi config set postgresql:database "$(field dbname)"
pulumi config set postgresql:sslmode disable
pulumi config set --secret postgresql:password "$(field password)"

pulumi up --yes --non-interactive
pulumi preview --expect-no-changes --non-interactive
"$py" - "$dsn" <<'PY'
import sys
import psycopg
with psycopg.connect(sys.argv[1]) as conn:
    rows = conn.execute("SELECT filename FROM public.schema_migrations WHERE module_name = 'notes' ORDER BY 1").fetchall()
    tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'notes_app'").fetchall()
print("history:", [r[0] for r in rows], "tables in notes_app:", sorted(t[0] for t in tables))
PY
pulumi destroy --yes --non-interactive
