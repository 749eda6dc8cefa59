"""Fusion modules: combine per-modality features into one ``[B, D]`` embedding.

Every fusion module is called as ``fusion(features, train=...) -> (fused [B, D], out)`` where
``features`` maps each *present* modality name to a :class:`ModalityFeatures`; any subset of
the model's modalities may be present.
"""

from mmtx.fusion.common import MODALITIES, ModalityFeatures
from mmtx.fusion.concat import ConcatFusion
from mmtx.fusion.gated import GatedFusion

FUSION_MODULES = {"concat": ConcatFusion, "gated": GatedFusion}

__all__ = ["FUSION_MODULES", "MODALITIES", "ConcatFusion", "GatedFusion", "ModalityFeatures"]
