# Two entry points for a fresh machine: `make train` and `make test`.
# Each creates .venv from pyproject.toml + requirements.lock when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/base.py
WORKDIR ?= workdir

.PHONY: venv train test lint clean

$(BIN)/python: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(BIN)/python

venv: $(BIN)/python

train: venv
	$(BIN)/python -m mmtx.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: venv
	$(BIN)/python -m ruff check mmtx tests configs experiments
	$(BIN)/python -m pytest -n 2 tests

lint: venv
	$(BIN)/python -m ruff check mmtx tests configs experiments
	$(BIN)/python -m ruff format --check mmtx tests configs experiments

clean:
	rm -rf $(VENV) workdir
