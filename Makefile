# giftmarket — the two set-up commands are `make run` and `make test`; both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
PORT ?= 3000
# Two pytest-xdist workers, a test file at a time, each with a stack of its own
# (tests/conftest.py); TEST_WORKERS= runs the suite in one process.
TEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: help setup run test lint unit bench soak load failover-drill stack-up stack-down stack-status clean lock package deploy

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## install Debian packages and both virtualenvs (idempotent)
	@infra/local/bootstrap.sh

run: setup ## start the whole local stack and serve the API on http://127.0.0.1:$(PORT)
	@$(PY) -m giftmarket_local run --profile run --port $(PORT)

# Bytecode for the project's own modules: with PYTHONDONTWRITEBYTECODE set, every child process
# (the runner, the CLI, the jobs, a benchmark's clients) would compile them again, and the cold
# start benchmark would time a compile the layer does not make Lambda pay (layer-bytecode).
COMPILE_OWN = $(PY) -m compileall -q layers/core/giftmarket infra/local/giftmarket_local >/dev/null

test: setup lint ## lint, then the whole test suite with coverage (starts and stops its own stack)
	@rm -rf .local/coverage && mkdir -p .local/coverage
	@$(COMPILE_OWN)
	@$(PY) -m coverage run -m pytest $(TEST_WORKERS); status=$$?; \
	  $(PY) -m coverage combine -q && $(PY) -m coverage html -q && $(PY) -m coverage json -q && \
	  $(PY) tests/support/coverage_summary.py; exit $$status

lint: setup ## ruff, mypy (strict), cfn-lint, sam validate --lint and checkov
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy
	@$(PY) infra/build/layer_lock.py check
	@.venv/bin/cfn-lint template.yaml
	@SAM_CLI_TELEMETRY=0 .local/venvs/sam/bin/sam validate --lint --template-file template.yaml
	@$(PY) infra/checks/policy.py

unit: setup ## the tests that need no server: unit and functional (fakes)
	@$(PY) -m pytest -m "unit or functional"

lock: setup ## regenerate layers/core/requirements.lock from pyproject.toml (UPGRADE=1: newest)
	@$(PY) infra/build/layer_lock.py generate $(if $(UPGRADE),--upgrade)

# `sam build` needs a python3.12 (the runtime's) on PATH: pyenv's when there is one.
PY312_DIR = $(lastword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12.*/bin))
package: setup ## sam build, then check the layer's .so files are aarch64, its modules compiled, its size
	@PATH="$(if $(PY312_DIR),$(PY312_DIR):)$$PATH" SAM_CLI_TELEMETRY=0 .local/venvs/sam/bin/sam build
	@$(PY) infra/build/check_layer.py .aws-sam/build

# A stage's deploy: its samconfig environment, then the stack policy that refuses to replace
# or delete the primary database, the buckets and the backup vault (infra/deploy/).
deploy: package ## deploy STAGE=dev|staging|prod to AWS (samconfig.toml), then set the stack policy
	@test -n "$(STAGE)" || { echo "usage: make deploy STAGE=dev|staging|prod"; exit 2; }
	@SAM_CLI_TELEMETRY=0 .local/venvs/sam/bin/sam deploy --config-env $(STAGE)
	@$(PY) infra/deploy/stack_policy.py $(STAGE)

bench: setup ## benchmarks on the test stack; figures, plots and report.md in bench-results/
	@$(COMPILE_OWN)
	@for bench in tests/benchmarks/bench_*.py; do echo "== $$bench"; $(PY) "$$bench" || exit 1; done
	@$(PY) tests/benchmarks/report.py

soak: setup ## the reliability tests longer and bigger (GM_SOAK_SCALE, default 10)
	@GM_SOAK_SCALE=$${GM_SOAK_SCALE:-10} $(PY) -m pytest tests/reliability

# Locust comes in its own virtualenv (.local/venvs/load), made on the first `make load` only.
load: ## Locust's market mix: URL (make run's) USERS=20 DURATION=60s SPAWN_RATE=2; bench-results/load
	@infra/local/bootstrap.sh --with-load
	@$(PY) -m tests.load.run --url "$(or $(URL),http://127.0.0.1:$(PORT))" --users "$(or $(USERS),20)" \
	  --duration "$(or $(DURATION),60s)" $(if $(SPAWN_RATE),--spawn-rate "$(SPAWN_RATE)")

failover-drill: setup ## crash the `run` stack's primary and promote its replica (see README)
	@$(PY) -m giftmarket_local failover-drill --profile run

stack-up: setup ## start the `run` stack without the API (for the giftmarket CLI)
	@$(PY) -m giftmarket_local up --profile run

stack-down: ## stop the `run` stack's processes, by PID
	@$(PY) -m giftmarket_local down --profile run

stack-status: ## PIDs of the `run` stack
	@$(PY) -m giftmarket_local status --profile run

clean: stack-down ## stop the run stack and delete all local state (data included)
	rm -rf .local/run .local/test
