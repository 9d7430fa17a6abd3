# Two commands do all set-up on a fresh machine:  make up   (deploy the dev stack)   make test
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath .)
STATE := $(ROOT)/.state
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
STACK ?= dev
export PULUMI_BACKEND_URL ?= file://$(STATE)/pulumi
export PULUMI_SKIP_UPDATE_CHECK := true
# the Python language host runs `pip list` for every program run: no network check of pip itself
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# the dev stack's secrets use a fixed development passphrase; other stacks bring their own
ifeq ($(STACK),dev)
export PULUMI_CONFIG_PASSPHRASE ?= llmemory-dev-only-passphrase
endif

.PHONY: help venv toolchain pgbouncer db-start db-stop up preview drift destroy recover test test-fast bench clean
help:
	@echo "make up         deploy the '$(STACK)' stack (dev: onto the embedded PostgreSQL)"
	@echo "make test       run the whole test suite"
	@echo "make preview    pulumi preview for STACK=...   make drift   fail on drift for STACK=..."
	@echo "make db-start | db-stop   the embedded PostgreSQL"
	@echo "make recover    after a killed pulumi up: clear its lock and pending operations, then make up"
	@echo "make bench      side-by-side benchmark (engine, psql floor, pgdbm, dbmate, yoyo, pulumi)"

# Python environment, rebuilt when requirements.txt changes
$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	@command -v python3 >/dev/null || { echo "error: python3 (3.10+) is required: apt-get install python3 python3-venv"; exit 1; }
	@echo "[venv] installing Python packages into .venv"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@
venv: $(VENV)/.installed

# Pulumi CLI + Python language host + postgresql plugin: from PATH, or built once into ~/.cache
# (instant when the cache is there; prints progress and timing when it builds)
toolchain:
	@mkdir -p $(STATE)
	@bin=$$(bash toolchain/bootstrap.sh | tail -n 1) && test -x "$$bin/pulumi" && echo "$$bin" > $(STATE)/toolchain-bin

db-start: venv
	@$(PY) -m tools.pgserver start --dir $(STATE)/pg
db-stop:
	@test -x $(PY) && $(PY) -m tools.pgserver stop --dir $(STATE)/pg || true

up: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m tools.stack up --stack $(STACK)
preview: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m tools.stack preview --stack $(STACK)
drift: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m tools.stack drift --stack $(STACK)
destroy: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m tools.stack destroy --stack $(STACK)
# after a killed `pulumi up`: remove its stale lock and pending operations (then `make up`)
recover: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m tools.stack recover --stack $(STACK)

# PgBouncer for the pooler tests (Debian's package)
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { \
	  echo "[pgbouncer] installing Debian's pgbouncer package (for the pooler tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null; } || \
	  { echo "error: could not install pgbouncer: apt-get install pgbouncer, then run make test again"; exit 1; }; }

test: venv toolchain pgbouncer
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS)
test-fast: venv
	@$(PY) -m pytest -q -m "not e2e" $(PYTEST_ARGS)

# side-by-side benchmark (about 15 minutes): bench/results.json, docs/bench-*.png; numbers go in the README
bench: venv toolchain
	@$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	@test -d $(STATE)/flyway/lib || { command -v mvn >/dev/null && echo "[bench] fetching Flyway's jars with mvn" && \
	  mvn -q -f bench/flyway/pom.xml dependency:copy-dependencies -DoutputDirectory=$(STATE)/flyway/lib; } || \
	  echo "[bench] no Flyway (mvn missing or failed): it is skipped"
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m bench.bench $(BENCH_ARGS)
	@$(PY) -m bench.plot
	@$(PY) -m bench.report

clean: db-stop
	rm -rf $(STATE) $(VENV)
