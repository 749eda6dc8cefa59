"""The image modality's schema: its config group, checks, token count and stem FLOPs (the
encoder: :mod:`mmtx.modalities.image`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import ml_collections

from mmtx.schemas.schema import ModalitySchema, Require


class ImageSchema(ModalitySchema):
    """Images of ``image_size`` square pixels (see :class:`mmtx.modalities.ImageSpec`)."""

    name = "image"
    raw_input = "image_features"
    example_key = "image"
    poolings = ("cls", "mean", "map")
    ranges: ClassVar[Mapping[str, str]] = {
        "image_size": "> 0",
        "patch_size": "> 0",
        "channels": "> 0",
        "std": "> 0",
        "resize_size": ">= 0",
    }
    attributes = ("shape", "colour", "size", "position")
    description = "images"
    value_range = "pixels are in [0, 1]"

    def default_config(self) -> ml_collections.ConfigDict:
        g = ml_collections.ConfigDict()
        g.image_size = 64  # Input height and width in pixels.
        g.patch_size = 8  # Square patch side; image_size must be divisible by it.
        g.channels = 3  # Input channels.
        g.resize = "shorter_side"  # shorter_side (then the centre crop) | squash (no crop).
        g.interpolation = "bilinear"  # Resize filter, PIL's (antialiased): bilinear | bicubic.
        g.resize_size = 0  # shorter_side: the side's length before the crop; 0 = image_size.
        # Where the centre crop starts an odd margin: round (torchvision's CenterCrop, as
        # open_clip) | floor (HF image processors).
        g.crop_offset = "round"
        g.stem = "patch"  # patch (linear, ViT) | conv (3x3 stride-2 convs, ViTc).
        g.width = 128
        g.depth = 2
        g.num_heads = 4
        g.mlp_dim = 256
        g.attention = "dense"
        g.pooling = "cls"  # cls | mean | map (attention pooling with a probe, SigLIP).
        g.position_embedding = "learned"
        g.mean = (0.5, 0.5, 0.5)  # Per-channel normalisation of [0, 1] pixels.
        g.std = (0.5, 0.5, 0.5)
        g.patch_bias = True  # Bias of the patch projection (stem patch).
        # Learned position table with rows for the class tokens too, added after they are
        # prepended (CLIP); False: rows for the patches only, added before.
        g.class_token_posemb = False
        g.activation = "gelu_tanh"  # MLP's: gelu_tanh | gelu (exact erf) | quick_gelu.
        g.norm_eps = 1e-6  # Epsilon of every LayerNorm in the tower (CLIP 1e-5).
        g.pre_norm = False  # A LayerNorm before the first block (CLIP's ln_pre).
        g.final_norm = True  # The LayerNorm after the last block, on every token.
        # Projection of the pooled output to model.embed_dim: dense | no_bias (kernel only) |
        # none (the pooled output itself; needs width == model.embed_dim).
        g.projection = "dense"
        return g

    def validate(self, group: ml_collections.ConfigDict, require: Require) -> None:
        require(group.stem in ("patch", "conv"), "model.image.stem", "patch | conv")
        require(
            group.stem == "patch" or group.patch_size & (group.patch_size - 1) == 0,
            "model.image.patch_size",
            f"stem='conv' needs a power of two, got {group.patch_size}",
        )
        require(
            group.image_size % group.patch_size == 0,
            "model.image.image_size",
            f"{group.image_size} is not divisible by patch_size {group.patch_size}",
        )
        require(
            group.patch_bias or group.stem == "patch",
            "model.image.patch_bias",
            "False drops the bias of the patch projection, which only stem='patch' has",
        )
        self.require_per_channel(group, require, ("mean", "std"))
        self.require_resize(group, require)

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        return (group.image_size // group.patch_size) ** 2

    def stem_flops(self, group: ml_collections.ConfigDict) -> float:
        side, channels = group.image_size, group.channels
        if group.stem == "patch":
            patches = (side // group.patch_size) ** 2
            return 2.0 * patches * group.patch_size**2 * channels * group.width
        layers = group.patch_size.bit_length() - 1
        flops, in_channels = 0.0, channels
        for i in range(layers):
            side = -(-side // 2)
            out_channels = max(group.width // 2 ** (layers - 1 - i), 8)
            flops += 2.0 * side * side * 9 * in_channels * out_channels
            in_channels = out_channels
        return flops + 2.0 * side * side * in_channels * group.width
