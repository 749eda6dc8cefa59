"""Sphinx configuration of the mmtx documentation.

Build: ``make docs`` (or ``sphinx-build -W --keep-going -b html docs docs/_build/html``).
``tests/test_docs.py`` runs the same build with warnings as errors.
"""

from __future__ import annotations

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
# Autodoc imports the package from this checkout (also when it is not pip-installed).
sys.path.insert(0, ROOT)

import mmtx  # noqa: E402

project = "mmtx"
author = "the mmtx authors"
copyright = "the mmtx authors"
release = mmtx.__version__
version = release

extensions = [
    "myst_nb",  # Markdown (MyST) pages and Jupyter notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # Google-style "Args:" / "Returns:" sections
    "sphinx.ext.viewcode",
]

exclude_patterns = [
    "_build",
    # Included into research.md with {include}; not pages of their own.
    "research/*.md",
    "**/.ipynb_checkpoints",
]

# MyST: heading anchors so that pages can link to sections (usage.md#checkpoints-and-resume).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks (notebooks/*.ipynb, linked into docs/examples/) are shown with the outputs saved
# in them; the docs build never runs them (tests/test_notebooks.py does).
nb_execution_mode = "off"

# Autodoc: members of each module (modules with __all__ list exactly those), plus the
# __call__ of linen modules, where their shapes are documented.
autodoc_default_options = {
    "members": True,
    "special-members": "__call__",
    "member-order": "bysource",
    "show-inheritance": False,
}
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"mmtx {release}"
html_static_path: list[str] = []

# The research pages (docs/research/*.md) are written by the studies in experiments/ and
# benchmarks/. research.md pulls in each one that exists at build time, in this order.
RESEARCH_PAGES = (
    ("attention_scaling.md", "benchmarks/attention_scaling.py"),
    ("attention_variants.md", "experiments/attention_variants.py"),
    ("fusion_ablation.md", "experiments/fusion_ablation.py"),
    ("accumulation_memory.md", "benchmarks/accumulation_memory.py"),
)
RESEARCH_MARKER = "% research-pages"


def research_includes() -> str:
    """MyST text that includes every research page present, and names the missing ones."""
    parts = []
    for page, script in RESEARCH_PAGES:
        if os.path.exists(os.path.join(DOCS, "research", page)):
            parts.append(
                "```{include} research/" + page + "\n"
                ":heading-offset: 1\n:relative-images:\n:relative-docs: research/\n```\n"
            )
        else:
            parts.append(
                f"## {page}\n\nNot generated yet: run `python {script}`, which writes "
                f"`docs/research/{page}`.\n"
            )
    return "\n".join(parts)


def _insert_research_pages(app, docname: str, source: list[str]) -> None:
    if docname == "research":
        source[0] = source[0].replace(RESEARCH_MARKER, research_includes())


def _always_reread_research(app, env, added, changed, removed) -> list[str]:
    # A research page that appeared since the last build must be picked up.
    return ["research"]


def _split_parameters(signature: str) -> list[str]:
    """``"(a: int = 1, b: tuple = (1, 2))"`` -> ``["a: int = 1", "b: tuple = (1, 2)"]``."""
    parts, depth, current = [], 0, ""
    for char in signature.strip()[1:-1]:
        depth += char in "([{<"
        depth -= char in ")]}>"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def _linen_signature(app, what, name, obj, options, signature, return_annotation):
    """A linen module's constructor is its dataclass fields plus Flax's internal ``parent`` and
    ``name``; show the fields only."""
    if what == "method" and name.endswith(".__init__") and signature and "parent:" in signature:
        kept = [p for p in _split_parameters(signature) if not p.startswith(("parent:", "name:"))]
        return f"({', '.join(kept)})", None
    return None


def _skip_type_defaults(app, what, name, obj, skip, options):
    """A linen field whose default is a type (``dtype = jnp.float32``) would be listed as an
    attribute "alias of float32", repeating the constructor's signature: skip it."""
    if what == "class" and isinstance(obj, type) and name in ("dtype", "param_dtype"):
        return True
    return None


def setup(app) -> None:
    app.connect("source-read", _insert_research_pages)
    app.connect("env-get-outdated", _always_reread_research)
    app.connect("autodoc-process-signature", _linen_signature)
    app.connect("autodoc-skip-member", _skip_type_defaults)
