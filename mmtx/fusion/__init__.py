"""Fusion modules: combine per-modality features into one ``[B, D]`` embedding.

Every fusion module is called as ``fusion(features, train=...) -> (fused [B, D], out)`` where
``features`` maps each *present* modality name to a :class:`ModalityFeatures`; any subset of
the model's modalities may be present, and ``ModalityFeatures.keep`` drops a modality for
single examples (modality dropout) exactly as if it were absent for them.
"""

import flax.linen as nn

from mmtx.fusion.bottleneck import BottleneckFusion
from mmtx.fusion.common import ModalityFeatures
from mmtx.fusion.concat import ConcatFusion
from mmtx.fusion.cross_attention import CrossAttentionFusion
from mmtx.fusion.gated import GatedFusion
from mmtx.fusion.perceiver import PerceiverFusion

# config.fusion.type -> module class.
FUSION_MODULES = {
    "concat": ConcatFusion,
    "gated": GatedFusion,
    "cross_attention": CrossAttentionFusion,
    "bottleneck": BottleneckFusion,
    "perceiver": PerceiverFusion,
}


def __getattr__(name: str) -> object:
    # MODALITIES: the registered modalities in fusion order (mmtx.modalities.modality_names).
    if name == "MODALITIES":
        from mmtx.modalities import modality_names

        return modality_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_fusion(name: str, module: type[nn.Module]) -> None:
    """Makes ``config.fusion.type = name`` build ``module`` (e.g. a fusion of your own).

    ``module`` must be a linen module with a ``width`` field, called as
    ``module(features, train=...) -> (fused [B, width], out dict)`` where ``features`` maps
    each present modality to a :class:`ModalityFeatures` (see this package's docstring). The
    model passes it the fields of ``config.fusion`` that it declares (by name), plus
    ``dtype``, ``param_dtype`` and, if declared, ``capture_weights``.
    """
    if name == "none":
        raise ValueError("'none' is reserved: config.fusion.type='none' means no fusion")
    if not (isinstance(module, type) and issubclass(module, nn.Module)):
        raise TypeError(f"a fusion must be a flax.linen.Module subclass; got {module!r}")
    if "width" not in module.__dataclass_fields__:
        raise TypeError(f"{module.__name__} needs a `width` field (the fused embedding's width)")
    FUSION_MODULES[name] = module


__all__ = [
    "FUSION_MODULES",
    "BottleneckFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "GatedFusion",
    "ModalityFeatures",
    "PerceiverFusion",
    "register_fusion",
]
