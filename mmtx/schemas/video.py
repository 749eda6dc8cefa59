"""The video modality's schema: its config group, checks, token count and FLOP passes (the
encoder: :mod:`mmtx.modalities.video`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import ml_collections

from mmtx.schemas.schema import ModalitySchema, Require


class VideoSchema(ModalitySchema):
    """Clips of ``num_frames`` square frames (see :class:`mmtx.modalities.VideoSpec`)."""

    name = "video"
    raw_input = "video_inputs"
    example_key = "video"
    poolings = ("cls", "mean", "map")
    ranges: ClassVar[Mapping[str, str]] = {
        "num_frames": "> 0",
        "image_size": "> 0",
        "patch_size": "> 0",
        "tubelet_size": "> 0",
        "temporal_depth": ">= 0",
        "channels": "> 0",
        "std": "> 0",
        "resize_size": ">= 0",
    }
    # Position only nudges where a moving object's path lies (the synthetic clips).
    attributes = ("shape", "colour", "size", "motion")
    description = "video clips"
    value_range = "pixels are in [0, 1]"

    def default_config(self) -> ml_collections.ConfigDict:
        g = ml_collections.ConfigDict()
        g.num_frames = 8  # Frames per clip fed to the model (sampled evenly from the clip).
        g.image_size = 32  # Frame height and width in pixels.
        g.patch_size = 8  # Square spatial patch side; image_size must be divisible by it.
        g.tubelet_size = 2  # Frames per tubelet; num_frames must be divisible by it.
        g.channels = 3
        g.resize = "shorter_side"  # Per frame, as model.image's: shorter_side | squash.
        g.interpolation = "bilinear"  # Resize filter, PIL's (antialiased): bilinear | bicubic.
        g.resize_size = 0  # shorter_side: the side's length before the crop; 0 = image_size.
        # Where the centre crop starts an odd margin: round (torchvision's CenterCrop, as
        # open_clip) | floor (HF image processors).
        g.crop_offset = "round"
        g.width = 128
        g.depth = 2  # Blocks of the joint tower, or of the spatial tower when factorised.
        g.temporal_depth = 1  # Blocks of the temporal tower (layout factorised only).
        g.num_heads = 4
        g.mlp_dim = 256
        # joint (one tower over all space-time tokens) | factorised (ViViT's factorised
        # encoder: a spatial tower per time slice, then a temporal tower over the slices).
        g.layout = "joint"
        g.attention = "dense"
        g.pooling = "cls"  # cls | mean | map.
        # learned (separable: a spatial table plus a temporal table) | sincos (fixed).
        g.position_embedding = "learned"
        g.mean = (0.5, 0.5, 0.5)  # Per-channel normalisation of [0, 1] pixels.
        g.std = (0.5, 0.5, 0.5)
        g.activation = "gelu_tanh"  # MLP's: gelu_tanh | gelu (exact erf) | quick_gelu.
        g.norm_eps = 1e-6  # Epsilon of every LayerNorm in the towers.
        g.pre_norm = False  # A LayerNorm before the first block.
        g.final_norm = True  # The LayerNorm after the last block, on every token.
        # Projection of the pooled output to model.embed_dim: dense | no_bias | none.
        g.projection = "dense"
        return g

    def validate(self, group: ml_collections.ConfigDict, require: Require) -> None:
        require(
            group.layout in ("joint", "factorised"),
            "model.video.layout",
            f"{group.layout!r} is not one of ('joint', 'factorised')",
        )
        require(
            group.image_size % group.patch_size == 0,
            "model.video.image_size",
            f"{group.image_size} is not divisible by patch_size {group.patch_size}",
        )
        require(
            group.num_frames % group.tubelet_size == 0,
            "model.video.num_frames",
            f"{group.num_frames} is not divisible by tubelet_size {group.tubelet_size}",
        )
        require(
            group.layout == "joint" or group.temporal_depth > 0,
            "model.video.temporal_depth",
            "layout='factorised' needs a temporal tower (temporal_depth >= 1)",
        )
        self.require_per_channel(group, require, ("mean", "std"))
        self.require_resize(group, require)

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        slices = group.num_frames // group.tubelet_size
        if group.layout == "factorised":
            return slices  # the temporal tower's tokens: one per time slice
        return slices * (group.image_size // group.patch_size) ** 2

    def transformer_passes(
        self, group: ml_collections.ConfigDict, class_tokens: int
    ) -> list[tuple[int, int, int]]:
        if group.layout != "factorised":
            return super().transformer_passes(group, class_tokens)
        slices = group.num_frames // group.tubelet_size
        patches = (group.image_size // group.patch_size) ** 2
        # The spatial tower once per time slice, then the temporal tower over the slices.
        return [
            (group.depth, patches + class_tokens, slices),
            (group.temporal_depth, slices + class_tokens, 1),
        ]

    def stem_flops(self, group: ml_collections.ConfigDict) -> float:
        tubelets = (group.num_frames // group.tubelet_size) * (
            group.image_size // group.patch_size
        ) ** 2
        voxels = group.tubelet_size * group.patch_size**2 * group.channels
        return 2.0 * tubelets * voxels * group.width
