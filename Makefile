# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST := 127.0.0.1
SIM_PORT ?= 8765
UI_PORT ?= 3000
export SMM_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test lint format bench demo simulator clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

.env:
	cp .env.example .env

# Simulator + Dagster UI (webserver and daemon: sensors and schedules on), bound to 127.0.0.1 only.
run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml .env
	mkdir -p $(SMM_DATA_DIR)/inbox/orders $(SMM_DATA_DIR)/inbox/refills $(SMM_DATA_DIR)/inbox/cancels
	set -a; source .env; set +a; \
	$(BIN)/python -m smm_pipeline.simulator --host $(HOST) --port $(SIM_PORT) \
	  --state-file $(SMM_DATA_DIR)/simulator_state.jsonl & sim=$$!; \
	trap "kill $$sim 2>/dev/null" EXIT INT TERM; \
	$(BIN)/dagster dev -h $(HOST) -p $(UI_PORT) -w workspace.yaml

test: $(STAMP)
	$(BIN)/ruff format --check smm_pipeline smm_pipeline_tests benchmarks
	$(BIN)/ruff check smm_pipeline smm_pipeline_tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff format smm_pipeline smm_pipeline_tests benchmarks
	$(BIN)/ruff check --fix smm_pipeline smm_pipeline_tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Headless end-to-end run in a temporary directory; `make demo KEEP=dir` keeps it for the notebook.
demo: $(STAMP)
	$(BIN)/python -m smm_pipeline.demo $(if $(KEEP),--keep $(KEEP))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
