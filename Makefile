# Two entry points for a fresh machine: `make train` and `make test`.
# Each creates .venv from pyproject.toml + requirements.lock when it is missing.
# The venv's Python is 3.12: `python3.12` on the PATH (a distribution's package, python.org,
# Homebrew, or pyenv, whose shim takes the version from .python-version), else `python3` when
# that is 3.12. `make test PYTHON=/path/to/python3.12` names another.
PYTHON ?= $(shell for p in python3.12 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/base.py
WORKDIR ?= workdir
# JAX's CUDA plugin (the `aot-gpu` extra), for the tests that compile for H100s on this host,
# in a folder of its own that only those tests' subprocesses see: a jax process that finds it
# on a host without CUDA prints the plugin's failed version check. Pinned in requirements-gpu.txt.
AOT_GPU := .aot-gpu

.PHONY: venv train test lint docs clean

$(BIN)/python: pyproject.toml requirements.lock
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "mmtx needs Python 3.12 and found \
	neither python3.12 nor a python3 that is 3.12. Install it (Ubuntu 24.04: apt install \
	python3.12-venv; pyenv: pyenv install 3.12; uv: uv python install 3.12), or pass \
	PYTHON=/path/to/python3.12." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,tfds,aot]'
	touch $(BIN)/python

venv: $(BIN)/python

$(AOT_GPU)/jax_cuda12_plugin: requirements-gpu.txt $(BIN)/python
	rm -rf $(AOT_GPU)
	$(BIN)/python -m pip install --quiet --no-deps --target $(AOT_GPU) \
	  $$(grep -E '^jax-cuda12-(plugin|pjrt)==' requirements-gpu.txt)
	touch $@

train: venv
	$(BIN)/python -m mmtx.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: venv $(AOT_GPU)/jax_cuda12_plugin
	$(BIN)/python -m ruff check mmtx tests configs experiments benchmarks docs/conf.py notebooks
	$(BIN)/python -m pytest -n 2 tests

lint: venv
	$(BIN)/python -m ruff check mmtx tests configs experiments benchmarks docs/conf.py notebooks
	$(BIN)/python -m ruff format --check mmtx tests configs experiments docs/conf.py notebooks

docs: venv
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(AOT_GPU) workdir docs/_build
