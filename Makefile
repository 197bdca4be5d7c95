# lookright: `make run` (whole pipeline, embedded default) and `make test` (the test suite).
# Both create .venv on first use: torch==2.13.0 (CPU wheel) FIRST, then the package; installing
# trl/peft before torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= 2

.PHONY: install run smoke experiment test test-fast lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/snakemake --cores $(CORES)

smoke: install
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

experiment: install
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml config/experiment.yaml
	$(BIN)/lookright experiment-summary --branches results-experiment --out results-experiment/summary

test: lint
	$(BIN)/pytest -q --durations=10

test-fast: install
	$(BIN)/pytest -q -m "not slow and not slurm"

lint: install
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

format: install
	$(BIN)/ruff check --fix src tests benchmarks experiments
	$(BIN)/ruff format src tests benchmarks experiments
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf results logs .snakemake
