"""The Sphinx site in docs/ builds with warnings as errors.

A broken cross-reference, a docstring that is not valid reStructuredText, a page missing
from the toctree or a notebook that does not render fails this test. The build runs in a
subprocess (as ``make docs`` does) into a temporary directory; notebooks are rendered with
their saved outputs, not executed.
"""

import importlib
import json
import pathlib
import pkgutil
import re
import subprocess
import sys

import mmtx

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_docs_build_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    result = subprocess.run(
        [*command, "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr[-8000:]}"
    for page in ("index", "installation", "usage", "research", "contributing", "changelog"):
        assert (out / f"{page}.html").exists(), page
    api = (out / "api" / "fusion.html").read_text()
    assert 'id="mmtx.fusion.register_fusion"' in api
    for notebook in NOTEBOOKS:
        html = (out / "examples" / f"{notebook.stem}.html").read_text()
        assert "<img" in html, f"{notebook.name}: no plot rendered from its saved outputs"


def test_notebooks_are_saved_executed():
    """The docs show the notebooks' saved outputs, so they must be saved executed."""
    expected = {"quickstart", "attention_maps", "custom_fusion", "finetune"}
    assert {p.stem for p in NOTEBOOKS} == expected
    for path in NOTEBOOKS:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] for c in cells), f"{path.name}: unexecuted cells"
        outputs = [o for c in cells for o in c["outputs"]]
        assert not [o for o in outputs if o["output_type"] == "error"], path.name
        assert any("image/png" in o.get("data", {}) for o in outputs), path.name


def test_every_module_is_in_the_api_reference():
    """Each module has an ``automodule`` in docs/api/, unless its package re-exports it
    (a package with ``__all__``, such as mmtx.fusion, documents its submodules' contents)."""
    pages = "".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md"))
    documented = set(re.findall(r"automodule:: ([\w.]+)", pages))
    missing = []
    for module in pkgutil.walk_packages(mmtx.__path__, "mmtx."):
        parent = module.name.rpartition(".")[0]
        if parent != "mmtx" and hasattr(importlib.import_module(parent), "__all__"):
            continue
        if module.name not in documented:
            missing.append(module.name)
    assert not missing, f"add these modules to a page in docs/api/: {missing}"
