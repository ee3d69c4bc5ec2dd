# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
# `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST := 127.0.0.1
SIM_PORT ?= 8765
UI_PORT ?= 3000
NOTEBOOK_PORT ?= 8888
export SMM_DATA_DIR ?= $(CURDIR)/data
# make run keeps Dagster's history in the project (an inherited DAGSTER_HOME is not touched).
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# `dg` runs in the project's own virtual environment.
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
CODE := smm_pipeline smm_pipeline_tests benchmarks devkit
# .env (keys, and SMM_DATA_DIR / SMM_DUCKDB_PATH when set there) for the commands that run the
# pipeline; the folders below are the ones it names.
WITH_ENV := set -a; source .env; set +a; data="$${SMM_DATA_DIR:-$(CURDIR)/data}"

.PHONY: help run test lint bench demo notebook simulator reset clean

help: ## List the make targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml devkit/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./devkit
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

.env:
	cp .env.example .env

run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml .env ## Simulator + Dagster UI and daemon on 127.0.0.1 (Ctrl-C stops both)
	$(WITH_ENV); \
	mkdir -p "$$data/inbox/orders" "$$data/inbox/refills" "$$data/inbox/cancels"; \
	$(BIN)/python -m smm_devkit.simulator --host $(HOST) --port $(SIM_PORT) \
	  --state-file "$$data/simulator_state.jsonl" & sim=$$!; \
	trap "kill $$sim 2>/dev/null" EXIT INT TERM; \
	$(BIN)/dg dev -h $(HOST) -p $(UI_PORT)

# The suite runs in two pytest-xdist workers: most of its time is spent waiting on simulators,
# subprocesses and Dagster runs, so two workers halve it even on two cores.
test: $(STAMP) $(DAGSTER_HOME)/dagster.yaml ## ruff, `dg check defs` and the whole test suite
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/ruff check $(CODE)
	$(BIN)/dg check defs
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --durations=15; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP) ## ruff format + ruff check --fix
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench: $(STAMP) ## The benchmarks against the simulator (figures in the README)
	$(BIN)/python -m benchmarks

demo: $(STAMP) ## Five weeks of simulated history, headless (KEEP=dir keeps it, DAYS=n shortens it)
	$(BIN)/python -m smm_devkit.demo $(if $(KEEP),--keep $(KEEP)) $(if $(DAYS),--days $(DAYS))

notebook: $(STAMP) .env ## JupyterLab on 127.0.0.1 with notebooks/analytics.ipynb
	$(WITH_ENV); SMM_DATA_DIR="$$data" $(BIN)/jupyter lab --ip $(HOST) --port $(NOTEBOOK_PORT) \
	  --no-browser notebooks/analytics.ipynb

simulator: $(STAMP) .env ## The panel simulator alone, on 127.0.0.1:8765 (SIM_PORT=...)
	$(WITH_ENV); $(BIN)/python -m smm_devkit.simulator --host $(HOST) --port $(SIM_PORT) \
	  --state-file "$$data/simulator_state.jsonl"

reset: .env ## Delete the local state (warehouse and replica, inbox, results, simulator, Dagster history)
	$(WITH_ENV); db="$${SMM_DUCKDB_PATH:-$$data/warehouse.duckdb}"; \
	for p in "$$data" "$$db" "$(DAGSTER_HOME)"; do \
	  case "$$(realpath -m "$$p")" in "$(CURDIR)"/*) ;; \
	  *) if [ "$(FORCE)" != 1 ]; then echo "refusing to delete $$p outside $(CURDIR) (make reset FORCE=1)"; exit 1; fi ;; esac; \
	done; \
	rm -rf "$$data/inbox" "$$data/processed" "$$data/rejected" "$$data/panel_budget" \
	  "$$db"* "$${db%.duckdb}.read.duckdb"* "$$data/simulator_state.jsonl" "$(DAGSTER_HOME)"
	@echo "local state deleted (stop 'make run' first if it was running)"

clean: ## Delete the venv and tool caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
