"""mmtx: multi-modal transformers (text, image, audio) in JAX/Flax.

The public entry points are :func:`mmtx.create_model` and :class:`mmtx.Model`;
the building blocks live in :mod:`mmtx.attention`, :mod:`mmtx.nn`,
:mod:`mmtx.encoders`, :mod:`mmtx.fusion` and :mod:`mmtx.models`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmtx.models import Model, MultiModalTransformer, create_model

__all__ = ["Model", "MultiModalTransformer", "create_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``import mmtx.launch`` (or any light submodule) does not
    # pull in jax, flax and every encoder.
    if name in __all__:
        return getattr(importlib.import_module("mmtx.models"), name)
    raise AttributeError(f"module 'mmtx' has no attribute {name!r}")
