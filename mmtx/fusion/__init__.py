"""Fusion modules: combine per-modality features into one ``[B, D]`` embedding.

Every fusion module is called as ``fusion(features, train=...) -> (fused [B, D], out)`` where
``features`` maps each *present* modality name to a :class:`ModalityFeatures`; any subset of
the model's modalities may be present, and ``ModalityFeatures.keep`` drops a modality for
single examples (modality dropout) exactly as if it were absent for them.
"""

from mmtx.fusion.bottleneck import BottleneckFusion
from mmtx.fusion.common import MODALITIES, ModalityFeatures
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

__all__ = [
    "FUSION_MODULES",
    "MODALITIES",
    "BottleneckFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "GatedFusion",
    "ModalityFeatures",
    "PerceiverFusion",
]
