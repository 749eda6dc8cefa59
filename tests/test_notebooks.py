"""Every notebook in notebooks/ runs top to bottom, with smoke settings.

One test per notebook (pytest-xdist runs them in parallel). Each test executes a copy of
the notebook in a temporary directory with nbclient and the ``python3`` kernel of this
interpreter (ipykernel), so the outputs saved in notebooks/ are left alone.
``MMTX_NOTEBOOK_SMOKE=1`` makes every notebook shrink its steps and sizes. Compile time
dominates such tiny runs on a CPU, so the kernel also gets
``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` (XLA compiles about twice as fast) and the persistent
compilation cache that tests/conftest.py uses.
"""

import os
import pathlib
import shutil
import tempfile

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
CACHE_DIR = os.environ.get(
    "MMTX_TEST_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "mmtx-test-xla-cache")
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MMTX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", CACHE_DIR)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    # The kernel imports mmtx from this checkout, installed or not.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    notebook = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was produced"
