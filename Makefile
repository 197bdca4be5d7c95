# lookright: `make run` (whole pipeline, embedded default) and `make test` (the test suite).
# Both create .venv on first use, from the committed lock: torch==2.13.0 (CPU wheel) FIRST,
# then every other dependency at the exact version CI tested (envs/lookright.lock.txt, with
# hashes), then lookright itself. Installing trl/peft before torch would pull a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := envs/lookright.lock.txt
TORCH := torch==2.13.0
# Where pip/uv find the CPU torch wheel the lock is resolved against (override per machine).
TORCH_WHEELS ?= /opt/wheels
LATEST := .venv-latest
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= 2

.PHONY: install run run-seed1 run-timing smoke experiment test test-fast test-latest lock schema lint format readme-tables clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m lookright.versions check
	touch $(STAMP)

# Update the lock on purpose: the newest releases pyproject.toml's ranges allow (raise a
# range's upper bound there to take a newer release), then regenerate envs/lookright.yaml.
# Afterwards: `make test` (and `make run`), then commit pyproject.toml, the lock and the yaml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --upgrade --generate-hashes \
	  --no-emit-package torch --override envs/torch-cpu.txt --find-links $(TORCH_WHEELS) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet -o $(LOCK)
	$(BIN)/python -m lookright.versions conda-env $(LOCK) > envs/lookright.yaml
	rm -f $(STAMP)

run: install
	$(BIN)/snakemake --cores $(CORES)

# The same run with seed 1 (README: how much the figures move between seeds).
run-seed1: install
	$(BIN)/snakemake --cores $(CORES) --config seed=1 results_dir=results-seed1 logs_dir=logs-seed1

# The pipeline's wall time: `make run` from nothing into results-timing/, with the load
# average before and after (run it on an otherwise idle machine; README "timing" block).
run-timing: install
	rm -rf results-timing logs-timing && mkdir -p results-timing
	cat /proc/loadavg > results-timing/loadavg-before.txt
	$(BIN)/snakemake --cores $(CORES) --config results_dir=results-timing logs_dir=logs-timing
	cat /proc/loadavg > results-timing/loadavg-after.txt

# The README's measured tables, from the runs above (the timing block when results-timing/ exists).
readme-tables: install
	$(BIN)/python experiments/readme_tables.py --runs results results-seed1 --readme README.md \
	  $(if $(wildcard results-timing/report/report.html),--timing results-timing)

# The config schema, generated from the stages' config dataclasses (a test checks it is current).
schema: install
	$(BIN)/python -m lookright.stages.schema > workflow/schemas/config.schema.yaml

smoke: install
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

# The experiment twice: the mildly biased SFT model, then the shortcut-trained one.
experiment: install
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml config/experiment.yaml
	$(BIN)/lookright experiment-summary --branches results-experiment --out results-experiment/summary
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml config/experiment.yaml \
	  config/experiment-shortcut.yaml
	$(BIN)/lookright experiment-summary --branches results-experiment-shortcut \
	  --out results-experiment-shortcut/summary

test: lint
	$(BIN)/pytest -q --durations=10

test-fast: install
	$(BIN)/pytest -q -m "not slow and not slurm"

# Drift caught early: the newest releases within the major versions the lock tested (not
# the lock), in a separate venv; prints what it tested, then runs the whole suite (or
# PYTEST_ARGS, e.g. make test-latest PYTEST_ARGS='-m "not slurm"').
test-latest: install
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet $(TORCH)
	$(BIN)/python -m lookright.versions latest-overrides > $(LATEST)/overrides.txt
	$(BIN)/uv pip install --quiet --python $(LATEST)/bin/python --override $(LATEST)/overrides.txt \
	  --find-links $(TORCH_WHEELS) -e '.[test]'
	$(LATEST)/bin/python -m lookright.versions report
	PATH=$(abspath $(LATEST))/bin:$$PATH $(LATEST)/bin/pytest -q --durations=10 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks experiments examples
	$(BIN)/ruff format --check src tests benchmarks experiments examples
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests benchmarks experiments examples
	$(BIN)/ruff format src tests benchmarks experiments examples
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf results logs .snakemake
