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

demo: $(VENV)/.all-installed
	$(PY) -m neurofm.demo --out demo_out

bench: $(VENV)/.test-installed
	$(PY) benchmarks/run_all.py

docs: $(VENV)/.test-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) demo_out .pytest_cache
