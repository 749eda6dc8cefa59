"""mmtx: multi-modal transformers (text, image, audio) in JAX/Flax.

The public entry points are :func:`mmtx.create_model` and :class:`mmtx.Model`;
the building blocks live in :mod:`mmtx.attention`, :mod:`mmtx.nn`,
:mod:`mmtx.encoders`, :mod:`mmtx.fusion` and :mod:`mmtx.models`; :class:`mmtx.Model` and
:func:`mmtx.create_model` are defined in :mod:`mmtx.inference`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmtx.inference import Model, create_model
    from mmtx.models import MultiModalTransformer

__all__ = ["Model", "MultiModalTransformer", "create_model"]
__version__ = "0.1.0"

# Where each public name is defined.
_HOMES = {
    "Model": "mmtx.inference",
    "MultiModalTransformer": "mmtx.models",
    "create_model": "mmtx.inference",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``import mmtx.launch`` (or any light submodule) does not
    # pull in jax, flax and every encoder.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'mmtx' has no attribute {name!r}")
