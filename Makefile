# Two entry points for a fresh machine: `make train` and `make test`.
# Each creates .venv from pyproject.toml + requirements.lock when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/base.py
WORKDIR ?= workdir

.PHONY: venv train test lint docs clean

$(BIN)/python: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,tfds]'
	touch $(BIN)/python

venv: $(BIN)/python

train: venv
	$(BIN)/python -m mmtx.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: venv
	$(BIN)/python -m ruff check mmtx tests configs experiments benchmarks docs/conf.py notebooks
	$(BIN)/python -m pytest -n 2 tests

lint: venv
	$(BIN)/python -m ruff check mmtx tests configs experiments benchmarks docs/conf.py notebooks
	$(BIN)/python -m ruff format --check mmtx tests configs experiments docs/conf.py notebooks

docs: venv
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) workdir docs/_build
