# Two commands do all set-up on a fresh machine:  make up   (deploy the dev stack)   make test
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath .)
STATE := $(ROOT)/.state
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
# the real llmemory application for the end-to-end test, in a venv of its own (no torch, no network)
APP_VENV := $(STATE)/llmemory-app-venv
# the release before, llmemory 0.4.0, for the upgrade test: the same dependencies, its own venv
APP_VENV_040 := $(STATE)/llmemory-app-0.4.0-venv
STACK ?= dev
export PULUMI_BACKEND_URL ?= file://$(STATE)/pulumi
export PULUMI_SKIP_UPDATE_CHECK := true
# the Python language host runs `pip list` for every program run: no network check of pip itself
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# the local stacks' secrets (dev, llmemory: on the embedded server) use a fixed development passphrase; other
# stacks bring their own
ifneq ($(filter $(STACK),dev llmemory),)
export PULUMI_CONFIG_PASSPHRASE ?= llmemory-dev-only-passphrase
endif

.PHONY: help venv app-venv app-venv-0.4.0 toolchain pgbouncer db-start db-stop up preview drift destroy recover example-yaml example-yaml-preview example-yaml-destroy sdk test test-fast bench bench-pileup bench-fleet bench-yaml bench-upgrade bench-embeddings clean
help:
	@echo "make up         deploy the '$(STACK)' stack (dev: onto the embedded PostgreSQL)"
	@echo "make test       run the whole test suite"
	@echo "make preview    pulumi preview for STACK=...   make drift   fail on drift for STACK=..."
	@echo "make db-start | db-stop   the embedded PostgreSQL"
	@echo "make recover    after a killed pulumi up: clear its lock and pending operations, then make up"
	@echo "make bench      side-by-side benchmark (engine, psql floor, pgdbm, dbmate, yoyo, pulumi, lock pile-up)"
	@echo "make bench-pileup   its lock-queue pile-up section alone (PILEUP_ARGS=\"--reps 1\")"
	@echo "make bench-fleet    its fan-out section alone: K tenant schemas (FLEET_ARGS=\"--ks 10,100 --reps 1\")"
	@echo "make bench-embeddings   an embedding provider's index on 100,000 x 384 vectors (EMBEDDINGS_ARGS=\"--reps 1\")"
	@echo "make example-yaml   deploy examples/yaml-consumer (Pulumi YAML, through the llmemory-db package);"
	@echo "                    also example-yaml-preview, example-yaml-destroy"
	@echo "make sdk SDK_LANGUAGE=nodejs|go|python   generate an SDK of the llmemory-db package (.state/sdks/)"

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

$(APP_VENV)/.installed: tests/llmemory_app/requirements.txt requirements-nodeps.txt
	@echo "[app-venv] the real llmemory app (minimal dependencies: no torch, no network) in .state/llmemory-app-venv"
	@test -x $(APP_VENV)/bin/python || python3 -m venv $(APP_VENV)
	@$(APP_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/llmemory_app/requirements.txt
	@$(APP_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $@
app-venv: $(APP_VENV)/.installed

$(APP_VENV_040)/.installed: tests/llmemory_app/requirements.txt tests/llmemory_app/requirements-0.4.0.txt
	@echo "[app-venv-0.4.0] llmemory 0.4.0, the release before (for the upgrade test), in .state/llmemory-app-0.4.0-venv"
	@test -x $(APP_VENV_040)/bin/python || python3 -m venv $(APP_VENV_040)
	@$(APP_VENV_040)/bin/python -m pip install -q --disable-pip-version-check -r tests/llmemory_app/requirements.txt
	@$(APP_VENV_040)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r tests/llmemory_app/requirements-0.4.0.txt
	@touch $@
app-venv-0.4.0: $(APP_VENV_040)/.installed

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

# the YAML example (examples/yaml-consumer) on the embedded dev server, through the package's plugin (plugin/)
example-yaml: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m tools.example_yaml up --stack $(STACK)
example-yaml-preview example-yaml-destroy: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m tools.example_yaml $(@:example-yaml-%=%) --stack $(STACK)
# an SDK of the package for another language (TypeScript: nodejs), generated by Pulumi's own code generators
SDK_LANGUAGE ?= nodejs
sdk: venv
	@$(PY) -m tools.sdk $(SDK_LANGUAGE) --out $(STATE)/sdks/$(SDK_LANGUAGE)

# PgBouncer for the pooler tests (Debian's package)
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { \
	  echo "[pgbouncer] installing Debian's pgbouncer package (for the pooler tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null; } || \
	  { echo "error: could not install pgbouncer: apt-get install pgbouncer, then run make test again"; exit 1; }; }

test: venv toolchain pgbouncer app-venv app-venv-0.4.0
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS)
# the fast tiers: unit (no database) and db (PostgreSQL, no Pulumi CLI)
test-fast: venv
	@$(PY) -m pytest -q tests/unit tests/db $(PYTEST_ARGS)

# side-by-side benchmark (about 30 minutes): bench/results.json, bench/pileup-results.json, bench/embeddings-results.json,
# bench/fleet-results.json, docs/bench-*.png; numbers go in the README
bench: venv toolchain app-venv-0.4.0
	@$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	@test -d $(STATE)/flyway/lib || { command -v mvn >/dev/null && echo "[bench] fetching Flyway's jars with mvn" && \
	  mvn -q -f bench/flyway/pom.xml dependency:copy-dependencies -DoutputDirectory=$(STATE)/flyway/lib; } || \
	  echo "[bench] no Flyway (mvn missing or failed): it is skipped"
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m bench.bench $(BENCH_ARGS)
	@$(PY) -m bench.pileup $(PILEUP_ARGS)
	@$(PY) -m bench.adoption
	@$(PY) -m bench.preflight
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m bench.yaml_vs_python
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m bench.fleet $(FLEET_ARGS)
	@$(PY) -m bench.embeddings $(EMBEDDINGS_ARGS)
	@$(PY) -m bench.plot
	@$(PY) -m bench.report
# a no-change preview of the YAML example (through the package) against the same Python program, side by side
bench-yaml: venv toolchain
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m bench.yaml_vs_python

# the data preflight and the proof of an edited file on 1,000,000 rows (issue 25): bench/preflight-results.json
bench-upgrade: venv app-venv-0.4.0
	@$(PY) -m bench.preflight $(UPGRADE_ARGS)

# the lock-queue pile-up section alone (about 5 minutes): bench/pileup-results.json, docs/bench-pileup.png
bench-pileup: venv
	@$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	@$(PY) -m bench.pileup $(PILEUP_ARGS)

# the fan-out section alone (about 15 minutes): K = 10, 100, 1,000 tenant schemas, one MigratedTenants against
# K MigratedSchema, pgdbm's loop and the psql floor; bench/fleet-results.json, docs/bench-fleet.png
bench-fleet: venv toolchain
	@$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	@PATH="$$(cat $(STATE)/toolchain-bin):$$PATH" $(PY) -m bench.fleet $(FLEET_ARGS)

# an EmbeddingProvider's vector index alone (about 10 minutes): its build against psql's CREATE INDEX CONCURRENTLY,
# the application's inserts during it against a plain CREATE INDEX, recall@10; bench/embeddings-results.json
bench-embeddings: venv
	@$(PY) -m bench.embeddings $(EMBEDDINGS_ARGS)

clean: db-stop
	rm -rf $(STATE) $(VENV)
