# Two entry points: `make test` and `make demo`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?= -n 2

.PHONY: test lint demo env env-all clean bench docs

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# CPU build first, so nothing pulls the CUDA wheels
	$(PIP) install torch==2.13.0

$(VENV)/.test-installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -e ".[test]"
	touch $@

$(VENV)/.all-installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -e ".[all]"
	touch $@

env: $(VENV)/.test-installed
env-all: $(VENV)/.all-installed

lint: $(VENV)/.test-installed
	$(PY) -m ruff check neurofm tests benchmarks pipelines/scripts

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# the main job: sample data -> pipelines -> pretraining -> probe -> analyses ->
# demo_out/report.html (~10 min on 2 cores; `make demo DEMO_ARGS=--quick`: ~2 min)
demo: $(VENV)/.all-installed
	$(PY) -m neurofm.demo --out demo_out $(DEMO_ARGS)

bench: $(VENV)/.test-installed
	$(PY) benchmarks/run_all.py

docs: $(VENV)/.test-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) demo_out .pytest_cache
