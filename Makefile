# Two entry points (see README): `make quickstart` and `make test`.
# Both create .venv on a fresh machine and install jaxir with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxir-installed

.PHONY: install quickstart test test-all lint notebooks

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 (a test/bench extra) resolves to the CPU wheel on local disk.
	$(BIN)/pip install -q -e '.[test,scann]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/jaxir quickstart

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests jaxir

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m '' tests jaxir

# Executes every notebooks/*.ipynb top to bottom on CPU (fresh kernel each, 300 s per
# cell); stops at the first failing cell, naming the notebook and the cell.
# (the notebooks extra is part of the test extra the stamp installs)
notebooks: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python notebooks/execute.py --timeout 300
