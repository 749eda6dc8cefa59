"""mmtx: multi-modal transformers (text, image, audio) in JAX/Flax.

The public entry points are :func:`mmtx.create_model` and :class:`mmtx.Model`;
the building blocks live in :mod:`mmtx.attention`, :mod:`mmtx.nn`,
:mod:`mmtx.encoders`, :mod:`mmtx.fusion` and :mod:`mmtx.models`.
"""

from mmtx.models import Model, MultiModalTransformer, create_model

__all__ = ["Model", "MultiModalTransformer", "create_model"]
__version__ = "0.1.0"
